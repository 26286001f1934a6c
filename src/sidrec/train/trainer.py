"""The training stage every generator shares: prefix batches (length-bucketed), early stopping on the
validation loss or decoded NDCG, test decoding, the run bundle serving reads (``train_generator``), and the
reading of a generator run (``read_run``). A generator plugs in a ``build(model_cfg, ids) -> (model, trie)``."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sidrec.config import to_dict
from sidrec.data.dataset import Dataset
from sidrec.decoding.beam import generate, trim_history
from sidrec.decoding.trie import Trie
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_lists
from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists
from sidrec.models.tiger import TIGER
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.loop import TrainConfig, fit, sharded
from sidrec.utils import dist
from sidrec.utils.artifacts import load_npy, read_json, sha256_file, verify, write_manifest
from sidrec.utils.log import info as log_info
from sidrec.utils.progress import progress
from sidrec.utils.runinfo import check_resumable, data_info, write_run_info
from sidrec.utils.seeding import pick_device, seed_everything


def id_sizes(ids: SemanticIDs, spare_suffixes: int) -> list[int]:
    """Vocabulary size per ID position; an appended collision level gets ``spare_suffixes`` extra tokens, so
    items added after training (cold start) can still be told apart."""
    sizes = list(ids.level_sizes)
    if int(ids.meta.get("id_length", len(sizes))) > int(ids.meta.get("levels", len(sizes))):
        sizes[-1] += spare_suffixes
    return sizes


def bucket_widths(lengths: np.ndarray, max_len: int, k: int) -> list[int]:
    """At most ``k`` history widths, the last ``max_len``, that minimise the padded positions when every
    sample is cut to the smallest width that holds its history (a dynamic programme over the length
    histogram, O(k * max_len^2))."""
    k = max(1, min(k, max_len))
    cnt = np.bincount(np.clip(lengths, 0, max_len), minlength=max_len + 1).astype(np.float64)
    cum = np.concatenate([[0.0], np.cumsum(cnt)])  # cum[l + 1] = samples of length <= l
    w = np.arange(max_len + 1, dtype=np.float64)
    cost = [w * cum[1:]]  # cost[j][b]: lengths 0..b covered by j + 1 widths, the last b
    arg = [np.zeros(max_len + 1, dtype=np.int64)]
    for _ in range(1, k):
        # best over a < b of cost[j-1][a] + b * (cum[b+1] - cum[a+1])
        tot = cost[-1][None, :] + w[:, None] * (cum[1:, None] - cum[None, 1:])  # [b, a]
        tot[np.triu_indices(max_len + 1)] = np.inf  # a must be < b
        tot[0, 0] = cost[-1][0]
        arg.append(tot.argmin(1))
        cost.append(tot.min(1))
    widths, b = [max_len], max_len
    for j in range(k - 1, 0, -1):
        b = int(arg[j][b])
        if b <= 0:
            break
        widths.append(b)
    return sorted(set(widths))


class PrefixBatches:
    """The training samples, resident on the device, served in batches of similar history length.

    Samples fall into the ``buckets`` widths of ``bucket_widths``; each epoch shuffles within a bucket,
    cuts it into batches and shuffles the batch order (seeded by (seed, epoch)); a batch keeps only its
    width's last columns (histories are left-padded, and T5's relative positions make the cut exact).
    On Beauty (history 20, mean length 6.7) 4 widths drop 59% of the encoder positions. Every batch of
    a width has the same shape, so a compiled step builds one graph per width; ``buckets`` 1 = one width."""

    def __init__(self, users: np.ndarray, hist: np.ndarray, target: np.ndarray, *, batch_size: int,
                 buckets: int, seed: int, device: torch.device):
        self.n, self.max_len = len(target), hist.shape[1]
        self.batch_size, self.seed = batch_size, seed
        lengths = (hist > 0).sum(1)
        self.widths = bucket_widths(lengths, self.max_len, buckets) if buckets > 1 else [self.max_len]
        self.bucket = np.searchsorted(self.widths, lengths)
        self.sizes = np.bincount(self.bucket, minlength=len(self.widths))
        self.steps = int(sum(-(-s // batch_size) for s in self.sizes))
        self.padded_share = float(1 - lengths.sum() / (np.asarray(self.widths)[self.bucket].sum()))
        self.users, self.hist, self.target = (torch.as_tensor(a, device=device) for a in (users, hist, target))
        self.device = device

    def __call__(self, epoch: int):
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.n)
        B = self.batch_size
        if len(self.widths) == 1:  # one width: the plain shuffled order
            order = torch.from_numpy(perm).to(self.device)
            for s in range(0, self.n, B):
                i = order[s:s + B]
                yield self.users[i], self.hist[i], self.target[i]
            return
        perm = perm[np.argsort(self.bucket[perm], kind="stable")]  # grouped by width, shuffled within
        starts = np.concatenate([[0], np.cumsum(self.sizes)])
        chunks = [(s, min(s + B, starts[b + 1]), w) for b, w in enumerate(self.widths)
                  for s in range(starts[b], starts[b + 1], B)]
        order = torch.from_numpy(perm).to(self.device)
        for c in rng.permutation(len(chunks)):
            s, e, w = chunks[c]
            i = order[s:e]
            yield self.users[i], self.hist[i, self.max_len - w:], self.target[i]


@torch.no_grad()
def decode_users(model: TIGER, trie: Trie, ds: Dataset, split: str, *, beam: int, k: int, batch_size: int,
                 device: torch.device, users: np.ndarray | None = None, sample_temperature: float = 0.0,
                 seed: int = 0) -> np.ndarray:
    """Top-k item lists (n_users, k) for the split (rows of users not selected stay -1), by ``decode_split``.
    ``sample_temperature`` > 0: k distinct items sampled at that temperature (seeded per batch) instead of beam
    search."""
    model.eval()
    return decode_split(lambda u, h, s: generate(model, u, h, trie, beam=beam, k=k,
                                                 sample_temperature=sample_temperature, seed=seed + s)[0],
                        ds, split, max_history=model.cfg.max_history, k=k, batch_size=batch_size, device=device,
                        users=users)


@torch.no_grad()
def decode_split(decode, ds: Dataset, split: str, *, max_history: int, k: int, batch_size: int,
                 device: torch.device, users: np.ndarray | None = None, desc: str | None = None) -> np.ndarray:
    """Top-k lists (n_users, k) of ``decode(users, hist, start) -> items (b, k)`` for the split's users (rows of
    users not selected stay -1): users in order of history length, in batches of ``batch_size``, each batch cut
    to its longest history; ``start`` is the batch's offset (a per-batch seed)."""
    u_all, hist, _ = ds.eval_inputs(split, max_history)
    rows = np.arange(ds.n_users) if users is None else users
    rows = rows[np.argsort((hist[rows] > 0).sum(1), kind="stable")]
    out = np.full((ds.n_users, k), -1, dtype=np.int64)
    batches = range(0, len(rows), batch_size)
    for s in progress(batches, total=len(batches), desc=desc or f"decode {split}"):
        r = rows[s:s + batch_size]
        items = decode(torch.as_tensor(u_all[r], device=device), trim_history(torch.as_tensor(hist[r], device=device)),
                       s)
        out[r] = items.cpu().numpy()
    return out


