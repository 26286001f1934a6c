"""A trained generator bundled with its dataset's vocabulary: recommend(history, k) with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.data.dataset import load_dataset
from sidrec.decoding.beam import t5_beam_search
from sidrec.errors import SidrecError


class Recommender:
    def __init__(self, model, trie, ds, device: str = "cpu"):
        self.model, self.trie, self.ds, self.device = model, trie, ds, device
        self.index = ds.item_index()
        self.titles = ds.items.get("title", ds.items["text"]).fillna("").astype(str).to_numpy()
        self.ids = ds.items["item_id"].astype(str).to_numpy()

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> Recommender:
        from sidrec.train.tiger import load_tiger

        model, trie, conf = load_tiger(run, device)
        return cls(model, trie, load_dataset(conf["dataset"]), device)

    def recommend(self, history: list[str], *, k: int = 10, beam: int = 20) -> list[dict]:
        if not history:
            raise SidrecError("empty history: give at least one --history ITEM")
        unknown = [h for h in history if h not in self.index.index]
        if unknown:
            raise SidrecError(f"unknown item id(s) {unknown[:5]} (not in dataset {self.ds.path})")
        if k > self.ds.n_items:
            raise SidrecError(f"k={k} is larger than the catalog ({self.ds.n_items} items)")
        if k < 1:
            raise SidrecError(f"k={k}: must be at least 1")
        beam = max(beam, k)
        L = self.model.cfg.max_history
        idx = self.index[history].to_numpy()[-L:]
        hist = np.zeros((1, L), dtype=np.int64)
        hist[0, L - len(idx):] = idx
        items, scores = t5_beam_search(self.model, torch.zeros(1, dtype=torch.long, device=self.device),
                                       torch.as_tensor(hist, device=self.device), self.trie, beam=beam, k=k)
        out = []
        for i, s in zip(items[0].tolist(), scores[0].tolist()):
            if i > 0:
                out.append({"item": self.ids[i - 1], "score": float(s), "title": self.titles[i - 1]})
        return out
