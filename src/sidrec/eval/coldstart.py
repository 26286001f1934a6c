"""TIGER's cold-start protocol (Rajput et al. 2023, section 4.2), for any model that can add items by their text.

The protocol is here; the model comes in as a :class:`ColdStartModel` (how to train it on the seen items, how to
score new ones), built by its spec (``sidrec.train.coldstart``: every generator through the generator contract,
VQ-Rec through its OPQ codes), so this module knows no model by name.

1. Hold out a share of the items that are some user's test target (seeded): they are removed from every
   sequence, so they appear in no training sequence and the text encoder (tf-idf) and the tokenizer never
   fit on them; the rest is re-prepared as the "seen" dataset (OUT/data).
2. Embed the seen items (OUT/emb) and train the model on them (``ColdStartModel.train``: e.g. fit the tokenizer on
   the seen items in OUT/tok and train the generator in OUT/run).
3. Add the held-out items by their text (the run's own encoder and tokenizer: ``decoding.newitems``)
   and rank for the users whose original test target is a held-out item (their history: every earlier
   item that is not held out). For each epsilon, up to max(1, floor(epsilon * K)) slots may go to new
   items (``decoding.beam.merge_new_items``): "compete" (they enter where their prefix score beats the decoded
   items') and "reserve" (they always take the slots, after the best decoded items) are both reported.
4. Baselines, TIGER's semantic KNN: new items ranked by the cosine similarity of their text embedding to the
   mean embedding of the history, given the same number of slots (at the top of its list); and "kernel": the
   history's items as equal anchors of the neighbours kernel (the generator-free part of the "blend" rule).
Rows {"dataset", "seed", "epsilon", "model": the model's name | "knn", "slots", "rule", "levels", "tau", "recall@K",
"ndcg@K", "users"} in OUT/coldstart.json, the beams behind them in OUT/coldstart_beams.npz (``levels``: the ID prefix length the new items were scored by; ``reuse`` ranks a
finished OUT again, e.g. with other prefix lengths).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from sidrec.data.dataset import Dataset, load_dataset
from sidrec.data.prepare import PrepareConfig, prepare
from sidrec.data.schema import RawData
from sidrec.decoding.beam import merge_new_items
from sidrec.decoding.newitems import neighbour_scores, reserved_lists, semantic_knn, unit_rows
from sidrec.embeddings.text import embed_dataset, embed_new_texts, load_embeddings
from sidrec.errors import SidrecError
from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists
from sidrec.utils.artifacts import load_npy, read_json
from sidrec.utils.log import info as log_info


RULES = ("prefix", "neighbours", "blend", "dense")  # a generator's ways to score new items (ColdStartConfig.rules)


@dataclass(frozen=True, kw_only=True)
class ColdStartConfig:
    holdout: float = 0.05  # share of the distinct test-target items held out
    epsilons: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)
    k: int = 10
    beam: int = 20
    seed: int = 0
    # ID levels a new item is scored by (log P of its first L codes); () = every code level (TIGER's rule: all
    # but the collision suffix). Fewer levels score an unseen combination of codes by the coarser prefix it
    # shares with the training items (ties broken by the full prefix); one set of rows per value
    prefix_levels: tuple[int, ...] = ()
    # how a generator scores new items (one set of rows per rule): "prefix" = log P of their ID prefix under the
    # model (TIGER's rule); "neighbours" = the decoded items' probabilities passed to the new items near them in
    # the text-embedding space, kernel width ``tau`` in cosine (``decoding.newitems.neighbour_scores``; one set of
    # rows per width); "blend" = the history's items pass a share ``blend_weight`` of it too; "dense" (a TIGER
    # run with a dense head, dense_weight > 0): log P of the ID prefix + dense_fusion x the dense head's log P of
    # the item's text, the score its decoded items are ranked by (not in the default set: most runs have no head)
    rules: tuple[str, ...] = ("prefix", "neighbours", "blend")
    taus: tuple[float, ...] = (0.1,)
    blend_weight: float = 0.5
    reuse: bool = False  # OUT already holds a finished run of the same hold-out: rank again without training

    def check(self) -> None:
        """The new-item rules' settings, one clear line each; checked before anything is trained."""
        bad = [r for r in self.rules if r not in RULES]
        if bad or not self.rules:
            raise SidrecError(f"--rule {bad or list(self.rules)}: choose from {', '.join(RULES)}")
        if not 0 <= self.blend_weight < 1:
            raise SidrecError(f"--blend-weight {self.blend_weight}: must lie in [0, 1)")
        if not self.taus or min(self.taus) <= 0:
            raise SidrecError(f"--tau {list(self.taus)}: each must be > 0")


