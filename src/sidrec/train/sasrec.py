"""Train SASRec on a prepared dataset; write metrics, weights and the item-embedding artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from sidrec.config import to_dict
from sidrec.data.dataset import Dataset
from sidrec.eval.evaluate import EvalConfig, evaluate_scorer
from sidrec.models.sasrec import SASRec, SASRecConfig
from sidrec.train.config import SASREC_TRAIN_DEFAULTS  # noqa: F401 (re-exported)
from sidrec.train.loop import TrainConfig, fit
from sidrec.utils import dist
from sidrec.utils.artifacts import write_manifest
from sidrec.utils.log import info as log_info
from sidrec.utils.runinfo import check_resumable, data_info, write_run_info
from sidrec.utils.seeding import pick_device, seed_everything


def sequence_batches(inputs: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    def make(epoch: int):
        order = np.random.default_rng([seed, epoch]).permutation(len(inputs))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            yield torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx])
    return make


def train_sasrec(ds: Dataset, out: str | Path, model_cfg: SASRecConfig, train_cfg: TrainConfig,
                 eval_cfg: EvalConfig | None = None, log=log_info) -> dict:
    """Fit SASRec, select on validation, evaluate test once; returns metrics (also RUN/metrics.json)."""
    out = Path(out)
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    model_cfg = SASRecConfig(**{**to_dict(model_cfg), "n_items": ds.n_items})
    eval_cfg = eval_cfg or EvalConfig(max_history=model_cfg.max_history)

    same = {"kind": "sasrec", "model": to_dict(model_cfg), "dataset_fingerprint": ds.fingerprint}
    if train_cfg.resume:
        check_resumable(out, same)
    if dist.is_main():
        write_run_info(out, kind="sasrec", config={**same, "train": to_dict(train_cfg), "eval": to_dict(eval_cfg)},
                       data=data_info(ds), device=str(device))
    model = SASRec(model_cfg)
    inputs, targets = ds.train_sequences(model_cfg.max_history)
    keep = (targets > 0).any(1)
    inputs, targets = inputs[keep], targets[keep]
    steps = -(-len(inputs) // train_cfg.batch_size)

    def validate(m: SASRec) -> dict:
        return evaluate_scorer(lambda u, h: m.score(h), ds, "valid", eval_cfg, device=device)

    res = fit(model, cfg=train_cfg, run_dir=out, device=device,
              batches=sequence_batches(inputs, targets, train_cfg.batch_size, train_cfg.seed), steps_per_epoch=steps,
              loss_fn=lambda m, b: m.loss(b[0], b[1]), validate=validate, log=log)
    if not dist.is_main():  # rank 0 tests and writes
        return {"model": "sasrec", "rank": dist.rank(), "best_epoch": res.best_epoch}
    model.eval()
    test = evaluate_scorer(lambda u, h: model.score(h), ds, "test", eval_cfg, device=device)
    secs = [h["seconds"] for h in res.history]
    metrics = {"model": "sasrec", "validation": res.best_validation, "test": test, "best_epoch": res.best_epoch,
               "epochs_run": len(res.history), "stopped": res.stopped, "train_seconds": round(res.seconds, 2),
               "seconds_per_epoch": round(float(np.mean(secs)), 3) if secs else None}
    if device.type == "cuda":
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_manifest(out)
    export_item_embeddings(model, out)
    return metrics


def export_item_embeddings(model: SASRec, out: Path) -> None:
    """CF item embeddings artifact: ``item_emb.npy`` (n_items + 1, dim) float32, row 0 = padding."""
    emb = model.item_emb.weight.detach().float().cpu().numpy().astype(np.float32)
    np.save(out / "item_emb.npy", emb)
    (out / "item_emb.json").write_text(json.dumps({"kind": "cf", "model": "sasrec", "shape": list(emb.shape),
                                                   "row0": "padding"}, indent=2))
