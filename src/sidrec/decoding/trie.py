"""Prefix trie over fixed-length semantic IDs as dense per-level tables (tensor lookups, no Python per beam).

Level j holds one row per distinct prefix of length j: ``allowed[j]`` (n_prefix_j, size_j) bool,
``child[j]`` (n_prefix_j, size_j) int: the prefix id at level j+1 (or the item index at the last level,
-1 where not allowed). ``allowed_next(prefix)`` answers single queries (HF ``prefix_allowed_tokens_fn``).
"""

from __future__ import annotations

import numpy as np
import torch


class Trie:
    def __init__(self, codes: np.ndarray, level_sizes: list[int]):
        """codes (n_items, L): row i is item i + 1's ID; IDs must be unique."""
        n, L = codes.shape
        self.level_sizes = list(level_sizes)
        self.allowed, self.child = [], []
        prefix_id = np.zeros(n, dtype=np.int64)  # every item starts at the root (prefix id 0)
        n_prefix = 1
        for j in range(L):
            key = prefix_id * level_sizes[j] + codes[:, j]
            allowed = np.zeros((n_prefix, level_sizes[j]), dtype=bool)
            allowed[prefix_id, codes[:, j]] = True
            child = np.full((n_prefix, level_sizes[j]), -1, dtype=np.int64)
            if j < L - 1:
                uniq, nxt = np.unique(key, return_inverse=True)
                child[prefix_id, codes[:, j]] = nxt.ravel()
                prefix_id, n_prefix = nxt.ravel(), len(uniq)
            else:
                child[prefix_id, codes[:, j]] = np.arange(1, n + 1)  # item indices
            self.allowed.append(torch.as_tensor(allowed))
            self.child.append(torch.as_tensor(child))

    def to(self, device: torch.device | str) -> Trie:
        self.allowed = [a.to(device) for a in self.allowed]
        self.child = [c.to(device) for c in self.child]
        return self

    def allowed_next(self, prefix: list[int]) -> list[int]:
        """Allowed next codes after ``prefix`` (codes, not token ids)."""
        p = 0
        for j, c in enumerate(prefix):
            p = int(self.child[j][p, c])
            if p < 0:
                return []
        return torch.nonzero(self.allowed[len(prefix)][p]).flatten().tolist()
