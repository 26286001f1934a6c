"""TIGER: the T5 generator's trainer (on the shared training stage, train/trainer.py) and its run loader."""

from __future__ import annotations

from pathlib import Path

import torch

from sidrec.config import from_dict, merge
from sidrec.data.dataset import Dataset
from sidrec.decoding.trie import Trie, build_trie
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.config import TRAIN_PRESETS
from sidrec.train.loop import TrainConfig
from sidrec.train.trainer import (PrefixBatches, ValidationLoss, bucket_widths, decode_users,  # noqa: F401
                                  id_sizes, read_run, train_generator, validation_loss)  # (re-exported)
from sidrec.utils.log import info as log_info


def tiger_train_config(preset: str = "tiger", **overrides) -> TrainConfig:
    """The training defaults of a preset, then ``overrides`` (None values are ignored)."""
    return merge(TrainConfig, TRAIN_PRESETS.get(preset, TRAIN_PRESETS["tiger"]), overrides)


def build_model(cfg: TIGERConfig, ids: SemanticIDs) -> tuple[TIGER, Trie]:
    """The generator and the trie of ``ids``."""
    sizes = id_sizes(ids, cfg.spare_suffixes)
    return TIGER(cfg, Vocab(sizes, cfg.user_tokens), ids.codes), build_trie(ids.codes, sizes)


def train_tiger(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg: TIGERConfig,
                train_cfg: TrainConfig | None = None,
                *, beam: int = 20, ks: tuple[int, ...] = (5, 10, 20), valid_users: int = 0,
                decode_batch: int = 256, log=log_info) -> dict:
    """Fit on every prefix of the training sequences; select on validation NDCG@10 (or loss); test once.

    ``train_cfg`` None = the training preset of ``model_cfg.preset`` (as the CLI does)."""
    if train_cfg is None:
        train_cfg = tiger_train_config(model_cfg.preset)
    return train_generator(ds, tokens, out, model_cfg, train_cfg, kind="tiger", build=build_model, compilable=True,
                           beam=beam, ks=ks, valid_users=valid_users, decode_batch=decode_batch, log=log)


def load_tiger(run: str | Path, device: torch.device | str = "cpu") -> tuple[TIGER, Trie, dict]:
    run, conf, ids = read_run(run, "tiger", "TIGER")
    cfg = from_dict(TIGERConfig, {"spare_suffixes": 0, **conf["model"]})  # runs before spare suffixes had none
    model, trie = build_model(cfg, ids)
    model.load_weights(str(run / "model.safetensors"))
    return model.to(device).eval(), trie.to(device), conf
