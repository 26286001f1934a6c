"""Train a TIGER generator on a dataset + semantic IDs; validate by constrained decoding, test once."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sidrec.config import from_dict, merge, to_dict
from sidrec.data.dataset import Dataset
from sidrec.decoding.beam import generate
from sidrec.decoding.trie import Trie
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_lists
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.loop import TrainConfig, fit
from sidrec.utils.progress import progress
from sidrec.utils.runinfo import data_info, write_run_info
from sidrec.utils.seeding import pick_device, seed_everything

TRAIN_PRESETS = {
    "tiger": dict(epochs=200, batch_size=256, learning_rate=1e-3, schedule="cosine", warmup_steps=1000,
                  weight_decay=0.0, patience=10, eval_every=2, lr_scale="sqrt"),
    "small": dict(epochs=30, batch_size=256, learning_rate=3e-3, schedule="cosine", warmup_steps=100,
                  weight_decay=0.0, patience=5, eval_every=2, lr_scale="sqrt"),
    "strong": dict(epochs=200, batch_size=256, learning_rate=3e-4, schedule="cosine", warmup_steps=10_000,
                   weight_decay=0.035, patience=10, eval_every=2, lr_scale="sqrt"),
}


def tiger_train_config(preset: str = "tiger", **overrides) -> TrainConfig:
    """The training defaults of a preset, then ``overrides`` (None values are ignored)."""
    return merge(TrainConfig, TRAIN_PRESETS.get(preset, TRAIN_PRESETS["tiger"]), overrides)


def build_model(cfg: TIGERConfig, ids: SemanticIDs) -> tuple[TIGER, Trie]:
    vocab = Vocab(ids.level_sizes, cfg.user_tokens)
    return TIGER(cfg, vocab, ids.codes), Trie(ids.codes, ids.level_sizes)


@torch.no_grad()
def decode_users(model: TIGER, trie: Trie, ds: Dataset, split: str, *, beam: int, k: int, batch_size: int,
                 device: torch.device, users: np.ndarray | None = None) -> np.ndarray:
    """Top-k item lists (n_users, k) for the split (rows of users not selected stay -1)."""
    model.eval()
    u_all, hist, _ = ds.eval_inputs(split, model.cfg.max_history)
    rows = np.arange(ds.n_users) if users is None else users
    out = np.full((ds.n_users, k), -1, dtype=np.int64)
    batches = range(0, len(rows), batch_size)
    for s in progress(batches, total=len(batches), desc=f"decode {split}"):
        r = rows[s:s + batch_size]
        items, _ = generate(model, torch.as_tensor(u_all[r], device=device),
                                  torch.as_tensor(hist[r], device=device), trie, beam=beam, k=k)
        out[r] = items.cpu().numpy()
    return out


@torch.no_grad()
def validation_loss(model: TIGER, ds: Dataset, *, batch_size: int, device: torch.device, split: str = "valid") -> float:
    """Mean teacher-forced loss (the training objective) of the split's targets."""
    model.eval()
    u, hist, target = (torch.as_tensor(a, device=device) for a in ds.eval_inputs(split, model.cfg.max_history))
    total = torch.zeros((), device=device)
    for s in range(0, len(target), batch_size):
        b = slice(s, s + batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            total += model(u[b], hist[b], target[b]).float() * len(target[b])
    return total.item() / len(target)


def train_tiger(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg: TIGERConfig,
                train_cfg: TrainConfig | None = None,
                *, beam: int = 20, ks: tuple[int, ...] = (5, 10, 20), valid_users: int = 0,
                decode_batch: int = 256, log=print) -> dict:
    """Fit on every prefix of the training sequences; select on validation NDCG@10 (or loss); test once.

    ``train_cfg`` None = the training preset of ``model_cfg.preset`` (as the CLI does)."""
    out = Path(out)
    if train_cfg is None:
        train_cfg = tiger_train_config(model_cfg.preset)
    if model_cfg.max_history is None:  # the dataset's own history length, as the CLI uses
        model_cfg = replace(model_cfg, max_history=int(ds.stats["config"]["max_history"]))
    ids = SemanticIDs(tokens)
    ids.check_dataset(ds)
    known = {"loss"} | {f"{m}@{k}" for m in ("recall", "ndcg", "mrr") for k in ks}
    if train_cfg.select_metric not in known:  # before any training, not after the first validation
        raise SidrecError(f"selection metric {train_cfg.select_metric!r}: choose loss or one of "
                          f"{', '.join(sorted(known - {'loss'}))}")
    if beam < max(ks):
        raise SidrecError(f"beam {beam} is smaller than the largest K {max(ks)}; use --beam >= K")
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    write_run_info(out, kind="tiger", config={"model": to_dict(model_cfg), "train": to_dict(train_cfg),
                                              "decode": {"beam": beam, "ks": list(ks), "valid_users": valid_users},
                                              "tokens": str(Path(tokens).resolve()),
                                              "tokens_codes_sha256": _sha256(Path(tokens) / "codes.npy"),
                                              "dataset": str(Path(ds.path).resolve()),
                                              "dataset_fingerprint": ds.fingerprint},
                   data=data_info(ds), device=str(device))
    _bundle(out, ids, ds)
    model, trie = build_model(model_cfg, ids)
    trie.to(device)
    hist, target = ds.train_prefix_samples(model_cfg.max_history)
    users = np.repeat(np.arange(1, ds.n_users + 1), np.clip(np.diff(ds.offsets) - 3, 0, None))
    n = len(target)
    steps = -(-n // train_cfg.batch_size)
    log(f"tiger: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {n:,} training samples, "
        f"IDs of length {ids.codes.shape[1]}, vocab {model.vocab.size}")

    # training samples live on the device; a batch is a gather there (same order on every device)
    d_users, d_hist, d_target = (torch.as_tensor(a, device=device) for a in (users, hist, target))

    def batches(epoch: int):
        order = torch.from_numpy(np.random.default_rng([train_cfg.seed, epoch]).permutation(n)).to(device)
        for s in range(0, n, train_cfg.batch_size):
            i = order[s:s + train_cfg.batch_size]
            yield d_users[i], d_hist[i], d_target[i]

    vrows = None
    if valid_users and valid_users < ds.n_users:
        vrows = np.sort(np.random.default_rng(train_cfg.seed).choice(ds.n_users, valid_users, replace=False))
    ecfg = EvalConfig(ks=ks, max_history=model_cfg.max_history)

    def validate(m: TIGER) -> dict:
        if train_cfg.select_metric == "loss":  # LETTER's signal: teacher-forced loss, no decoding
            return {"split": "valid", "loss": validation_loss(m, ds, batch_size=train_cfg.batch_size, device=device)}
        ranked = decode_users(m, trie, ds, "valid", beam=beam, k=max(ks), batch_size=decode_batch, device=device,
                              users=vrows)
        if vrows is not None:  # score only the sampled users (recorded in the results)
            sub = ranked[vrows]
            _, _, tg = ds.eval_inputs("valid", 1)
            from sidrec.eval.metrics import metrics_from_ranks, ranks_from_lists

            return {"split": "valid", "users": len(vrows),
                    **metrics_from_ranks(ranks_from_lists(sub, tg[vrows]), ks)}
        return evaluate_lists(ranked, ds, "valid", ecfg)

    t0 = time.time()
    res = fit(model, cfg=train_cfg, run_dir=out, device=device, batches=batches, steps_per_epoch=steps,
              loss_fn=lambda m, b: m(*b), validate=validate, log=log, compilable=True)
    train_seconds = time.time() - t0
    t1 = time.time()
    ranked = decode_users(model, trie, ds, "test", beam=beam, k=max(ks), batch_size=decode_batch, device=device)
    decode_seconds = time.time() - t1
    test = evaluate_lists(ranked, ds, "test", ecfg, beam=beam, constrained=True)
    secs = [h["seconds"] for h in res.history]
    metrics = {"model": "tiger", "validation": res.best_validation, "test": test, "best_epoch": res.best_epoch,
               "epochs_run": len(res.history), "train_seconds": round(train_seconds, 2),
               "samples_per_second": round(n * len(secs) / max(1e-9, sum(secs)), 1),
               "test_decode_users_per_second": round(ds.n_users / decode_seconds, 1),
               "tokens": str(tokens), "valid_users": len(vrows) if vrows is not None else ds.n_users}
    if device.type == "cuda":
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    np.save(out / "test_top.npy", ranked)
    return metrics


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle(out: Path, ids: SemanticIDs, ds: Dataset) -> None:
    """Copy what serving needs into the run: RUN/tokens (codes.npy, tokenizer.json) and RUN/items.parquet
    (item_id, title, text), so the run works after its tokens and dataset directories move."""
    import shutil

    (out / "tokens").mkdir(parents=True, exist_ok=True)
    for f in ("codes.npy", "tokenizer.json"):
        if (ids.path / f).resolve() != (out / "tokens" / f).resolve():
            shutil.copyfile(ids.path / f, out / "tokens" / f)
    cols = [c for c in ("item_id", "title", "text") if c in ds.items.columns]
    ds.items[cols].to_parquet(out / "items.parquet", index=False)


def load_tiger(run: str | Path, device: torch.device | str = "cpu") -> tuple[TIGER, Trie, dict]:
    run = Path(run)
    if not (run / "config.json").is_file() or not (run / "model.safetensors").is_file():
        raise SidrecError(f"{run}: not a trained TIGER run (missing config.json / model.safetensors)")
    conf = json.loads((run / "config.json").read_text())
    if conf.get("kind") != "tiger":
        raise SidrecError(f"{run}: is a {conf.get('kind')} run, not a TIGER run")
    cfg = from_dict(TIGERConfig, conf["model"])
    ids = SemanticIDs(run / "tokens" if (run / "tokens" / "codes.npy").is_file() else conf["tokens"])
    model, trie = build_model(cfg, ids)
    model.load_weights(str(run / "model.safetensors"))
    return model.to(device).eval(), trie.to(device), conf
