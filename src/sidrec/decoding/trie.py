"""Prefix tries over fixed-length semantic IDs, as tensor lookups (no Python per beam).

Both kinds answer the two questions beam search asks, for a whole batch of prefixes at once:
``mask(j, prefix)`` -> (N, size_j) bool of the allowed codes at level j, and ``next(j, prefix, code)`` ->
the prefix id at level j+1 (or the item index at the last level, -1 where not allowed).

- ``Trie`` (dense): level j holds one row per distinct prefix of length j, ``allowed[j]`` (n_prefix_j,
  size_j) bool and ``child[j]`` (n_prefix_j, size_j) int. Fast, but the last level costs
  n_prefix x size x 9 bytes: ~2.3 GB at a million items of 3 codes of 256 + a collision level.
- ``SparseTrie``: level j keeps only the existing (prefix, code) edges, sorted by key prefix * size + code
  (CSR rows): memory proportional to the number of items; ``mask`` scatters each prefix's codes, ``next``
  is one ``searchsorted``. Same results as the dense trie (tested), on CPU and GPU.
``build_trie`` picks dense below ``dense_limit`` table entries, sparse above.
``allowed_next(prefix)`` answers single queries (HF ``prefix_allowed_tokens_fn``).
"""

from __future__ import annotations

import numpy as np
import torch


def _levels(codes: np.ndarray, level_sizes: list[int]):
    """Per level: (prefix id of each item, number of prefixes); prefixes numbered in sorted key order."""
    n, L = codes.shape
    prefix_id, n_prefix = np.zeros(n, dtype=np.int64), 1
    for j in range(L):
        key = prefix_id * level_sizes[j] + codes[:, j]
        yield j, prefix_id, n_prefix, key
        if j < L - 1:
            uniq, nxt = np.unique(key, return_inverse=True)
            prefix_id, n_prefix = nxt.ravel(), len(uniq)


class Trie:
    def __init__(self, codes: np.ndarray, level_sizes: list[int]):
        """codes (n_items, L): row i is item i + 1's ID; IDs must be unique."""
        n, L = codes.shape
        self.level_sizes = list(level_sizes)
        self.allowed, self.child = [], []
        for j, prefix_id, n_prefix, key in _levels(codes, self.level_sizes):
            allowed = np.zeros((n_prefix, level_sizes[j]), dtype=bool)
            allowed[prefix_id, codes[:, j]] = True
            child = np.full((n_prefix, level_sizes[j]), -1, dtype=np.int64)
            if j < L - 1:
                child[prefix_id, codes[:, j]] = np.unique(key, return_inverse=True)[1].ravel()
            else:
                child[prefix_id, codes[:, j]] = np.arange(1, n + 1)  # item indices
            self.allowed.append(torch.as_tensor(allowed))
            self.child.append(torch.as_tensor(child))

    @property
    def device(self) -> torch.device:
        return self.allowed[0].device

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + c.numel() * c.element_size() for a, c in zip(self.allowed, self.child))

    def mask(self, j: int, prefix: torch.Tensor) -> torch.Tensor:
        return self.allowed[j][prefix]

    def next(self, j: int, prefix: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return self.child[j][prefix, code]

    def to(self, device: torch.device | str) -> Trie:
        self.allowed = [a.to(device) for a in self.allowed]
        self.child = [c.to(device) for c in self.child]
        return self

    def allowed_next(self, prefix: list[int]) -> list[int]:
        """Allowed next codes after ``prefix`` (codes, not token ids)."""
        p = torch.zeros(1, dtype=torch.long, device=self.device)
        for j, c in enumerate(prefix):
            p = self.next(j, p, torch.full_like(p, c))
            if int(p) < 0:
                return []
        return torch.nonzero(self.mask(len(prefix), p)[0]).flatten().tolist()


class SparseTrie(Trie):
    """The same trie with memory proportional to the catalog: sorted edge keys per level (CSR rows)."""

    def __init__(self, codes: np.ndarray, level_sizes: list[int]):
        n, L = codes.shape
        self.level_sizes = list(level_sizes)
        self.keys, self.codes, self.child, self.indptr = [], [], [], []
        for j, prefix_id, n_prefix, key in _levels(codes, self.level_sizes):
            uniq, first = np.unique(key, return_index=True)  # one edge per (prefix, code), sorted by key
            if j < L - 1:
                child = np.arange(len(uniq), dtype=np.int64)  # prefix ids at j + 1 are numbered by sorted key
            else:
                child = first.astype(np.int64) + 1  # item index (keys are unique at the last level)
            self.keys.append(torch.as_tensor(uniq))
            self.codes.append(torch.as_tensor(uniq % level_sizes[j]))
            self.child.append(torch.as_tensor(child))
            self.indptr.append(torch.as_tensor(np.searchsorted(uniq // level_sizes[j], np.arange(n_prefix + 1))))

    @property
    def device(self) -> torch.device:
        return self.keys[0].device

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in (self.keys, self.codes, self.child, self.indptr) for t in ts)

    def mask(self, j: int, prefix: torch.Tensor) -> torch.Tensor:
        p = prefix.clamp(min=0)
        start, stop = self.indptr[j][p], self.indptr[j][p + 1]
        counts = torch.where(prefix >= 0, stop - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(prefix), device=prefix.device), counts)
        offs = torch.arange(int(counts.sum()), device=prefix.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        out = torch.zeros(len(prefix), self.level_sizes[j], dtype=torch.bool, device=prefix.device)
        out[rows, self.codes[j][start[rows] + offs]] = True
        return out

    def next(self, j: int, prefix: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        key = prefix * self.level_sizes[j] + code
        keys = self.keys[j]
        pos = torch.searchsorted(keys, key).clamp(max=len(keys) - 1)
        return torch.where((keys[pos] == key) & (prefix >= 0), self.child[j][pos], torch.full_like(key, -1))

    def to(self, device: torch.device | str) -> SparseTrie:
        for name in ("keys", "codes", "child", "indptr"):
            setattr(self, name, [t.to(device) for t in getattr(self, name)])
        return self


def build_trie(codes: np.ndarray, level_sizes: list[int], *, dense_limit: int = 50_000_000) -> Trie:
    """A dense ``Trie`` while its tables stay under ``dense_limit`` entries, else a ``SparseTrie``."""
    n_prefix = [1] + [len(np.unique(codes[:, :j + 1], axis=0)) for j in range(codes.shape[1] - 1)]
    entries = sum(p * s for p, s in zip(n_prefix, level_sizes))
    return (Trie if entries <= dense_limit else SparseTrie)(codes, level_sizes)