def held_out_items(ds: Dataset, share: float, seed: int) -> np.ndarray:
    """Item indices: ``share`` of the distinct test targets (at least one), seeded."""
    if not 0 < share < 1:
        raise SidrecError(f"--holdout {share}: must lie strictly between 0 and 1")
    targets = np.unique(ds.seq[ds.offsets[1:] - 1])
    n = max(1, int(round(share * len(targets))))
    return np.sort(np.random.default_rng(seed).choice(targets, n, replace=False))


def seen_dataset(ds: Dataset, held: np.ndarray, out: Path, log=log_info) -> Dataset:
    """``ds`` without the held-out items (removed from every sequence and from the catalog)."""
    keep = ~np.isin(ds.seq, held)
    user = np.repeat(np.arange(ds.n_users), np.diff(ds.offsets))
    raw_items = ds.items["item_id"].astype(str).to_numpy()
    raw_users = ds.users["user_id"].astype(str).to_numpy()
    pos = np.arange(len(ds.seq)) - np.repeat(ds.offsets[:-1], np.diff(ds.offsets))
    inter = pd.DataFrame({"user": raw_users[user[keep]], "item": raw_items[ds.seq[keep] - 1],
                          "time": pos[keep].astype(float)})
    cols = [c for c in ("item_id", "title", "text") if c in ds.items.columns]
    items = ds.items.loc[~ds.items["item_idx"].isin(held), cols].rename(columns={"item_id": "item"})
    prepare(RawData(inter, items), out, PrepareConfig(min_count=1, max_history=int(ds.stats["config"]["max_history"]),
                                                       text_fields=("text",)), source="coldstart")
    seen = load_dataset(out)
    log(f"cold start: {len(held)} items held out; seen dataset {seen.n_users:,} users, {seen.n_items:,} items")
    return seen


def cold_users(ds: Dataset, held: np.ndarray, length: int, known: set[str]) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Users whose test target is held out: (user rows, target item indices, histories as raw ids of
    ``known`` items (the seen catalog; held-out ones never), the last ``length``)."""
    raw = ds.items["item_id"].astype(str).to_numpy()
    ends = ds.offsets[1:] - 1
    rows = np.flatnonzero(np.isin(ds.seq[ends], held))
    hists = []
    for r in rows:  # one list per cold user (hundreds): builds the request strings
        h = ds.seq[ds.offsets[r]:ends[r]]
        hists.append([x for x in raw[h[~np.isin(h, held)] - 1].tolist() if x in known][-length:])
    ok = np.array([len(h) > 0 for h in hists], dtype=bool)
    return rows[ok], ds.seq[ends[rows[ok]]], [h for h, o in zip(hists, ok) if o]


def _given_embeddings(given: str | Path, ds: Dataset) -> tuple[np.ndarray, dict]:
    """The whole catalog's embeddings made beforehand (``sidrec embed``) and their record. A tf-idf artifact is
    refused: it was fitted on the held-out items' text too."""
    src = Path(given)
    meta_path = (src if src.is_dir() else src.parent) / "embeddings.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    if meta.get("encoder") == "tfidf":
        raise SidrecError(f"{given}: tf-idf embeddings were fitted on every item's text, the held-out ones included; "
                          "let evaluate-coldstart embed (--encoder tfidf) or give a pretrained encoder's embeddings")
    return load_embeddings(given, ds.n_items), meta


def _write_seen_embeddings(full: np.ndarray, meta: dict, given, ds: Dataset, seen: Dataset, out: Path) -> np.ndarray:
    """The seen items' rows of ``full`` as the run's embeddings artifact (returned), with the encoder's record
    (so new texts embed the same way later)."""
    pos = pd.Series(np.arange(1, ds.n_items + 1), index=ds.items["item_id"].astype(str).to_numpy())
    rows = pos.reindex(seen.items["item_id"].astype(str).to_numpy()).to_numpy()
    out.mkdir(parents=True, exist_ok=True)
    emb = np.vstack([full[:1], full[rows]])
    np.save(out / "item_emb.npy", emb)
    (out / "embeddings.json").write_text(json.dumps({**meta, "shape": list(emb.shape), "source": str(given),
                                                     "dataset": str(seen.path),
                                                     "dataset_fingerprint": seen.fingerprint}, indent=2))
    return emb