class ValidationLoss:
    """Mean teacher-forced loss (the training objective) of a split's targets; inputs built once,
    sorted by history length and cut per batch."""

    def __init__(self, ds: Dataset, max_history: int, *, batch_size: int, device: torch.device,
                 split: str = "valid"):
        u, hist, target = ds.eval_inputs(split, max_history)
        o = np.argsort((hist > 0).sum(1), kind="stable")
        self.u, self.hist, self.target = (torch.as_tensor(a[o], device=device) for a in (u, hist, target))
        self.batch_size, self.device = batch_size, device

    @torch.no_grad()
    def __call__(self, model: TIGER) -> float:
        model.eval()
        total = torch.zeros((), device=self.device)
        for s in range(0, len(self.target), self.batch_size):
            b = slice(s, s + self.batch_size)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                total += model(self.u[b], trim_history(self.hist[b]), self.target[b]).float() * len(self.target[b])
        return total.item() / len(self.target)


def validation_loss(model: TIGER, ds: Dataset, *, batch_size: int, device: torch.device, split: str = "valid") -> float:
    """Mean teacher-forced loss of the split's targets (one-off; trainers keep a ``ValidationLoss``)."""
    return ValidationLoss(ds, model.cfg.max_history, batch_size=batch_size, device=device, split=split)(model)


