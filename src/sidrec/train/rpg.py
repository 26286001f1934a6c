"""RPG: the parallel generator's trainer (on the shared training stage, train/trainer.py) and its run loader."""

from __future__ import annotations

from pathlib import Path

import torch

from sidrec.config import from_dict, merge
from sidrec.data.dataset import Dataset
from sidrec.decoding.trie import Trie, build_trie
from sidrec.models.rpg import RPG, RPGConfig
from sidrec.models.tiger import Vocab
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.config import delta
from sidrec.train.loop import TrainConfig
from sidrec.train.trainer import id_sizes, read_run, train_generator
from sidrec.utils.log import info as log_info

# Our defaults (RPG's README recipe for Beauty: lr 0.01, temperature 0.03, 32 codebooks): AdamW at 1e-3 (3e-3
# diverged after 5 epochs on Beauty), 1,000 warm-up steps, cosine decay; selection on the validation NDCG@10,
# which costs one forward pass per user.
RPG_TRAIN_DEFAULTS = delta(epochs=200, batch_size=256, learning_rate=1e-3, schedule="cosine", warmup_steps=1000,
                           weight_decay=0.0, patience=10, eval_every=1, lr_scale="none")


def build_rpg(cfg: RPGConfig, ids: SemanticIDs) -> tuple[RPG, Trie]:
    """The generator and the trie of ``ids`` (the trie serves sampling; ranking is exact without it)."""
    sizes = id_sizes(ids, cfg.spare_suffixes)
    return RPG(cfg, Vocab(sizes), ids.codes), build_trie(ids.codes, sizes)


def train_rpg(ds: Dataset, tokens: str | Path, out: str | Path, model_cfg: RPGConfig,
              train_cfg: TrainConfig | None = None, *, beam: int = 20, ks: tuple[int, ...] = (5, 10, 20),
              valid_users: int = 0, decode_batch: int = 256, log=log_info) -> dict:
    """Fit on every prefix of the training sequences; select on validation NDCG@10; test once (exact ranking)."""
    train_cfg = train_cfg or merge(TrainConfig, RPG_TRAIN_DEFAULTS, {})
    return train_generator(ds, tokens, out, model_cfg, train_cfg, kind="rpg", build=build_rpg, compilable=True,
                           beam=beam, ks=ks, valid_users=valid_users, decode_batch=decode_batch, log=log)


def load_rpg(run: str | Path, device: torch.device | str = "cpu") -> tuple[RPG, Trie, dict]:
    run, conf, ids = read_run(run, "rpg", "RPG")
    model, trie = build_rpg(from_dict(RPGConfig, conf["model"]), ids)
    model.load_weights(str(run / "model.safetensors"))
    return model.to(device).eval(), trie.to(device), conf
