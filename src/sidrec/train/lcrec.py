"""Train an LC-Rec-style causal-LM generator on a dataset + semantic IDs (the shared generator stage)."""

from __future__ import annotations

from pathlib import Path

import torch

from sidrec.config import from_dict
from sidrec.data.dataset import Dataset
from sidrec.decoding.trie import build_trie
from sidrec.models.lcrec import LCRec, LCRecConfig
from sidrec.models.tiger import Vocab
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.loop import TrainConfig
from sidrec.train.tiger import id_sizes, read_run, train_generator

SPARE_SUFFIXES = 16
TRAIN_DEFAULTS = dict(epochs=200, batch_size=256, learning_rate=1e-3, schedule="cosine", warmup_ratio=0.01,
                      weight_decay=0.01, patience=20, eval_every=1, select_metric="loss", lr_scale="none")


def build_lcrec(cfg: LCRecConfig, ids: SemanticIDs):
    sizes = id_sizes(ids, SPARE_SUFFIXES)
    return LCRec(cfg, Vocab(sizes), ids.codes), build_trie(ids.codes, sizes)


def train_lcrec(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg: LCRecConfig,
                train_cfg: TrainConfig | None = None, **kw) -> dict:
    """Same stage as TIGER's (``train_generator``): every training prefix, length buckets, early stopping,
    test decoded once with the shared trie-constrained beam search."""
    from sidrec.config import merge

    train_cfg = train_cfg or merge(TrainConfig, TRAIN_DEFAULTS)
    return train_generator(ds, tokens, out, model_cfg, train_cfg, kind="lcrec", build=build_lcrec,
                           compilable=False, **kw)


def load_lcrec(run: str | Path, device: torch.device | str = "cpu"):
    from safetensors.torch import load_model

    run, conf, ids = read_run(run, "lcrec", "LC-Rec")
    model, trie = build_lcrec(from_dict(LCRecConfig, conf["model"]), ids)
    load_model(model, str(run / "model.safetensors"), device=str(device))
    return model.to(device).eval(), trie.to(device), conf