def train_generator(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg, train_cfg: TrainConfig, *,
                    kind: str, build, compilable: bool, beam: int = 20, ks: tuple[int, ...] = (5, 10, 20),
                    valid_users: int = 0, decode_batch: int = 256, log=log_info) -> dict:
    """The training stage of any generator (models/generator.py): ``build(model_cfg, ids) -> (model, trie)``;
    every prefix of the training sequences, length-bucketed; selection on validation NDCG@10 or the
    teacher-forced loss; test decoded once (beam ``beam``). Writes RUN/config.json (kind), metrics.json,
    test_top.npy and the bundle serving needs."""
    out = Path(out)
    if model_cfg.max_history is None:  # the dataset's own history length, as the CLI uses
        model_cfg = replace(model_cfg, max_history=int(ds.stats["config"]["max_history"]))
    ids = SemanticIDs(tokens)
    ids.check_dataset(ds)
    _check_decode_options(train_cfg, ks, beam, valid_users)
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)

    model, trie = build(model_cfg, ids)
    backbone = {"backbone_fingerprint": model.fingerprint} if hasattr(model, "fingerprint") else {}
    same = {"kind": kind, "model": to_dict(model_cfg), **backbone,
            "tokens_codes_sha256": sha256_file(Path(tokens) / "codes.npy"), "dataset_fingerprint": ds.fingerprint}
    if train_cfg.resume:
        check_resumable(out, same)
    if dist.is_main():
        write_run_info(out, kind=kind, config={"model": to_dict(model_cfg), "train": to_dict(train_cfg), **backbone,
                                                  "decode": {"beam": beam, "ks": list(ks), "valid_users": valid_users},
                                                  "tokens": str(Path(tokens).resolve()),
                                                  "tokens_codes_sha256": same["tokens_codes_sha256"],
                                                  "dataset": str(Path(ds.path).resolve()),
                                                  "dataset_fingerprint": ds.fingerprint},
                       data=data_info(ds), device=str(device))
        _bundle(out, ids, ds)
    trie.to(device)
    per_sequence = getattr(model_cfg, "sequence_loss", False)  # a generator with a loss at every position
    hist, target = ds.train_prefix_samples(model_cfg.max_history, longest_only=per_sequence)
    counts = np.clip(np.diff(ds.offsets) - 3, 0, None)  # training targets per user
    users = np.flatnonzero(counts) + 1 if per_sequence else np.repeat(np.arange(1, ds.n_users + 1), counts)
    n = len(target)
    batches = PrefixBatches(users, hist, target, batch_size=train_cfg.batch_size, buckets=train_cfg.length_buckets,
                            seed=train_cfg.seed, device=device)
    log(f"{kind}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {n:,} training "
        f"{'sequences (a loss at every position)' if per_sequence else 'samples'}, "
        f"IDs of length {ids.codes.shape[1]}, vocab {model.vocab.size}; history widths {batches.widths} "
        f"({batches.padded_share:.0%} padding)")

    vrows = None
    if valid_users and valid_users < ds.n_users:
        vrows = np.sort(np.random.default_rng(train_cfg.seed).choice(ds.n_users, valid_users, replace=False))
    ecfg = EvalConfig(ks=ks, max_history=model_cfg.max_history)
    validate = _validator(ds, trie, model_cfg, train_cfg, ecfg, beam, decode_batch, vrows, device)
    t0 = time.time()
    res = fit(model, cfg=train_cfg, run_dir=out, device=device, batches=batches, steps_per_epoch=batches.steps,
              loss_fn=lambda m, b: m(*b), validate=validate, log=log, compilable=compilable)
    train_seconds = time.time() - t0
    if sharded(model):  # FSDP: rank 0 tests on an unsharded copy of the best weights
        state = dist.full_state(model)[0]
        if dist.is_main():
            model = build(model_cfg, ids)[0]
            model.load_state_dict(state)
            model.to(device)
    if not dist.is_main():  # rank 0 tests and writes
        return {"model": kind, "rank": dist.rank(), "best_epoch": res.best_epoch}
    return _test_and_write(model, trie, ds, out, kind, res, train_seconds, n, tokens, ecfg, beam, decode_batch,
                           vrows, device)


def _check_decode_options(train_cfg: TrainConfig, ks: tuple[int, ...], beam: int, valid_users: int = 0) -> None:
    """The selection metric, beam width and validation sample are checked before any training, not after the first
    validation."""
    if valid_users < 0:
        raise SidrecError(f"--valid-users {valid_users}: give a number of users >= 0 (0 = all)")
    known = {"loss"} | {f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in ks}
    if train_cfg.select_metric not in known:
        raise SidrecError(f"selection metric {train_cfg.select_metric!r}: choose loss or one of "
                          f"{', '.join(sorted(known - {'loss'}))}")
    if beam < max(ks):
        raise SidrecError(f"beam {beam} is smaller than the largest K {max(ks)}; use --beam >= K")


