"""Train an LC-Rec-style causal-LM generator on a dataset + semantic IDs (the shared generator stage)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from sidrec.config import from_dict, merge
from sidrec.data.dataset import Dataset
from sidrec.decoding.trie import build_trie
from sidrec.errors import SidrecError
from sidrec.models.lcrec import LCRec, LCRecConfig
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.config import LCREC_TRAIN_DEFAULTS as TRAIN_DEFAULTS
from sidrec.train.loop import TrainConfig, load_weights
from sidrec.train.trainer import id_sizes, read_run, train_generator
from sidrec.utils import dist
from sidrec.utils.cache import persistent_compile_caches
from sidrec.utils.log import info as log_info
from sidrec.utils.seeding import pick_device

SPARE_SUFFIXES = 16


def build_lcrec(cfg: LCRecConfig, ids: SemanticIDs, item_text=None, compile_layers: bool = False, log=lambda s: None):
    sizes = id_sizes(ids, SPARE_SUFFIXES)
    model = LCRec(cfg, sizes, ids.codes, item_text)
    if compile_layers and not cfg.gradient_checkpointing and not (dist.world() > 1 and model.shardable):
        persistent_compile_caches()
        model.compile_layers(log=log)
    return model, build_trie(ids.codes, sizes)


def item_text(ds: Dataset) -> tuple[list[str], list[str]] | None:
    """(texts, titles) of items 1..n for the alignment tasks; None when items.parquet has no text."""
    items = ds.items.sort_values("item_idx")
    cols = [c for c in ("text", "title") if c in items.columns]
    if not cols:
        return None
    text = items[cols[0]].fillna("").astype(str).tolist()
    title = items[cols[-1]].fillna("").astype(str).tolist()
    return text, title


def train_lcrec(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg: LCRecConfig,
                train_cfg: TrainConfig | None = None, **kw) -> dict:
    """Same stage as TIGER's (``train_generator``): every training prefix, length buckets, early stopping,
    test decoded once with the shared trie-constrained beam search. With ``align_ratio`` > 0 the item <->
    ID alignment tasks run on the dataset's item text."""
    train_cfg = train_cfg or merge(TrainConfig, TRAIN_DEFAULTS)
    text = item_text(ds) if model_cfg.align_ratio > 0 else None
    # compiled by decoder layer (regional compilation: one layer's graph serves all of them, instead of a whole-model
    # graph per history width, which did not finish warming up in 6 minutes on an H100); default on CUDA
    layers = bool(train_cfg.compile) or (train_cfg.compile is None and pick_device(train_cfg.device).type == "cuda")
    return train_generator(ds, tokens, out, model_cfg, train_cfg, kind="lcrec",
                           build=partial(build_lcrec, item_text=text, compile_layers=layers,
                                         log=kw.get("log", log_info)),
                           compilable=False, **kw)


def load_lcrec(run: str | Path, device: torch.device | str = "cpu"):
    run, conf, ids = read_run(run, "lcrec", "LC-Rec")
    cfg = from_dict(LCRecConfig, conf["model"])
    model, trie = build_lcrec(cfg, ids)
    want = conf.get("backbone_fingerprint")
    if want and model.fingerprint != want:
        raise SidrecError(f"{run}: trained on backbone {cfg.model} with fingerprint {want[:12]}..., the one found "
                          f"now is {model.fingerprint[:12]}...")
    load_weights(model, run / "model.safetensors", device)
    return model.to(device).eval(), trie.to(device), conf
