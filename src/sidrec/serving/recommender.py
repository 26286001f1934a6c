"""Trained models bundled with their catalog: recommend(history, k) with clear errors.

``Recommender`` serves a TIGER generator (trie-constrained beam search); ``VQRecRecommender`` serves a
VQ-Rec run and can take new items by their text alone (cold start: codes from the run's own text
encoder and OPQ, no retraining). ``load_recommender`` picks the right one from the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.data.dataset import load_dataset
from sidrec.errors import SidrecError


class _Catalog:
    """Raw ids, titles and request checks shared by the recommenders."""

    def _init_catalog(self, ds=None, *, items: pd.DataFrame | None = None, name: str = "") -> None:
        """From a dataset, or from an items table (item_id, title/text) saved in a run."""
        self.ds = ds
        items = ds.items if items is None else items
        self.catalog_name = name or (str(ds.path) if ds is not None else "the run's catalog")
        self.ids = items["item_id"].astype(str).to_numpy()
        self.titles = items.get("title", items.get("text", pd.Series([""] * len(items)))).fillna("").astype(str).to_numpy()
        self.index = pd.Series(np.arange(1, len(self.ids) + 1), index=self.ids)

    @property
    def n_items(self) -> int:
        return len(self.ids)

    def _history_indices(self, history: list[str], k: int, length: int) -> np.ndarray:
        if not history:
            raise SidrecError("empty history: give at least one --history ITEM")
        unknown = [h for h in history if h not in self.index.index]
        if unknown:
            raise SidrecError(f"unknown item id(s) {unknown[:5]} (not in {self.catalog_name})")
        if k > self.n_items:
            raise SidrecError(f"k={k} is larger than the catalog ({self.n_items} items)")
        if k < 1:
            raise SidrecError(f"k={k}: must be at least 1")
        idx = self.index[history].to_numpy()[-length:]
        hist = np.zeros((1, length), dtype=np.int64)
        hist[0, length - len(idx):] = idx
        return hist

    def _rows(self, items, scores) -> list[dict]:
        return [{"item": self.ids[i - 1], "score": float(s), "title": self.titles[i - 1]}
                for i, s in zip(items, scores) if i > 0]


def load_generator(run: str | Path, device: str = "cpu"):
    """(model, trie, config) of any generator run, by the run kind in RUN/config.json (models/generator.py)."""
    import importlib

    from sidrec.models.generator import GENERATORS

    conf = Path(run) / "config.json"
    if not conf.is_file():
        raise SidrecError(f"{run}: not a run directory (missing config.json)")
    kind = json.loads(conf.read_text()).get("kind")
    if kind not in GENERATORS:
        raise SidrecError(f"{run}: is a {kind} run, not a generator run (generators: {', '.join(GENERATORS)})")
    module, fn = GENERATORS[kind].split(":")
    return getattr(importlib.import_module(module), fn)(run, device)


class Recommender(_Catalog):
    """Serves any generator run (TIGER today) through the generator contract."""

    def __init__(self, model, trie, ds=None, device: str = "cpu", *, items: pd.DataFrame | None = None,
                 name: str = ""):
        self.model, self.trie, self.device = model, trie, device
        self.kind = model.kind
        self._init_catalog(ds, items=items, name=name)

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> Recommender:
        """A TIGER run is self-contained (RUN/tokens, RUN/items.parquet): the tokens and dataset directories it
        was trained from may have moved. Runs of sidrec 0.1 fall back to the recorded dataset path."""
        model, trie, conf = load_generator(run, device)
        cat = Path(run) / "items.parquet"
        if cat.is_file():
            return cls(model, trie, None, device, items=pd.read_parquet(cat), name=f"run {run}")
        return cls(model, trie, load_dataset(conf["dataset"]), device)

    def recommend(self, history: list[str], *, k: int = 10, beam: int = 0) -> list[dict]:
        """Top-k by trie-constrained beam search (beam 0 = max(k, 20))."""
        from sidrec.decoding.beam import generate

        hist = self._history_indices(history, k, self.model.cfg.max_history)
        items, scores = generate(self.model, torch.zeros(1, dtype=torch.long, device=self.device),
                                       torch.as_tensor(hist, device=self.device), self.trie,
                                       beam=max(beam or 20, k), k=k)
        return self._rows(items[0].tolist(), scores[0].tolist())


class VQRecRecommender(_Catalog):
    kind = "vqrec"

    def __init__(self, model, meta: dict, ds, run: Path, device: str = "cpu"):
        self.model, self.meta, self.run, self.device = model, meta, Path(run), device
        self._init_catalog(ds)
        self.new_items: set[str] = set()
        self._reps: torch.Tensor | None = None  # item representations, computed once per catalog

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> VQRecRecommender:
        from sidrec.train.vqrec import load_vqrec

        model, meta = load_vqrec(run, device)
        if meta.get("stage") != "finetune" or len(meta["domains"]) != 1:
            raise SidrecError(f"{run}: a pre-trained VQ-Rec run has no single catalog to recommend from; "
                              "fine-tune it on a dataset first (sidrec train vqrec DIR --init RUN --out RUN2)")
        return cls(model, meta, load_dataset(meta["domains"][0]["dataset"]), Path(run), device)

    def add_items(self, ids: list[str], texts: list[str], titles: list[str] | None = None) -> None:
        """Make items known only by their text recommendable (cold start), without retraining."""
        from sidrec.embeddings.text import embed_new_texts
        from sidrec.tokenizers.opq import OPQTokenizer

        if len(ids) != len(texts):
            raise SidrecError(f"{len(ids)} new item ids but {len(texts)} texts")
        ids = [str(i) for i in ids]
        clash = [i for i in ids if i in self.index.index]
        if clash or len(set(ids)) != len(ids):
            raise SidrecError(f"new item id(s) {(clash or ids)[:5]} already in the catalog or repeated")
        if not (self.run / "opq" / "opq.faiss").is_file():
            raise SidrecError(f"{self.run}: this run's codes did not come from OPQ (random or given tokens), "
                              "so new items' text cannot be encoded")
        emb_dir = self.meta["domains"][0].get("embeddings")
        if not emb_dir:
            raise SidrecError(f"{self.run}: no text-embedding directory recorded; cannot embed new items")
        codes = OPQTokenizer.load(self.run / "opq").encode(embed_new_texts(emb_dir, texts))
        self.model.set_codes(np.concatenate([self.model.codes.cpu().numpy(), codes]))
        self.model.to(self.device)
        start = self.n_items + 1
        self.ids = np.concatenate([self.ids, np.array(ids, dtype=object)])
        self.titles = np.concatenate([self.titles, np.array(titles or texts, dtype=object)])
        self.index = pd.concat([self.index, pd.Series(np.arange(start, start + len(ids)), index=ids)])
        self.new_items.update(ids)
        self._reps = None

    def recommend(self, history: list[str], *, k: int = 10, beam: int = 0, exclude_history: bool = False) -> list[dict]:
        """Top-k of a full scoring of the catalog (``beam`` is accepted for a common signature and unused)."""
        hist = self._history_indices(history, k, self.model.cfg.max_history)
        with torch.no_grad():
            if self._reps is None:
                self._reps = self.model.item_reps()
            state = self.model.forward(torch.as_tensor(hist, device=self.device))[:, -1]
            scores = self.model.logits(state, self._reps)[0].float()
        scores[0] = -torch.inf
        if exclude_history:
            scores[torch.as_tensor(hist[hist > 0], device=self.device)] = -torch.inf
        top = torch.topk(scores, k)
        rows = self._rows(top.indices.tolist(), top.values.tolist())
        for r in rows:
            r["new"] = r["item"] in self.new_items
        return rows


def load_recommender(run: str | Path, device: str = "cpu") -> Recommender | VQRecRecommender:
    conf = Path(run) / "config.json"
    if not conf.is_file():
        raise SidrecError(f"{run}: not a run directory (missing config.json)")
    kind = json.loads(conf.read_text()).get("kind")
    if kind in ("vqrec", "vqrec-pretrain"):
        return VQRecRecommender.load(run, device)
    return Recommender.load(run, device)  # any generator kind; other kinds are one clear error there


def read_new_items(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """New items for cold start from a csv (columns item_id, text[, title]) or jsonl file: (ids, texts, titles)."""
    from sidrec.data.io import check_file, column, iter_records, read_table, require

    p = check_file(path)
    if p.name.endswith((".jsonl", ".jsonl.gz", ".json")):
        rows = []
        for n, rec in iter_records(p):
            require(rec, ("item_id", "text"), p, n)
            rows.append(rec)
        df = pd.DataFrame(rows)
    else:
        df = read_table(p).fillna("")
        for col in ("item_id", "text"):
            column(df, col, p)
    if df.empty:
        raise SidrecError(f"{p}: no new items in the file")
    empty = df.index[df["text"].astype(str).str.strip() == ""]
    if len(empty):
        raise SidrecError(f"{p}: record {int(empty[0]) + 1}: empty text (cold-start items need text)")
    titles = df["title"].astype(str).tolist() if "title" in df.columns else df["text"].astype(str).tolist()
    return df["item_id"].astype(str).tolist(), df["text"].astype(str).tolist(), titles
