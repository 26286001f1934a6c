"""Full-ranking metrics with one target per user: Recall@K (= hit rate), NDCG@K, MRR@K.

Pure functions on arrays/tensors; no configs, datasets or models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEFAULT_KS = (5, 10, 20, 50)


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``ranks``: 0-based rank of each user's target (``>= n`` or ``-1`` = not retrieved).

    NDCG with binary relevance and a single target is ``1 / log2(rank + 2)`` inside the top K.
    """
    r = torch.as_tensor(ranks, dtype=torch.float64)
    r = torch.where(r < 0, torch.full_like(r, float("inf")), r)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"recall@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r.clamp(max=1e9) + 2), 0.0).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / (r.clamp(max=1e9) + 1), 0.0).mean().item()
    return out


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Rank of each target in its score row, ties broken by item index (stable descending sort).

    ``scores`` (B, n) with excluded items at -inf; ``targets`` (B,). A target scored -inf is ranked last.
    """
    t = scores.gather(1, targets[:, None])  # (B, 1)
    idx = torch.arange(scores.shape[1], device=scores.device)[None, :]
    ahead = (scores > t) | ((scores == t) & (idx < targets[:, None]))
    rank = ahead.sum(1)
    return torch.where(torch.isneginf(t[:, 0]), torch.full_like(rank, scores.shape[1]), rank)


def ranks_from_lists(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based position of each target in its ranked list (B, K) (-1 padded); -1 if absent."""
    hit = ranked == targets[:, None]
    return np.where(hit.any(1), hit.argmax(1), -1)


def category_entropy(lists: np.ndarray, categories: np.ndarray, k: int, *, reduce: bool = True):
    """Entropy@K (bits) of the item categories in each top-K list (TIGER's diversity measure).

    ``lists`` (U, >=K) item indices (<= 0 = no item), ``categories`` (n_items + 1,) an integer category per
    item index (< 0 = unknown, ignored). Per user: H = -sum_c p_c log2 p_c over the categories of the valid
    items of the top K; the mean over users (or the per-user array with ``reduce=False``)."""
    top = np.asarray(lists)[:, :k]
    cats = np.asarray(categories)
    c = np.where(top > 0, cats[np.clip(top, 0, None)], -1)
    n_cat = int(max(cats.max(), 0)) + 1
    rows = np.broadcast_to(np.arange(len(top))[:, None], c.shape)
    ok = c >= 0
    counts = np.zeros((len(top), n_cat))
    np.add.at(counts, (rows[ok], c[ok]), 1.0)
    total = counts.sum(1, keepdims=True)
    p = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)
    h = -(p * np.log2(np.where(p > 0, p, 1.0))).sum(1)
    return float(h.mean()) if reduce else h


def item_categories(ds, depth: int) -> np.ndarray:
    """(n_items + 1,) integer category per item index of a prepared dataset (-1: padding row, unknown).

    The items table's ``categories`` ("Beauty, Makeup, Nails, ..." or comma-separated without spaces, as Amazon
    and Yelp give them) cut to its first ``depth`` levels; without that column, the first word of the title."""
    items = ds.items
    if "categories" in items.columns:
        label = items["categories"].fillna("").astype(str).map(
            lambda c: ", ".join(x.strip() for x in c.split(",")[:depth]))
    else:
        label = items["title"].fillna("").astype(str).str.split().str[0].fillna("")
    codes, _ = label.factorize()
    codes = np.where(label.to_numpy() == "", -1, codes)
    return np.concatenate([[-1], codes]).astype(np.int64)
