"""LETTER's two regularisers (Wang et al., CIKM 2024), computed as the official code does, vectorised; the RQ-VAE
fit adds them when their weights are set (``cf_weight``, ``div_weight``).

- Collaborative: ``cross_entropy(z_q @ H_batch.T, arange(B))`` aligns the summed straight-through
  quantized vector with the frozen SASRec embedding of the same item (in-batch negatives).
- Diversity, per level: constrained k-means groups the codebook into K clusters of bounded size;
  for each item's chosen code, logits ``e_c @ codebook.T`` with its own code masked out and a random
  other code of the same cluster as target. Only the codebook receives this gradient.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def cf_loss(z_q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """z_q (B, d) straight-through quantized vectors, h (B, d) CF embeddings of the same items."""
    logits = z_q @ h.T  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(z_q), device=z_q.device))


class CodebookClusters:
    """Balanced clusters of one codebook, with vectorised sampling of a same-cluster positive."""

    def __init__(self, *, n_clusters: int = 10, seed: int = 0, n_init: int = 1):
        self.n_clusters, self.seed, self.n_init = n_clusters, seed, n_init

    def update(self, codebook: torch.Tensor) -> None:
        from k_means_constrained import KMeansConstrained

        n = codebook.shape[0]
        k = min(self.n_clusters, n // 2)
        x = np.ascontiguousarray(codebook.detach().float().cpu().numpy(), dtype=np.float64)  # writable copy
        km = KMeansConstrained(n_clusters=k, size_min=n // k, size_max=-(-n // k), random_state=self.seed,
                               n_init=self.n_init, n_jobs=1)
        labels = km.fit_predict(x)
        order = np.argsort(labels, kind="stable")
        sizes = np.bincount(labels, minlength=k)
        start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        pos = np.empty(n, dtype=np.int64)
        pos[order] = np.arange(n) - np.repeat(start, sizes)
        members = np.zeros((k, sizes.max()), dtype=np.int64)
        members[labels[order], pos[order]] = order
        dev = codebook.device
        self.labels = torch.as_tensor(labels, device=dev)
        self.sizes = torch.as_tensor(sizes, device=dev)
        self.pos = torch.as_tensor(pos, device=dev)
        self.members = torch.as_tensor(members, device=dev)

    def positives(self, codes: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A uniformly random *other* member of each code's cluster (B,)."""
        k = self.labels[codes]
        u = torch.rand(codes.shape, generator=generator, device="cpu").to(codes.device)
        r = (u * (self.sizes[k] - 1)).long()
        r = r + (r >= self.pos[codes]).long()  # skip the code itself
        return self.members[k, r]


def diversity_loss(codebook: torch.Tensor, codes: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """codebook (N, d), chosen codes (B,), positives (B,): CE over all other codes of the codebook."""
    e = codebook[codes]  # (B, d)
    logits = e @ codebook.T  # (B, N)
    logits = logits.masked_fill(F.one_hot(codes, codebook.shape[0]).bool(), float("-inf"))
    return F.cross_entropy(logits, positives)
