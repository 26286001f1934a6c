"""Make semantic IDs unique: TIGER's extra position, or LC-Rec/LETTER's Sinkhorn re-assignment of the last level."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def group_ids(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group index per item and group sizes (items sharing the same code tuple form one group)."""
    _, inv, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    return inv.ravel(), counts


def collision_stats(codes: np.ndarray) -> dict:
    inv, counts = group_ids(codes)
    colliding = counts[inv] > 1
    return {"rate": float(colliding.mean()), "items_colliding": int(colliding.sum()),
            "largest_group": int(counts.max()), "distinct_ids": int(len(counts))}


def append_position(codes: np.ndarray) -> np.ndarray:
    """TIGER: an extra token 0, 1, 2, ... among items sharing an ID (in item order)."""
    inv, _ = group_ids(codes)
    pos = pd.Series(inv).groupby(inv).cumcount().to_numpy()
    return np.concatenate([codes, pos[:, None]], 1)


def _sinkhorn(cost: torch.Tensor, eps: float, iters: int = 50) -> torch.Tensor:
    """Log-domain Sinkhorn with uniform marginals; cost (n, N) -> transport plan (n, N)."""
    logk = -cost / eps
    n, m = cost.shape
    log_a, log_b = -np.log(n), -np.log(m)
    u = torch.zeros(n, dtype=cost.dtype)
    v = torch.zeros(m, dtype=cost.dtype)
    for _ in range(iters):
        u = log_a - torch.logsumexp(logk + v[None, :], 1)
        v = log_b - torch.logsumexp(logk + u[:, None], 0)
    return (logk + u[:, None] + v[None, :]).exp()


def sinkhorn_reassign(codes: np.ndarray, last_residual: np.ndarray, last_codebook: np.ndarray, *,
                      epsilon: float = 0.003, rounds: int = 20) -> tuple[np.ndarray, int]:
    """Re-assign the last level of colliding items with a balanced (Sinkhorn) assignment, as LC-Rec does.

    Distances are min-max normalised before ``exp(-d / epsilon)``. Returns (codes, rounds used).
    """
    codes = codes.copy()
    cb = torch.as_tensor(last_codebook, dtype=torch.float64)
    for rnd in range(1, rounds + 1):
        inv, counts = group_ids(codes)
        col = np.flatnonzero(counts[inv] > 1)
        if len(col) == 0:
            return codes, rnd - 1
        d = torch.cdist(torch.as_tensor(last_residual[col], dtype=torch.float64), cb) ** 2
        d = (d - d.min()) / (d.max() - d.min()).clamp(min=1e-12)
        plan = _sinkhorn(d, epsilon)
        codes[col, -1] = plan.argmax(1).numpy()
    return codes, rounds


def extend_ids(sids: np.ndarray, new_codes: np.ndarray) -> np.ndarray:
    """IDs (n_new, L + 1) for new items with base codes ``new_codes`` (n_new, L), given the catalog's
    appended IDs ``sids`` (n, L + 1): within a code prefix the suffix continues after the largest one
    used (by the catalog, then by earlier new items), so every ID stays unique."""
    L = new_codes.shape[1]
    if sids.shape[1] != L + 1:
        raise ValueError(f"catalog IDs have {sids.shape[1]} positions, new codes {L}: expected L + 1")
    both = np.vstack([sids[:, :L], new_codes])
    _, group = np.unique(both, axis=0, return_inverse=True)
    group = group.ravel()
    g_old, g_new = group[: len(sids)], group[len(sids):]
    start = np.zeros(group.max() + 1, dtype=np.int64)
    np.maximum.at(start, g_old, sids[:, L] + 1)
    order = np.argsort(g_new, kind="stable")  # rank of each new item among the new ones of its prefix
    sorted_g = g_new[order]
    first = np.searchsorted(sorted_g, sorted_g, side="left")
    rank = np.empty(len(g_new), dtype=np.int64)
    rank[order] = np.arange(len(g_new)) - first
    return np.hstack([new_codes, (start[g_new] + rank)[:, None]])
