"""Trained models bundled with their catalog: recommend(history, k) with clear errors.

``Recommender`` serves a TIGER generator (trie-constrained beam search); ``VQRecRecommender`` serves a
VQ-Rec run and can take new items by their text alone (cold start: codes from the run's own text
encoder and OPQ, no retraining). ``load_recommender`` picks the right one from the run directory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.data.dataset import load_dataset
from sidrec.data.io import check_file, column, iter_records, read_table, require
from sidrec.decoding.beam import generate, merge_new_items, prefix_scores, trim_history
from sidrec.decoding.newitems import collision_suffix, grown, neighbour_scores, new_item_ids, unit_rows
from sidrec.embeddings.text import embed_new_texts
from sidrec.errors import SidrecError
from sidrec.tokenizers.opq import OPQTokenizer
from sidrec.tokenizers.registry import load_tokenizer
from sidrec.train.generator import load_generator  # noqa: F401  (also the serving API's name)
from sidrec.train.vqrec import load_vqrec
from sidrec.utils.artifacts import load_npy, read_json, read_parquet


@dataclass(frozen=True)
class CatalogState:
    """One immutable version of a served catalog; adding items builds a new one and swaps it in with a
    single assignment, so a request sees the old or the new catalog, never half of it."""

    ids: np.ndarray  # raw ids, row i = item index i + 1
    titles: np.ndarray
    index: dict  # raw id -> item index (a dict: a request's lookups cost microseconds, not a pandas index's ~0.5 ms)
    trie: object = None  # generators: the decoding trie of exactly these items
    new: frozenset = frozenset()  # raw ids added after training (cold start)
    vecs: object = None  # generators: unit text vectors of these items (row = index; the "neighbours" rule)


class _Catalog:
    """Raw ids, titles and request checks shared by the recommenders."""

    _lock: threading.Lock

    def _init_catalog(self, ds=None, *, items: pd.DataFrame | None = None, name: str = "", trie=None) -> None:
        """From a dataset, or from an items table (item_id, title/text) saved in a run."""
        self.ds = ds
        items = ds.items if items is None else items
        self.catalog_name = name or (str(ds.path) if ds is not None else "the run's catalog")
        ids = items["item_id"].astype(str).to_numpy()
        titles = items.get("title", items.get("text", pd.Series([""] * len(items)))).fillna("").astype(str).to_numpy()
        self.cat = CatalogState(ids, titles, dict(zip(ids.tolist(), range(1, len(ids) + 1))), trie)
        self._lock = threading.Lock()  # serialises writers (add_items); readers take ``self.cat`` once

    @property
    def ids(self) -> np.ndarray:
        return self.cat.ids

    @property
    def n_items(self) -> int:
        return len(self.cat.ids)

    def _history_indices(self, cat: CatalogState, history: list[str], k: int, length: int) -> np.ndarray:
        if not history:
            raise SidrecError("empty history: give at least one item")
        unknown = [h for h in history if h not in cat.index]
        if unknown:
            raise SidrecError(f"unknown item id(s) {unknown[:5]} (not in {self.catalog_name})")
        if k > len(cat.ids):
            raise SidrecError(f"k={k} is larger than the catalog ({len(cat.ids)} items)")
        if k < 1:
            raise SidrecError(f"k={k}: must be at least 1")
        idx = np.fromiter((cat.index[h] for h in history[-length:]), dtype=np.int64)
        hist = np.zeros((1, length), dtype=np.int64)
        hist[0, length - len(idx):] = idx
        return hist

    def check(self, history: list[str], k: int) -> None:
        """The request errors of ``recommend`` (unknown items, empty history, k out of range), without decoding."""
        self._history_indices(self.cat, history, k, 1)

    def batchable(self, **request) -> bool:
        """Whether a request can share one decode with others (``recommend_batch``); VQ-Rec: no."""
        return False

    @staticmethod
    def _rows(cat: CatalogState, items, scores) -> list[dict]:
        return [{"item": cat.ids[i - 1], "score": float(s), "title": cat.titles[i - 1], "new": cat.ids[i - 1] in cat.new}
                for i, s in zip(items, scores) if i > 0]

    def _check_new(self, cat: CatalogState, ids: list[str], texts: list[str]) -> list[str]:
        if len(ids) != len(texts):
            raise SidrecError(f"{len(ids)} new item ids but {len(texts)} texts")
        if not ids:
            raise SidrecError("no new items given")
        ids = [str(i) for i in ids]
        clash = [i for i in ids if i in cat.index]
        if clash or len(set(ids)) != len(ids):
            raise SidrecError(f"new item id(s) {(clash or ids)[:5]} already in the catalog or repeated")
        empty = [i for i, t in zip(ids, texts) if not str(t).strip()]
        if empty:
            raise SidrecError(f"new item {empty[0]!r}: empty text (cold-start items need text)")
        return ids

    @staticmethod
    def _extended(cat: CatalogState, ids: list[str], titles: list[str], trie=None, vecs=None) -> CatalogState:
        start = len(cat.ids) + 1
        return CatalogState(np.concatenate([cat.ids, np.array(ids, dtype=object)]),
                            np.concatenate([cat.titles, np.array(titles, dtype=object)]),
                            {**cat.index, **dict(zip(ids, range(start, start + len(ids))))},
                            trie if trie is not None else cat.trie, cat.new | frozenset(ids), vecs)


NEW_RULES = ("blend", "neighbours", "prefix", "dense")  # how a generator scores items added after training (``recommend``)


class Recommender(_Catalog):
    """Serves any generator run (TIGER today) through the generator contract; takes new items by their text
    (cold start: the run's own text encoder and tokenizer give them IDs, the trie grows, no retraining)."""

    def __init__(self, model, trie, ds=None, device: str = "cpu", *, items: pd.DataFrame | None = None,
                 name: str = "", run: str | Path | None = None):
        self.model, self.device, self.run = model, device, Path(run) if run is not None else None

        self.kind = model.kind
        self._tokenizer = None
        self._prefix_levels = model.id_length - (1 if collision_suffix(self.run) else 0)  # what new items are scored on
        self._init_catalog(ds, items=items, name=name, trie=trie)

    @property
    def trie(self):
        return self.cat.trie

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> Recommender:
        """A TIGER run is self-contained (RUN/tokens, RUN/items.parquet): the tokens and dataset directories it
        was trained from may have moved. Runs of sidrec 0.1 fall back to the recorded dataset path."""
        model, trie, conf = load_generator(run, device)
        cat = Path(run) / "items.parquet"
        if cat.is_file():
            return cls(model, trie, None, device, items=read_parquet(cat), name=f"run {run}", run=run)
        return cls(model, trie, load_dataset(conf["dataset"]), device, run=run)

    def batchable(self, *, sample_temperature: float = 0.0, epsilon: float = 0.0, **_) -> bool:
        """Whether a request can share a beam search with others (``recommend_batch``)."""
        return sample_temperature == 0 and (epsilon == 0 or not self.cat.new)

    @torch.no_grad()
    def recommend_batch(self, histories: list[list[str]], ks: list[int], beam: int = 0) -> list[list[dict]]:
        """Several users in one trie-constrained beam search of width max(beam or 20, max k); each answer is
        what ``recommend`` gives that user alone (the top-k of a beam search is a prefix of its top-k')."""
        cat = self.cat
        H = self.model.cfg.max_history
        hist = np.vstack([self._history_indices(cat, h, k, H) for h, k in zip(histories, ks)])
        kmax = max(ks)
        order = np.argsort((hist > 0).sum(1), kind="stable")  # by length: each chunk cut to its longest
        # a CPU decodes chunks of similar length (padding costs compute there); a GPU decodes the whole batch in one
        # beam search, since its step is bound by kernel launches (four chunks cost about four times one)
        step = len(ks) if torch.device(self.device).type == "cuda" else max(16, -(-len(ks) // 4))
        items, scores = [None] * len(ks), [None] * len(ks)
        for s in range(0, len(ks), step):
            rows = order[s:s + step]
            h = trim_history(torch.as_tensor(hist[rows], device=self.device))
            it, sc = generate(self.model, torch.zeros(len(rows), dtype=torch.long, device=self.device), h, cat.trie,
                              beam=max(beam or 20, kmax), k=kmax)
            for r, a, b in zip(rows.tolist(), it.tolist(), sc.tolist()):
                items[r], scores[r] = a, b
        return [self._rows(cat, items[i][:k], scores[i][:k]) for i, k in enumerate(ks)]

    @torch.no_grad()
    def recommend(self, history: list[str], *, k: int = 10, beam: int = 0, sample_temperature: float = 0.0,
                  seed: int = 0, epsilon: float = 0.0, new_rule: str = "blend", tau: float = 0.1,
                  history_weight: float = 0.5, new_slots: str = "compete") -> list[dict]:
        """Top-k by trie-constrained beam search (beam 0 = max(k, 20)), or, with ``sample_temperature`` T > 0,
        k distinct items sampled without replacement at temperature T (seeded; diversity on a dial).

        ``epsilon`` > 0 (TIGER's cold start): up to max(1, floor(epsilon * k)) of the k slots may go to items
        added after training; they enter where their score beats the decoded items'. ``new_rule`` scores them:
        "neighbours" passes each decoded item's probability to the new items near it in the run's text-embedding
        space (kernel width ``tau`` in cosine; ``decoding.newitems.neighbour_scores``), "blend" (default) lets the
        history's items pass a share ``history_weight`` of it too (the best rule on Beauty, Yelp and Scientific at
        0.5; 1 would leave only the history),
        "prefix" takes the probability of their semantic prefix (the ID without its collision suffix, which
        the model never saw for them; TIGER's rule), "dense" (a run with a dense head) adds the head's score of
        their text to that, as its decoded items are ranked. ``new_slots="reserve"``: the new items always take their
        slots, after the best decoded items (the cold-start table's better mode: a kernel spreads a decoded
        item's probability over many new items, so they rarely beat the decoded ones). With 0 new items
        compete through the trie like any other."""
        if not 0.0 <= epsilon <= 1.0:
            raise SidrecError(f"epsilon {epsilon}: must lie in [0, 1]")
        if new_rule not in NEW_RULES:
            raise SidrecError(f"new-item rule {new_rule!r}: choose from {', '.join(NEW_RULES)}")
        if not 0.0 <= history_weight < 1.0:
            raise SidrecError(f"history weight {history_weight}: must lie in [0, 1)")
        if new_slots not in ("compete", "reserve"):
            raise SidrecError(f"new-item slots {new_slots!r}: choose compete or reserve")
        cat = self.cat  # one consistent catalog for the whole request
        hist = trim_history(torch.as_tensor(self._history_indices(cat, history, k, self.model.cfg.max_history),
                                            device=self.device))
        users = torch.zeros(1, dtype=torch.long, device=self.device)
        cold = epsilon > 0 and bool(cat.new)
        width = max(beam or 20, k)
        items, scores = generate(self.model, users, hist, cat.trie, beam=width, k=width if cold else k,
                                 sample_temperature=sample_temperature, seed=seed)
        if cold:
            new = torch.as_tensor([cat.index[i] for i in sorted(cat.new)], dtype=torch.long, device=self.device)
            if new_rule == "prefix":
                ns = prefix_scores(self.model, users, hist, new, self._prefix_levels)
            elif new_rule == "dense":
                if not getattr(self.model, "reranks", False):
                    raise SidrecError(f"{self.run}: new-item rule dense needs a TIGER run with a dense head "
                                      f"(dense_weight > 0, dense_fusion > 0)")
                ns = self.model.fused_scores(users, hist, new,
                                             prefix_scores(self.model, users, hist, new, self._prefix_levels))
            else:
                if cat.vecs is None:
                    raise SidrecError(f"{self.run}: this run keeps no item text vectors (RUN/embeddings/item_emb.npy, "
                                      "written since sidrec 0.4); use the prefix rule for its new items")
                ns = neighbour_scores(items, scores, cat.vecs, cat.vecs[new], tau=tau, hist=hist,
                                      history_weight=history_weight if new_rule == "blend" else 0.0)
            items, scores = merge_new_items(items[:, :k], scores[:, :k], new, ns, epsilon=epsilon, slots=new_slots)
        return self._rows(cat, items[0].tolist(), scores[0].tolist())

    def add_items(self, ids: list[str], texts: list[str], titles: list[str] | None = None) -> None:
        """Give new items IDs from their text and make them recommendable at once; all or nothing."""
        with self._lock:
            cat = self.cat
            ids = self._check_new(cat, ids, texts)
            if self._tokenizer is None and self.run is not None:
                self._tokenizer = load_tokenizer(self.run / "tokens")
            tok = self._tokenizer
            emb = embed_new_texts(self.run / "embeddings", list(texts)) if self.run is not None else None
            base, sids = new_item_ids(self.run, tok, list(texts), self.model.vocab.level_sizes, ids, emb=emb)
            all_sids, trie, item_tok = grown(self.model, tok, base, sids, cat.trie.level_sizes, self.device)
            vecs = self._catalog_vecs(cat)
            if vecs is not None:
                vecs = torch.cat([vecs, unit_rows(emb).to(self.device)])
            # commit: the token table only grows (old requests never index the new rows), then one swap
            self.model.item_tok = item_tok
            if hasattr(self.model, "add_item_texts") and emb is not None:  # a dense head's vectors grow too
                self.model.add_item_texts(emb)
            tok.sids_, tok.codes_ = all_sids, np.vstack([tok.codes_, base])
            self.cat = self._extended(cat, ids, list(titles or texts), trie, vecs)

    def _catalog_vecs(self, cat: CatalogState):
        """Unit text vectors of ``cat`` (row = item index), the run's RUN/embeddings/item_emb.npy for the items it
        was trained on; None for a run without them."""
        if cat.vecs is not None or self.run is None or cat.new:
            return cat.vecs
        p = self.run / "embeddings" / "item_emb.npy"
        if not p.is_file():
            return None

        v = load_npy(p)
        if len(v) != len(cat.ids) + 1:
            raise SidrecError(f"{p}: {len(v) - 1} item vectors for a catalog of {len(cat.ids)} items")
        return unit_rows(v).to(self.device)


class VQRecRecommender(_Catalog):
    kind = "vqrec"

    def __init__(self, model, meta: dict, ds, run: Path, device: str = "cpu"):
        self.model, self.meta, self.run, self.device = model, meta, Path(run), device
        self._init_catalog(ds)
        self._reps: torch.Tensor | None = None  # item representations, computed once per catalog

    @classmethod
    def load(cls, run: str | Path, device: str = "cpu") -> VQRecRecommender:
        model, meta = load_vqrec(run, device)
        if meta.get("stage") != "finetune" or len(meta["domains"]) != 1:
            raise SidrecError(f"{run}: a pre-trained VQ-Rec run has no single catalog to recommend from; "
                              "fine-tune it on a dataset first (sidrec train vqrec DIR --init RUN --out RUN2)")
        return cls(model, meta, load_dataset(meta["domains"][0]["dataset"]), Path(run), device)

    def add_items(self, ids: list[str], texts: list[str], titles: list[str] | None = None) -> None:
        """Make items known only by their text recommendable (cold start), without retraining."""
        with self._lock:
            cat = self.cat
            ids = self._check_new(cat, ids, texts)
            if not (self.run / "opq" / "opq.faiss").is_file():
                raise SidrecError(f"{self.run}: this run's codes did not come from OPQ (random or given tokens), "
                                  "so new items' text cannot be encoded")
            emb_dir = self.meta["domains"][0].get("embeddings")
            if not emb_dir:
                raise SidrecError(f"{self.run}: no text-embedding directory recorded; cannot embed new items")
            codes = OPQTokenizer.load(self.run / "opq").encode(embed_new_texts(emb_dir, texts))
            self.model.set_codes(np.concatenate([self.model.codes.cpu().numpy(), codes]))
            self.model.to(self.device)
            self._reps = None
            self.cat = self._extended(cat, ids, list(titles or texts))

    @property
    def new_items(self) -> frozenset:
        return self.cat.new

    def recommend(self, history: list[str], *, k: int = 10, beam: int = 0, exclude_history: bool = False,
                  **_) -> list[dict]:
        """Top-k of a full scoring of the catalog (``beam`` is accepted for a common signature and unused)."""
        cat = self.cat
        hist = self._history_indices(cat, history, k, self.model.cfg.max_history)
        with torch.no_grad():
            reps = self._reps
            if reps is None or len(reps) != len(cat.ids) + 1:
                reps = self._reps = self.model.item_reps()
            state = self.model.forward(torch.as_tensor(hist, device=self.device))[:, -1]
            scores = self.model.logits(state, reps)[0].float()[: len(cat.ids) + 1]
        scores[0] = -torch.inf
        if exclude_history:
            scores[torch.as_tensor(hist[hist > 0], device=self.device)] = -torch.inf
        top = torch.topk(scores, k)
        return self._rows(cat, top.indices.tolist(), top.values.tolist())


def load_recommender(run: str | Path, device: str = "cpu") -> Recommender | VQRecRecommender:
    conf = Path(run) / "config.json"
    if not conf.is_file():
        raise SidrecError(f"{run}: not a run directory (missing config.json)")
    kind = read_json(conf).get("kind")
    if kind in ("vqrec", "vqrec-pretrain"):
        return VQRecRecommender.load(run, device)
    return Recommender.load(run, device)  # any generator kind; other kinds are one clear error there


def read_new_items(path: str | Path) -> tuple[list[str], list[str], list[str]]:
    """New items for cold start from a csv (columns item_id, text[, title]) or jsonl file: (ids, texts, titles)."""
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