def _validator(ds: Dataset, trie, model_cfg, train_cfg: TrainConfig, ecfg: EvalConfig, beam: int, decode_batch: int,
               vrows: np.ndarray | None, device):
    """validate(model): the teacher-forced validation loss (``select_metric`` "loss", LETTER's signal, no
    decoding), or the validation users decoded (all, or the sample ``vrows``) and scored."""
    ks = ecfg.ks
    vloss = ValidationLoss(ds, model_cfg.max_history, batch_size=max(4096, train_cfg.batch_size), device=device) \
        if train_cfg.select_metric == "loss" else None

    def validate(m) -> dict:
        if vloss is not None:
            return {"split": "valid", "loss": vloss(m)}
        ranked = decode_users(m, trie, ds, "valid", beam=beam, k=max(ks), batch_size=decode_batch, device=device,
                              users=vrows)
        if vrows is not None:  # score only the sampled users (recorded in the results)
            _, _, tg = ds.eval_inputs("valid", 1)
            return {"split": "valid", "users": len(vrows),
                    **metrics_from_ranks(ranks_from_lists(ranked[vrows], tg[vrows]), ks)}
        return evaluate_lists(ranked, ds, "valid", ecfg)

    return validate


def _test_and_write(model, trie, ds: Dataset, out: Path, kind: str, res, train_seconds: float, n: int, tokens,
                    ecfg: EvalConfig, beam: int, decode_batch: int, vrows, device) -> dict:
    """Decode the test users once with the best weights; write metrics.json, test_top.npy and the manifest."""
    ks = ecfg.ks
    t1 = time.time()
    ranked = decode_users(model, trie, ds, "test", beam=beam, k=max(ks), batch_size=decode_batch, device=device)
    decode_seconds = time.time() - t1
    test = evaluate_lists(ranked, ds, "test", ecfg, beam=beam, constrained=True)
    secs = [h["seconds"] for h in res.history]
    metrics = {"model": kind, "validation": res.best_validation, "test": test, "best_epoch": res.best_epoch,
               "epochs_run": len(res.history), "stopped": res.stopped, "train_seconds": round(train_seconds, 2),
               "samples_per_second": round(n * len(secs) / max(1e-9, sum(secs)), 1),
               "test_decode_users_per_second": round(ds.n_users / decode_seconds, 1),
               "tokens": str(tokens), "valid_users": len(vrows) if vrows is not None else ds.n_users}
    if device.type == "cuda":
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    np.save(out / "test_top.npy", ranked)
    write_manifest(out)
    return metrics


def _bundle(out: Path, ids: SemanticIDs, ds: Dataset) -> None:
    """Copy what serving needs into the run: RUN/tokens (IDs, tokenizer.json and the tokenizer's weights, so
    new items can be encoded), RUN/embeddings (the text encoder's settings: embeddings.json, a fitted tf-idf
    model, and the catalog's vectors in half precision for the cold-start "neighbours" rule) and RUN/items.parquet (item_id, title, text), so the run works after its tokens,
    embeddings and dataset directories move."""
    (out / "tokens").mkdir(parents=True, exist_ok=True)
    for f in ("codes.npy", "tokenizer.json", "base_codes.npy", "model.safetensors", "centroids.npy", "opq.faiss"):
        if (ids.path / f).is_file() and (ids.path / f).resolve() != (out / "tokens" / f).resolve():
            shutil.copyfile(ids.path / f, out / "tokens" / f)
    emb = ids.meta.get("embeddings")
    if emb and (Path(emb) / "embeddings.json").is_file():
        (out / "embeddings").mkdir(exist_ok=True)
        for f in ("embeddings.json", "tfidf.pkl"):
            if (Path(emb) / f).is_file() and (Path(emb) / f).resolve() != (out / "embeddings" / f).resolve():
                shutil.copyfile(Path(emb) / f, out / "embeddings" / f)
        vec = Path(emb) / "item_emb.npy"  # the catalog's vectors, half precision: new items' neighbours rule
        if vec.is_file() and vec.resolve() != (out / "embeddings" / "item_emb.npy").resolve():
            v = load_npy(vec, mmap_mode="r")
            if len(v) == ds.n_items + 1:
                np.save(out / "embeddings" / "item_emb.npy", np.asarray(v, dtype=np.float16))
    cols = [c for c in ("item_id", "title", "text") if c in ds.items.columns]
    ds.items[cols].to_parquet(out / "items.parquet", index=False)


def read_run(run: str | Path, kind: str, name: str) -> tuple[Path, dict, SemanticIDs]:
    """(run dir, config.json, its IDs) of a trained generator run of ``kind``; one clear error otherwise."""
    run = Path(run)
    if not (run / "config.json").is_file() or not (run / "model.safetensors").is_file():
        raise SidrecError(f"{run}: not a trained {name} run (missing config.json / model.safetensors)")
    verify(run)
    conf = read_json(run / "config.json")
    if conf.get("kind") != kind:
        raise SidrecError(f"{run}: is a {conf.get('kind')} run, not a {name} run")
    ids = SemanticIDs(run / "tokens" if (run / "tokens" / "codes.npy").is_file() else conf["tokens"])
    return run, conf, ids
