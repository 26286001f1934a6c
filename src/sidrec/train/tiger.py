"""TIGER: the T5 generator's trainer (on the shared training stage, train/trainer.py) and its run loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sidrec.config import from_dict, merge
from sidrec.data.dataset import Dataset
from sidrec.decoding.trie import Trie, build_trie
from sidrec.errors import SidrecError
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.config import TRAIN_PRESETS
from sidrec.train.loop import TrainConfig
from sidrec.train.trainer import (PrefixBatches, ValidationLoss, bucket_widths, decode_users,  # noqa: F401
                                  id_sizes, read_run, train_generator, validation_loss)  # (re-exported)
from sidrec.utils.artifacts import load_npy, load_safetensors
from sidrec.utils.log import info as log_info


def tiger_train_config(preset: str = "tiger", **overrides) -> TrainConfig:
    """The training defaults of a preset, then ``overrides`` (None values are ignored)."""
    return merge(TrainConfig, TRAIN_PRESETS.get(preset, TRAIN_PRESETS["tiger"]), overrides)


def build_model(cfg: TIGERConfig, ids: SemanticIDs, item_text: np.ndarray | None = None) -> tuple[TIGER, Trie]:
    """The generator and the trie of ``ids``; a dense head reads the items' text vectors (``item_text``, else
    ``cfg.dense_embeddings`` or the embeddings the tokens were made from)."""
    sizes = id_sizes(ids, cfg.spare_suffixes)
    if cfg.dense_weight > 0 and item_text is None:
        item_text = dense_item_vectors(cfg, ids)
    return TIGER(cfg, Vocab(sizes, cfg.user_tokens), ids.codes, item_text), build_trie(ids.codes, sizes)


def dense_item_vectors(cfg: TIGERConfig, ids: SemanticIDs) -> np.ndarray:
    """(n_items + 1, D) text vectors for the dense head (row = item index); one clear line when there are none."""
    emb = cfg.dense_embeddings or ids.meta.get("embeddings")
    if not emb:
        raise SidrecError(f"{ids.path}: these IDs were not made from text embeddings; the dense head needs "
                          f"some: --set dense_embeddings=EMB, an embeddings folder of the same dataset (`sidrec embed`)")
    path = Path(emb) / "item_emb.npy"
    if not path.is_file():
        raise SidrecError(f"dense_embeddings {emb}: not an embeddings folder (no item_emb.npy; `sidrec embed` writes one)")
    vec = load_npy(path)
    if vec.ndim != 2 or len(vec) != ids.n_items + 1:
        raise SidrecError(f"{path}: {vec.shape[0]} rows, the tokens have {ids.n_items} items (+1 padding row); "
                          f"embed the dataset the tokens were made for")
    return vec.astype(np.float32)


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
    text = None
    if cfg.dense_weight > 0:  # the dense head's item vectors are in the weights file
        text = load_safetensors(run / "model.safetensors")["dense_text"].float().numpy()
    model, trie = build_model(cfg, ids, text)
    model.load_weights(str(run / "model.safetensors"))
    return model.to(device).eval(), trie.to(device), conf
