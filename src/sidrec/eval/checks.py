"""Checks of a tokenizer that need a trained model (LETTER's ranking experiment)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.eval.evaluate import EvalConfig, evaluate_scorer
from sidrec.models.sasrec import load_sasrec


def ranking_check(z_hat: np.ndarray, sasrec_run: str | Path, ds, device: str = "cpu") -> dict | None:
    """LETTER's ranking experiment: SASRec with its item embeddings replaced by the quantized ones.

    None (no check) when ``sasrec_run`` is not a whole SASRec run (an embeddings file, or a run folder that kept
    only ``item_emb.npy``): the CF embeddings are enough to fit LETTER, the check also needs the model."""
    run = Path(sasrec_run)
    if not (run / "model.safetensors").is_file() or not (run / "config.json").is_file():
        return None
    model = load_sasrec(sasrec_run, device)
    if model.item_emb.weight.shape[1] != z_hat.shape[1]:
        return None
    with torch.no_grad():
        model.item_emb.weight[1:] = torch.as_tensor(z_hat, device=model.item_emb.weight.device)
    cfg = EvalConfig(ks=(5, 10, 20), max_history=model.cfg.max_history)
    m = evaluate_scorer(lambda u, h: model.score(h), ds, "test", cfg, device=device)
    return {k: v for k, v in m.items() if k.startswith(("recall", "ndcg"))}
