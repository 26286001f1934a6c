"""TIGER's cold-start protocol (Rajput et al. 2023, section 4.2) as one stage, for a generator (TIGER, LC-Rec) or for
VQ-Rec (whose codes come from text too: it shares the command and the baseline).

1. Hold out a share of the items that are some user's test target (seeded): they are removed from every
   sequence, so they appear in no training sequence and the text encoder (tf-idf) and the tokenizer never
   fit on them; the rest is re-prepared as the "seen" dataset (OUT/data).
2. Embed the seen items (OUT/emb), fit the tokenizer on them (OUT/tok; VQ-Rec: its OPQ in OUT/run/opq), train
   the model (OUT/run).
3. Add the held-out items by their text (the run's own encoder and tokenizer: ``decoding.newitems``)
   and rank for the users whose original test target is a held-out item (their history: every earlier
   item that is not held out). For each epsilon, up to max(1, floor(epsilon * K)) slots may go to new
   items (``decoding.beam.merge_new_items``): "compete" (they enter where their prefix score beats the decoded
   items') and "reserve" (they always take the slots, after the best decoded items) are both reported.
4. Baselines, TIGER's semantic KNN: new items ranked by the cosine similarity of their text embedding to the
   mean embedding of the history, given the same number of slots (at the top of its list); and "kernel": the
   history's items as equal anchors of the neighbours kernel (the generator-free part of the "blend" rule).
Rows {"dataset", "seed", "epsilon", "model": "tiger" | "knn", "slots", "rule", "levels", "tau", "recall@K",
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
from sidrec.errors import SidrecError
from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists
from sidrec.utils.log import info as log_info
from sidrec.utils.artifacts import load_npy, read_json


RULES = ("prefix", "neighbours", "blend")  # a generator's ways to score new items (ColdStartConfig.rules)


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
    # rows per width); "blend" = the history's items pass a share ``blend_weight`` of it too
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
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.schema import RawData

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
    from sidrec.embeddings.text import load_embeddings

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


def evaluate_coldstart(ds: Dataset, out: str | Path, *, embed_cfg, method: str, tok_overrides: dict,
                       model_cfg, train_cfg, cfg: ColdStartConfig = ColdStartConfig(),
                       embeddings: str | Path | None = None, generator: str = "tiger", vq_cfg=None,
                       init: str | Path | None = None, log=log_info) -> list[dict]:
    """TIGER's cold-start protocol for a generator (``generator="tiger"``: ``method`` tokenizer, ``model_cfg`` a
    TIGERConfig) or for VQ-Rec (``"vqrec"``: OPQ codes fitted on the seen items, ``model_cfg`` a VQRecConfig,
    ``vq_cfg``, fine-tuned from the pre-trained run ``init`` or trained from scratch). ``embeddings``: the whole
    catalog's text embeddings made beforehand by a pretrained encoder (e.g. on a CPU, for a GPU run without the
    encoder's weights); else the seen items and the held-out ones are embedded here with ``embed_cfg``."""
    from sidrec.embeddings.text import embed_dataset, embed_new_texts

    from sidrec.train.generator import GENERATORS

    if generator != "vqrec" and (generator not in GENERATORS or not GENERATORS[generator].cold_start):
        raise SidrecError(f"cold start for {generator!r}: choose one of "
                          f"{', '.join([g for g, s in GENERATORS.items() if s.cold_start] + ['vqrec'])}")
    cfg.check()
    if generator == "vqrec" and cfg.prefix_levels:
        raise SidrecError("--prefix-levels applies to generators (semantic-ID prefixes), not to VQ-Rec")
    if generator == "vqrec" and vq_cfg is not None and vq_cfg.codes != "opq":  # before any data is written
        raise SidrecError("cold start needs codes from text: VQ-Rec with --codes random cannot encode new items")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    full, emb_meta = _given_embeddings(embeddings, ds) if embeddings is not None else (None, {})
    held = held_out_items(ds, cfg.holdout, cfg.seed)
    if cfg.reuse:
        if not (out / "run" / "metrics.json").is_file():
            raise SidrecError(f"{out}: no finished cold-start run to reuse (run without --reuse first)")
        seen = load_dataset(out / "data")
        if seen.n_items != ds.n_items - len(held):
            raise SidrecError(f"{out}: its run held out {ds.n_items - seen.n_items} items, this hold-out {len(held)} "
                              f"(another --seed or --holdout); rerun without --reuse")
        emb = load_npy(out / "emb" / "item_emb.npy").astype(np.float32)
        log(f"cold start: reusing the run in {out} ({len(held)} items held out)")
    else:
        seen = seen_dataset(ds, held, out / "data", log=log)
        # the seen items' embeddings (row 0 = padding); given ones: the held-out rows stand for embedding their text
        emb = _write_seen_embeddings(full, emb_meta, embeddings, ds, seen, out / "emb") if full is not None else \
            embed_dataset(seen, out / "emb", embed_cfg, log=log)
        _train(seen, out, generator, method=method, tok_overrides=tok_overrides, model_cfg=model_cfg,
               train_cfg=train_cfg, vq_cfg=vq_cfg, embed_cfg=embed_cfg, init=init, cfg=cfg, log=log)

    dev = torch.device(train_cfg.device if train_cfg.device != "auto" else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    raw = ds.items["item_id"].astype(str).to_numpy()
    texts = ds.items["text"].fillna("").astype(str).to_numpy()
    new_names = raw[held - 1].tolist()
    new_emb = full[held] if full is not None else \
        embed_new_texts(out / "emb", texts[held - 1].tolist())  # once: the model's codes and the KNN baseline
    # served catalog: the seen items (their run indices), then the held-out ones appended in order
    index = pd.Series(np.arange(1, seen.n_items + len(held) + 1),
                      index=seen.items["item_id"].astype(str).tolist() + new_names)
    scorer = (_vqrec_scorer if generator == "vqrec" else _generator_scorer)(out, dev, new_names, texts[held - 1].tolist(),
                                                                        new_emb, cfg)
    known = set(seen.items["item_id"].astype(str))
    rows, targets, hists = cold_users(ds, held, scorer.max_history, known)
    if not len(rows):
        raise SidrecError("no user with a held-out test item has any other history; hold out more items")
    L = scorer.max_history
    target_idx = index[raw[targets - 1]].to_numpy()
    hist = np.zeros((len(rows), L), dtype=np.int64)
    for i, h in enumerate(hists):  # left-padded request matrix
        hist[i, L - len(h):] = index[h].to_numpy()
    new = torch.as_tensor(index[new_names].to_numpy().copy(), device=dev)
    results = []
    from sidrec.decoding.beam import merge_new_items
    from sidrec.decoding.newitems import neighbour_scores, reserved_lists, semantic_knn, unit_rows

    with torch.no_grad():
        # per batch of users: the model's top-k of the seen items and its scores of every new item (per prefix
        # length for generators), computed once for every epsilon
        lists = [scorer.score(torch.as_tensor(hist[s:s + 256], device=dev), new) for s in range(0, len(rows), 256)]
        # what any rule built on the decoded items needs, to score again without the model (experiments/bench/coldstart_rescore.py):
        # the beams, the requests, the targets, the new items, and each served index's row in the whole dataset
        orig = np.zeros(len(index) + 1, dtype=np.int64)
        orig[index.to_numpy()] = pd.Series(ds.items["item_idx"].to_numpy(), index=raw).reindex(index.index).to_numpy()
        np.savez_compressed(out / "coldstart_beams.npz", items=torch.cat([x[0] for x in lists]).cpu().numpy(),
                            scores=torch.cat([x[1] for x in lists]).float().cpu().numpy(), hist=hist,
                            target=target_idx, new=new.cpu().numpy(), dataset_row=orig)
        # semantic KNN: mean text embedding of the history vs the new items (ranked once, cut per epsilon)
        # (served indices of seen items are their rows of ``emb``)
        knn_order = {("history", None): semantic_knn(hist, emb, new_emb)}
        # a second text baseline, the generator-free part of "blend": the history's items as equal anchors of
        # the same kernel (soft nearest history item rather than the mean)
        if generator != "vqrec":
            vecs, nv = unit_rows(emb).to(dev), unit_rows(new_emb).to(dev)
            for t in cfg.taus:
                ks = []
                for s in range(0, len(rows), 256):
                    h = torch.as_tensor(hist[s:s + 256], device=dev)
                    ks.append(neighbour_scores(torch.where(h > 0, h, -1), torch.zeros(h.shape, device=dev), vecs, nv,
                                               tau=t).cpu().numpy())
                knn_order["kernel", t] = torch.argsort(torch.as_tensor(np.vstack(ks)), dim=1, descending=True,
                                                       stable=True)
        for eps in cfg.epsilons:
            for rule, lv, tau in lists[0][2]:
                for slots in ("compete", "reserve"):  # new items enter by score, or always take their slots
                    ranked = np.vstack([merge_new_items(it[:, :cfg.k], sc[:, :cfg.k], new, ns[rule, lv, tau],
                                                        epsilon=eps, slots=slots)[0].cpu().numpy()
                                        for it, sc, ns in lists])
                    m = metrics_from_ranks(ranks_from_lists(ranked, target_idx), (cfg.k,))
                    results.append({"seed": cfg.seed, "epsilon": eps, "model": generator, "slots": slots,
                                    "rule": rule, "levels": lv, "tau": tau,
                                    f"recall@{cfg.k}": m[f"recall@{cfg.k}"], f"ndcg@{cfg.k}": m[f"ndcg@{cfg.k}"],
                                    "users": int(len(rows))})
            for (rule, tau), order in knn_order.items():  # KNN: the same number of slots, at the top
                knn_lists = reserved_lists(order, new, cfg.k, eps).numpy()
                m = metrics_from_ranks(ranks_from_lists(knn_lists, target_idx), (cfg.k,))
                results.append({"seed": cfg.seed, "epsilon": eps, "model": "knn", "slots": "reserve", "rule": rule,
                                "levels": None, "tau": tau, f"recall@{cfg.k}": m[f"recall@{cfg.k}"],
                                f"ndcg@{cfg.k}": m[f"ndcg@{cfg.k}"], "users": int(len(rows))})
    name = Path(ds.path).name
    results = [{"dataset": name, **r} for r in results]
    (out / "coldstart.json").write_text(json.dumps({"held_out_items": int(len(held)), "rows": results}, indent=2))
    for r in results:
        log(f"epsilon {r['epsilon']}: {r['model']:5s} ({r['slots']}, {r['rule']}, levels {r['levels']}, tau {r['tau']}) recall@{cfg.k} {r[f'recall@{cfg.k}']:.4f} "
            f"ndcg@{cfg.k} {r[f'ndcg@{cfg.k}']:.4f} ({r['users']} users)")
    return results


def _train(seen: Dataset, out: Path, generator: str, *, method, tok_overrides, model_cfg, train_cfg, vq_cfg, embed_cfg,
           init, cfg: ColdStartConfig, log) -> None:
    """Fit the tokenizer on the seen items and train the model (OUT/tok, OUT/run)."""
    if generator == "vqrec":
        from sidrec.train.vqrec import VQRecTrainConfig, finetune_vqrec

        finetune_vqrec(seen, out / "run", init=init, model_cfg=model_cfg, vq_cfg=vq_cfg or VQRecTrainConfig(),
                       train_cfg=train_cfg, embed_cfg=embed_cfg, embeddings=out / "emb", log=log)
        return
    from sidrec.tokenizers.stage import tokenize
    from sidrec.train.generator import generator_spec
    from sidrec.train.loop import CKPT

    tok_meta = out / "tok" / "tokenizer.json"
    fitted = read_json(tok_meta).get("n_items") if tok_meta.is_file() else None
    if train_cfg.resume and (out / "run" / CKPT).is_file() and fitted == seen.n_items:
        # an interrupted run resumes on the tokens it was trained on (a refit on a GPU need not give the same codes)
        log(f"cold start: resuming the run in {out / 'run'} on its tokens in {out / 'tok'}")
    else:
        tokenize(seen, out / "tok", method=method, embeddings=out / "emb", overrides=tok_overrides, log=log)
        if tok_meta.is_file() and read_json(tok_meta)["n_items"] != seen.n_items:
            raise SidrecError("internal: tokenizer fitted on another catalog than the seen items")
    generator_spec(generator).train(seen, out / "tok", out / "run", model_cfg, train_cfg, beam=cfg.beam, ks=(cfg.k,),
                                    log=log)


@dataclass(frozen=True)
class Scorer:
    """A run's cold-start scoring: ``score(hist, new) -> (top-k seen items (B, k), their scores, {levels: new items'
    scores (B, n_new)})`` and the history length its model reads."""

    score: Callable[[torch.Tensor, torch.Tensor], tuple]
    max_history: int


def _generator_scorer(out: Path, dev, new_names: list[str], new_texts: list[str], new_emb: np.ndarray,
                      cfg: ColdStartConfig):
    """A generator's ``Scorer`` (TIGER or LC-Rec, through the generator contract): beam search over the seen items; new items get IDs from the run's tokenizer (collision
    suffix as in training), join the trie, and are scored by log P of their first ``levels`` codes."""
    from sidrec.decoding.beam import generate, prefix_scores
    from sidrec.decoding.newitems import collision_suffix, grown, neighbour_scores, new_item_ids, unit_rows
    from sidrec.tokenizers.registry import load_tokenizer
    from sidrec.train.generator import load_generator

    model, trie, _ = load_generator(out / "run", dev)
    tok = load_tokenizer(out / "run" / "tokens")
    base, sids = new_item_ids(out / "run", tok, new_texts, model.vocab.level_sizes, new_names, emb=new_emb)
    _, trie, model.item_tok = grown(model, tok, base, sids, trie.level_sizes, dev)
    levels = model.id_length - (1 if collision_suffix(out / "run") else 0)
    level_set = sorted(set(cfg.prefix_levels or (levels,)))
    if any(not 1 <= lv <= levels for lv in level_set):
        raise SidrecError(f"--prefix-levels {level_set}: each must lie in 1..{levels} (the ID's code levels)")
    # the seen items' text embeddings (rows = the run's item indices) and the new items', for "neighbours"
    # (the new items follow the seen ones in the served catalog, and the beam may decode them too)
    new_vecs = unit_rows(new_emb).to(dev)
    vecs = torch.cat([unit_rows(load_npy(out / "emb" / "item_emb.npy")).to(dev), new_vecs])

    def score(h: torch.Tensor, new: torch.Tensor):
        u = torch.zeros(len(h), dtype=torch.long, device=h.device)
        # the whole beam: its items pass their probabilities to the new ones ("neighbours"); lists use the top k
        it, sc = generate(model, u, h, trie, beam=max(cfg.beam, cfg.k), k=max(cfg.beam, cfg.k))
        ns = {}
        if "prefix" in cfg.rules:
            full_ns = prefix_scores(model, u, h, new, levels)
            # a coarser prefix: its log-probability, ties (new items sharing it) broken by the full prefix
            ns |= {("prefix", lv, None): full_ns if lv == levels else
                   prefix_scores(model, u, h, new, lv) + 1e-3 * full_ns for lv in level_set}
        if "neighbours" in cfg.rules:
            ns |= {("neighbours", None, t): neighbour_scores(it, sc, vecs, new_vecs, tau=t) for t in cfg.taus}
        if "blend" in cfg.rules:  # the history's items as anchors too, a share blend_weight of the mass
            ns |= {("blend", None, t): neighbour_scores(it, sc, vecs, new_vecs, tau=t, hist=h, history_weight=cfg.blend_weight)
                   for t in cfg.taus}
        return it, sc, ns

    return Scorer(score, model.cfg.max_history)


def _vqrec_scorer(out: Path, dev, new_names: list[str], new_texts: list[str], new_emb: np.ndarray,
                  cfg: ColdStartConfig):
    """VQ-Rec: new items get OPQ codes from the run's own quantiser (fitted on the seen items) and are scored by
    the same full ranking as the seen ones (no training, no prefix: every code is known)."""
    from sidrec.tokenizers.opq import OPQTokenizer
    from sidrec.train.vqrec import load_vqrec

    model, _ = load_vqrec(out / "run", dev)
    n_seen = len(model.codes) - 1
    model.set_codes(np.concatenate([model.codes.cpu().numpy(), OPQTokenizer.load(out / "run" / "opq").encode(new_emb)]))
    model.to(dev)
    model.eval()

    def score(h: torch.Tensor, new: torch.Tensor):
        s = model.score(h).float()
        seen_s = s[:, : n_seen + 1].clone()
        seen_s[:, 0] = -torch.inf
        top = seen_s.topk(cfg.k, dim=1)
        return top.indices, top.values, {("model", None, None): s[:, new]}

    return Scorer(score, model.cfg.max_history)