@dataclass(frozen=True)
class ColdStartModel:
    """What the protocol needs of a model: its ``name`` (the rows' "model"), ``train(seen, out, log)`` (fit on the
    seen dataset OUT/data with its embeddings OUT/emb; the run in OUT/run), ``scorer(out, device, new_names,
    new_texts, new_emb, cfg) -> Scorer``, whether ``prefix_levels`` apply (semantic-ID prefixes) and whether the
    text-kernel baseline is reported beside it."""

    name: str
    train: Callable[[Dataset, Path, Callable], None]
    scorer: Callable[..., "Scorer"]
    prefix_levels: bool = True
    kernel_baseline: bool = True


def evaluate_coldstart(ds: Dataset, out: str | Path, model: ColdStartModel, *, embed_cfg,
                       cfg: ColdStartConfig = ColdStartConfig(), embeddings: str | Path | None = None,
                       device: str = "auto", log=log_info) -> list[dict]:
    """TIGER's cold-start protocol for ``model``. ``embeddings``: the whole catalog's text embeddings made
    beforehand by a pretrained encoder (e.g. on a CPU, for a GPU run without the encoder's weights); else the
    seen items and the held-out ones are embedded here with ``embed_cfg``."""
    cfg.check()
    if cfg.prefix_levels and not model.prefix_levels:
        raise SidrecError(f"--prefix-levels applies to semantic-ID generators, not to {model.name}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    full, emb_meta = _given_embeddings(embeddings, ds) if embeddings is not None else (None, {})
    held = held_out_items(ds, cfg.holdout, cfg.seed)
    seen, emb = _seen_and_trained(ds, held, out, model, full, emb_meta, embeddings, embed_cfg, cfg, log)
    dev = torch.device(device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    raw = ds.items["item_id"].astype(str).to_numpy()
    texts = ds.items["text"].fillna("").astype(str).to_numpy()
    new_names = raw[held - 1].tolist()
    new_emb = full[held] if full is not None else \
        embed_new_texts(out / "emb", texts[held - 1].tolist())  # once: the model's codes and the KNN baseline
    # served catalog: the seen items (their run indices), then the held-out ones appended in order
    index = pd.Series(np.arange(1, seen.n_items + len(held) + 1),
                      index=seen.items["item_id"].astype(str).tolist() + new_names)
    scorer = model.scorer(out, dev, new_names, texts[held - 1].tolist(), new_emb, cfg)
    rows, targets, hists = cold_users(ds, held, scorer.max_history, set(seen.items["item_id"].astype(str)))
    if not len(rows):
        raise SidrecError("no user with a held-out test item has any other history; hold out more items")
    L = scorer.max_history
    target_idx = index[raw[targets - 1]].to_numpy()
    hist = np.zeros((len(rows), L), dtype=np.int64)
    for i, h in enumerate(hists):  # left-padded request matrix
        hist[i, L - len(h):] = index[h].to_numpy()
    new = torch.as_tensor(index[new_names].to_numpy().copy(), device=dev)
    with torch.no_grad():
        # per batch of users: the model's top-k of the seen items and its scores of every new item (per rule and
        # setting), computed once for every epsilon
        lists = [scorer.score(torch.as_tensor(hist[s:s + 256], device=dev), new) for s in range(0, len(rows), 256)]
        _save_beams(out / "coldstart_beams.npz", lists, hist, target_idx, new, index, ds)
        knn_order = _baselines(hist, emb, new_emb, cfg, dev, kernel=model.kernel_baseline)
        results = _rows(lists, knn_order, new, target_idx, cfg, model.name, users=len(rows))
    name = Path(ds.path).name
    results = [{"dataset": name, **r} for r in results]
    (out / "coldstart.json").write_text(json.dumps({"held_out_items": int(len(held)), "rows": results}, indent=2))
    for r in results:
        log(f"epsilon {r['epsilon']}: {r['model']:5s} ({r['slots']}, {r['rule']}, levels {r['levels']}, tau {r['tau']}) recall@{cfg.k} {r[f'recall@{cfg.k}']:.4f} "
            f"ndcg@{cfg.k} {r[f'ndcg@{cfg.k}']:.4f} ({r['users']} users)")
    return results


def _seen_and_trained(ds: Dataset, held: np.ndarray, out: Path, model: ColdStartModel, full, emb_meta, embeddings,
                      embed_cfg, cfg: ColdStartConfig, log) -> tuple[Dataset, np.ndarray]:
    """The seen dataset and its embeddings (OUT/data, OUT/emb), the model trained on them; ``reuse``: both from a
    finished OUT of the same hold-out."""
    if cfg.reuse:
        if not (out / "run" / "metrics.json").is_file():
            raise SidrecError(f"{out}: no finished cold-start run to reuse (run without --reuse first)")
        seen = load_dataset(out / "data")
        if seen.n_items != ds.n_items - len(held):
            raise SidrecError(f"{out}: its run held out {ds.n_items - seen.n_items} items, this hold-out {len(held)} "
                              f"(another --seed or --holdout); rerun without --reuse")
        log(f"cold start: reusing the run in {out} ({len(held)} items held out)")
        return seen, load_npy(out / "emb" / "item_emb.npy").astype(np.float32)
    seen = seen_dataset(ds, held, out / "data", log=log)
    # the seen items' embeddings (row 0 = padding); given ones: the held-out rows stand for embedding their text
    emb = _write_seen_embeddings(full, emb_meta, embeddings, ds, seen, out / "emb") if full is not None else \
        embed_dataset(seen, out / "emb", embed_cfg, log=log)
    model.train(seen, out, log)
    return seen, emb


def _save_beams(path: Path, lists, hist, target_idx, new, index: pd.Series, ds: Dataset) -> None:
    """What any rule built on the decoded items needs, to score again without the model
    (experiments/bench/coldstart_rescore.py): the beams, the requests, the targets, the new items, and each served
    index's row in the whole dataset."""
    raw = ds.items["item_id"].astype(str).to_numpy()
    orig = np.zeros(len(index) + 1, dtype=np.int64)
    orig[index.to_numpy()] = pd.Series(ds.items["item_idx"].to_numpy(), index=raw).reindex(index.index).to_numpy()
    np.savez_compressed(path, items=torch.cat([x[0] for x in lists]).cpu().numpy(),
                        scores=torch.cat([x[1] for x in lists]).float().cpu().numpy(), hist=hist,
                        target=target_idx, new=new.cpu().numpy(), dataset_row=orig)


def _baselines(hist: np.ndarray, emb: np.ndarray, new_emb: np.ndarray, cfg: ColdStartConfig, dev, *,
               kernel: bool) -> dict:
    """The text baselines' orders of the new items per user: TIGER's semantic KNN (the history's mean embedding;
    served indices of seen items are their rows of ``emb``) and, with ``kernel``, the generator-free part of
    "blend" (the history's items as equal anchors of the neighbours kernel: a soft nearest history item)."""
    knn_order = {("history", None): semantic_knn(hist, emb, new_emb)}
    if kernel:
        vecs, nv = unit_rows(emb).to(dev), unit_rows(new_emb).to(dev)
        for t in cfg.taus:
            ks = []
            for s in range(0, len(hist), 256):
                h = torch.as_tensor(hist[s:s + 256], device=dev)
                ks.append(neighbour_scores(torch.where(h > 0, h, -1), torch.zeros(h.shape, device=dev), vecs, nv,
                                           tau=t).cpu().numpy())
            knn_order["kernel", t] = torch.argsort(torch.as_tensor(np.vstack(ks)), dim=1, descending=True, stable=True)
    return knn_order


def _rows(lists, knn_order: dict, new: torch.Tensor, target_idx: np.ndarray, cfg: ColdStartConfig, name: str, *,
          users: int) -> list[dict]:
    """One row per epsilon x (rule, levels, tau) x slots for the model, one per epsilon x baseline."""
    k, results = cfg.k, []

    def row(model, slots, rule, levels, tau, ranked, eps):
        m = metrics_from_ranks(ranks_from_lists(ranked, target_idx), (k,))
        return {"seed": cfg.seed, "epsilon": eps, "model": model, "slots": slots, "rule": rule, "levels": levels,
                "tau": tau, f"recall@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"], "users": int(users)}

    for eps in cfg.epsilons:
        for rule, lv, tau in lists[0][2]:
            for slots in ("compete", "reserve"):  # new items enter by score, or always take their slots
                ranked = np.vstack([merge_new_items(it[:, :k], sc[:, :k], new, ns[rule, lv, tau], epsilon=eps,
                                                    slots=slots)[0].cpu().numpy() for it, sc, ns in lists])
                results.append(row(name, slots, rule, lv, tau, ranked, eps))
        for (rule, tau), order in knn_order.items():  # KNN: the same number of slots, at the top
            results.append(row("knn", "reserve", rule, None, tau, reserved_lists(order, new, k, eps).numpy(), eps))
    return results


@dataclass(frozen=True)
class Scorer:
    """A run's cold-start scoring: ``score(hist, new) -> (top-k seen items (B, k), their scores, {levels: new items'
    scores (B, n_new)})`` and the history length its model reads."""

    score: Callable[[torch.Tensor, torch.Tensor], tuple]
    max_history: int


