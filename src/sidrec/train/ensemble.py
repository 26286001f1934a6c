"""Decode and score several generator runs as one: runs on the same semantic IDs by one beam search over their
averaged per-level log-probabilities (``decoding/ensemble.py``, fuse ``levels``), runs on different IDs of the same
dataset by re-scoring the union of their own beams (``decoding/fusion.py``, fuse ``items``). OUT gets the same
``metrics.json`` / ``test_top.npy`` a single run writes, with the members beside them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from sidrec.data.dataset import load_dataset
from sidrec.data.io import read_json
from sidrec.decoding.ensemble import Ensemble
from sidrec.decoding.fusion import fused_generate
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_lists, write_metrics
from sidrec.train.generator import load_generator
from sidrec.train.trainer import decode_split, decode_users
from sidrec.utils.seeding import pick_device

FUSE = ("auto", "levels", "items")


def evaluate_ensemble(runs: list[str | Path], out: str | Path, *, weights: list[float] | None = None, beam: int = 20,
                      ks: tuple[int, ...] = (5, 10, 20), decode_batch: int = 256, device: str = "auto",
                      split: str = "test", fuse: str = "auto") -> dict:
    """Test metrics of the ensemble of ``runs`` (and of each member alone, from its own metrics.json). ``fuse``:
    ``levels`` (one beam search, runs on the same IDs), ``items`` (each run's own beam, the union re-scored by all;
    runs on any IDs of the same dataset), ``auto``: levels when the runs share their IDs, else items."""
    runs = [Path(r) for r in runs]
    if len(runs) < 2:
        raise SidrecError("an ensemble takes two runs or more")
    if split not in ("valid", "test"):
        raise SidrecError(f"split {split!r}: choose valid or test")
    if beam < max(ks):
        raise SidrecError(f"--beam {beam} is smaller than the largest cut-off {max(ks)}")
    dev = pick_device(device)
    for r in runs:
        if not (r / "config.json").is_file():
            raise SidrecError(f"{r}: not a run directory (missing config.json)")
    if fuse not in FUSE:
        raise SidrecError(f"--fuse {fuse!r}: choose {', '.join(FUSE)}")
    confs = [read_json(r / "config.json") for r in runs]
    for r, c in zip(runs[1:], confs[1:]):
        if c.get("dataset_fingerprint") != confs[0].get("dataset_fingerprint"):
            raise SidrecError(f"{r}: trained on other dataset than {runs[0]}; ensemble runs of the same dataset")
    same_ids = all(c.get("tokens_codes_sha256") == confs[0].get("tokens_codes_sha256") for c in confs[1:])
    if fuse == "auto":
        fuse = "levels" if same_ids else "items"
    if fuse == "levels" and not same_ids:
        r = next(r for r, c in zip(runs[1:], confs[1:]) if c.get("tokens_codes_sha256") != confs[0].get("tokens_codes_sha256"))
        raise SidrecError(f"{r}: trained on other semantic IDs than {runs[0]}; --fuse levels needs runs of the same "
                          f"IDs (--fuse items fuses runs of different IDs)")
    loaded = [load_generator(r, dev) for r in runs]
    ds = load_dataset(confs[0]["dataset"])
    t0 = time.time()
    if fuse == "levels":
        model = Ensemble([m for m, _, _ in loaded], weights, names=[str(r) for r in runs])
        w = model.weights
        top = decode_users(model, loaded[0][1], ds, split, beam=beam, k=max(ks), batch_size=decode_batch,
                           device=dev)
    else:
        w = Ensemble.normalised([m for m, _, _ in loaded], weights)
        top = decode_fused([m for m, _, _ in loaded], [t for _, t, _ in loaded], w, ds, split, beam=beam,
                           k=max(ks), batch_size=decode_batch, device=dev)
    seconds = time.time() - t0
    m = evaluate_lists(top, ds, split, EvalConfig(ks=ks))
    members = []
    for r in runs:
        own = read_json(r / "metrics.json").get(split) if (r / "metrics.json").is_file() else None
        members.append({"run": str(r.resolve()), split: own})
    res = {split: m, "members": members, "weights": w, "fuse": fuse, "beam": beam,
           f"{split}_decode_seconds": round(seconds, 1),
           f"{split}_decode_users_per_second": round(ds.n_users / max(seconds, 1e-9), 1)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out / "metrics.json", res)
    np.save(out / f"{split}_top.npy", top)
    return res


def decode_fused(models: list, tries: list, weights: list[float], ds, split: str, *, beam: int, k: int,
                 batch_size: int, device) -> np.ndarray:
    """Top-k lists (n_users, k) of the item-level fusion (``decoding/fusion.py``) for a split's users
    (``decode_split``); each member reads its own history length."""
    def decode(u, h, _):
        return fused_generate(models, tries, weights, u, [h[:, max(0, h.shape[1] - m.cfg.max_history):]
                                                           for m in models], beam=beam, k=k)[0]
    return decode_split(decode, ds, split, max_history=max(m.cfg.max_history for m in models), k=k,
                        batch_size=batch_size, device=device, desc=f"decode {split} (fused)")
