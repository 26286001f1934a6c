"""Decode and score several generator runs as one (``decoding/ensemble.py``): the members are checked to share the
semantic IDs and the dataset, the test split is decoded once by the ensemble's beam search, and OUT gets the same
``metrics.json`` / ``test_top.npy`` a single run writes, with the members beside them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sidrec.data.dataset import load_dataset
from sidrec.data.io import read_json
from sidrec.decoding.ensemble import Ensemble
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_lists, write_metrics
from sidrec.train.generator import load_generator
from sidrec.train.trainer import decode_users
from sidrec.utils.seeding import pick_device


def evaluate_ensemble(runs: list[str | Path], out: str | Path, *, weights: list[float] | None = None, beam: int = 20,
                      ks: tuple[int, ...] = (5, 10, 20), decode_batch: int = 256, device: str = "auto",
                      split: str = "test") -> dict:
    """Test metrics of the ensemble of ``runs`` (and of each member alone, from its own metrics.json)."""
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
    confs = [read_json(r / "config.json") for r in runs]
    for key, what in (("tokens_codes_sha256", "semantic IDs"), ("dataset_fingerprint", "dataset")):
        for r, c in zip(runs[1:], confs[1:]):
            if c.get(key) != confs[0].get(key):
                raise SidrecError(f"{r}: trained on other {what} than {runs[0]}; ensemble runs of the same "
                                  f"{what}")
    loaded = [load_generator(r, dev) for r in runs]
    model = Ensemble([m for m, _, _ in loaded], weights, names=[str(r) for r in runs])
    ds = load_dataset(confs[0]["dataset"])
    t0 = time.time()
    top = decode_users(model, loaded[0][1], ds, split, beam=beam, k=max(ks), batch_size=decode_batch, device=dev)
    seconds = time.time() - t0
    m = evaluate_lists(top, ds, split, EvalConfig(ks=ks))
    members = []
    for r in runs:
        own = read_json(r / "metrics.json").get(split) if (r / "metrics.json").is_file() else None
        members.append({"run": str(r.resolve()), split: own})
    res = {split: m, "members": members, "weights": model.weights, "beam": beam,
           f"{split}_decode_seconds": round(seconds, 1),
           f"{split}_decode_users_per_second": round(ds.n_users / max(seconds, 1e-9), 1)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics(out / "metrics.json", res)
    np.save(out / f"{split}_top.npy", top)
    return res
