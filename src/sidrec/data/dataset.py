"""A prepared dataset directory loaded into ragged numpy arrays, with vectorised split helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sidrec.errors import SidrecError
from sidrec.utils.artifacts import read_json, read_parquet, verify

SPLITS = ("valid", "test")


@dataclass
class Dataset:
    """Users' chronological sequences as one flat array plus offsets (user u is row u-1)."""

    path: Path
    items: pd.DataFrame  # item_idx, item_id, text, ...
    users: pd.DataFrame  # user_idx, user_id
    seq: np.ndarray  # (n_interactions,) item_idx, grouped by user, chronological
    offsets: np.ndarray  # (n_users + 1,)
    stats: dict

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def fingerprint(self) -> str:
        return self.stats.get("fingerprint", "")

    def histories(self, ends: np.ndarray, length: int, starts: np.ndarray | None = None) -> np.ndarray:
        """For each row, the ``length`` items before ``ends[row]`` (exclusive), left-padded with 0."""
        starts = self.offsets[:-1] if starts is None else starts
        idx = ends[:, None] - length + np.arange(length)[None, :]  # (U, L)
        valid = idx >= starts[:, None]
        return np.where(valid, self.seq[np.clip(idx, 0, None)], 0)

    def eval_inputs(self, split: str, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user_idx, history (U, length), target) for 'valid' or 'test' under leave-one-out."""
        if split not in SPLITS:
            raise SidrecError(f"unknown split {split!r}; choose valid or test")
        back = 2 if split == "valid" else 1
        ends = self.offsets[1:] - back
        return np.arange(1, self.n_users + 1), self.histories(ends, length), self.seq[ends]

    def train_sequences(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Each user's training part (all but the last two), last ``length + 1`` items:
        inputs (U, length) and next-item targets (U, length), 0 = padding."""
        ends = self.offsets[1:] - 2
        window = self.histories(ends, length + 1)
        return window[:, :-1], window[:, 1:]

    def train_prefix_samples(self, length: int, *, longest_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Every prefix of every training sequence: histories (N, length) and next items (N,), user-major;
        ``longest_only``: each user's longest one alone (a loss at every position sees the shorter ones)."""
        starts = self.offsets[:-1]
        ends = self.offsets[1:] - 2  # exclusive end of the training part
        counts = np.clip(ends - starts - 1, 0, None)  # targets at positions start+1 .. end-1
        if longest_only:
            user_rows = np.flatnonzero(counts)
            pos = ends[user_rows] - 1
        else:
            user_rows = np.repeat(np.arange(self.n_users), counts)
            first = np.cumsum(counts) - counts
            pos = starts[user_rows] + 1 + (np.arange(counts.sum()) - np.repeat(first, counts))
        hist = self.histories(pos, length, starts[user_rows])
        return hist, self.seq[pos]

    def history_sets(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(row, item) pairs of everything before the split's target, for optional masking."""
        back = 2 if split == "valid" else 1
        lens = np.diff(self.offsets) - back
        rows = np.repeat(np.arange(self.n_users), lens)
        first = np.cumsum(lens) - lens
        pos = self.offsets[:-1][rows] + (np.arange(lens.sum()) - np.repeat(first, lens))
        return rows, self.seq[pos]

    def item_index(self) -> pd.Series:
        """raw item id (str) -> item_idx."""
        return pd.Series(self.items["item_idx"].to_numpy(), index=self.items["item_id"].astype(str))


def load_dataset(path: str | Path) -> Dataset:
    p = Path(path)
    for f in ("interactions.parquet", "items.parquet", "users.parquet", "stats.json"):
        if not (p / f).is_file():
            raise SidrecError(f"{p}: not a prepared dataset (missing {f}); run `sidrec data prepare` first")
    verify(p)
    inter = read_parquet(p / "interactions.parquet", columns=["user_idx", "item_idx", "position"])
    inter = inter.sort_values(["user_idx", "position"], kind="stable")
    counts = np.bincount(inter["user_idx"].to_numpy(), minlength=1)[1:]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    items = read_parquet(p / "items.parquet")
    users = read_parquet(p / "users.parquet")
    stats = read_json(p / "stats.json")
    return Dataset(p, items, users, inter["item_idx"].to_numpy(np.int64), offsets, stats)
