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
