"""What every tokenizer shares: validation, collision handling, save/load of the codes artifact.

Artifact (a tokens directory TOK): ``codes.npy`` (n_items, L') int64 with row i = item_idx i + 1 and
the last column the collision position when ``collision == 'append'``; ``codes.parquet`` (item_idx,
item_id, c0..); ``tokenizer.json`` (method, config, levels, codebook sizes); method weights;
``report.json`` + PNG plots (see report.py).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sidrec.config import from_dict, to_dict
from sidrec.errors import SidrecError
from sidrec.tokenizers.collisions import append_position, collision_stats, extend_ids, sinkhorn_reassign
from sidrec.utils.artifacts import load_npy, read_json, verify
from sidrec.utils.log import info as log_info

APPENDED = ("append", "sinkhorn-append")  # collision modes whose IDs end with a suffix position (unique IDs)


def check_embeddings(emb: np.ndarray, *, codebook_size: int, name: str = "embeddings") -> None:
    if emb.ndim != 2:
        raise SidrecError(f"{name}: expected a 2-d matrix, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise SidrecError(f"{name}: row {int(np.argwhere(~np.isfinite(emb))[0][0]) + 1} holds NaN or infinite values")
    if codebook_size > len(emb):
        raise SidrecError(f"{name}: codebook size {codebook_size} is larger than the catalog ({len(emb)} items); "
                          f"use a smaller --codebook-size")


class ItemTokenizer(ABC):
    """The tokenizer contract, the same for every method (rqvae, letter, rqkmeans, opq, published):

    - ``fit(emb, *, cf=None, train_mask=None, item_ids=None, log=log_info) -> self``: learn from the catalog;
      a method reads the inputs it ``needs`` (``embeddings``, ``cf``, ``item_ids``) and ignores the others;
      it ends with ``finalize(base_codes)``, which sets ``codes_`` (n, L) and the unique IDs ``sids_``;
    - ``encode(emb) -> (n, L)`` base codes of any items, unseen ones included (cold start); methods that
      cannot (published IDs) raise a one-line ``SidrecError``;
    - ``new_ids(base_codes) -> (n, L')``: unique IDs for new items next to the fitted catalog's;
    - ``save(TOK, item_ids)`` writes the tokens directory; ``ItemTokenizer.load(TOK)`` (any method, through
      ``registry.load_tokenizer``) restores a fitted tokenizer that can ``encode``.
    Subclasses set ``method`` and ``config_cls`` and implement ``fit``, ``encode`` (when they can),
    ``_save_weights`` / ``_load_weights``."""

    method = "base"
    config_cls: type = object
    needs: tuple[str, ...] = ("embeddings",)
    # fit statistics every report reads (declared here; a method sets the ones it has)
    reconstruction_mse_: float | None = None
    fit_seconds_: float = 0.0
    recluster_seconds_: float = 0.0  # LETTER: constrained k-means of the codebooks
    reseeded_: int = 0  # dead codes re-seeded (RQ-VAE / LETTER)
    epochs_run_: int | None = None
    sinkhorn_rounds_: int = 0
    history_: tuple = ()  # per-check records of a trained tokenizer
    z_hat_: np.ndarray | None = None

    def __init__(self, cfg: Any):
        self.cfg = cfg  # no work in __init__

    @abstractmethod
    def fit(self, emb: np.ndarray | None = None, *, cf: np.ndarray | None = None,
            train_mask: np.ndarray | None = None, item_ids: list[str] | None = None, log=log_info) -> ItemTokenizer:
        """Learn from the catalog and end with ``finalize(base_codes)``; each method implements it."""

    def encode(self, emb: np.ndarray) -> np.ndarray:
        raise SidrecError(f"{self.method} tokens cannot encode new items; use rqvae, letter, rqkmeans or opq")

    def new_ids(self, base_codes: np.ndarray) -> np.ndarray:
        """Unique IDs for new items (n, L) next to the fitted ones: with an appended collision position
        (``APPENDED`` modes), the suffix continues after the largest one already used by the same code prefix
        (training's rule)."""
        mode = getattr(self.cfg, "collision", "append")
        if mode not in APPENDED:
            raise SidrecError(f"new items need collision handling 'append' or 'sinkhorn-append' (an appended "
                              f"position; this tokenizer used {mode!r})")
        return extend_ids(self.sids_, np.asarray(base_codes, dtype=np.int64))

    @classmethod
    def load(cls, path: str | Path) -> ItemTokenizer:
        """A fitted tokenizer from its tokens directory (codes, IDs, config and weights)."""
        p = Path(path)
        ids = SemanticIDs(p)
        if ids.meta.get("method") != cls.method:
            raise SidrecError(f"{p}: holds {ids.meta.get('method')} tokens, not {cls.method}")
        tok = cls(from_dict(cls.config_cls, ids.meta["config"]))
        tok.sids_ = ids.codes
        levels = int(ids.meta["levels"])
        tok.codes_ = load_npy(p / "base_codes.npy") if (p / "base_codes.npy").is_file() else ids.codes[:, :levels]
        tok._load_weights(p, ids.meta)
        return tok

    def _load_weights(self, path: Path, meta: dict) -> None:
        pass

    # learned state: codes_ (n, L) base codes, sids_ (n, L') unique IDs, z_hat_, reconstruction_mse_
    def finalize(self, codes: np.ndarray, last_residual: np.ndarray | None = None,
                 last_codebook: np.ndarray | None = None) -> None:
        self.codes_ = codes.astype(np.int64)
        self.collisions_before_ = collision_stats(self.codes_)
        mode = getattr(self.cfg, "collision", "append")
        self.sinkhorn_rounds_ = 0
        if mode in ("sinkhorn", "sinkhorn-append") and last_residual is not None:
            sids, self.sinkhorn_rounds_ = sinkhorn_reassign(
                self.codes_, last_residual, last_codebook, epsilon=self.cfg.sinkhorn_epsilon,
                rounds=self.cfg.sinkhorn_rounds)
            if mode == "sinkhorn-append":  # balanced last codes, then a suffix for the few collisions left
                sids = append_position(sids)
        elif mode == "none":
            sids = self.codes_
        else:
            sids = append_position(self.codes_)
        self.sids_ = sids
        self.collisions_after_ = collision_stats(sids)

    @property
    def level_sizes(self) -> list[int]:
        """Vocabulary size of each position of the final IDs (collision position included)."""
        return [int(self.sids_[:, j].max()) + 1 if j >= len(self.base_sizes) else self.base_sizes[j]
                for j in range(self.sids_.shape[1])]

    @property
    def base_sizes(self) -> list[int]:
        return [self.cfg.codebook_size] * self.codes_.shape[1]

    def save(self, out: str | Path, item_ids: list[str] | None = None) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "codes.npy", self.sids_)
        np.save(out / "base_codes.npy", self.codes_)
        df = pd.DataFrame(self.sids_, columns=[f"c{j}" for j in range(self.sids_.shape[1])])
        df.insert(0, "item_idx", np.arange(1, len(df) + 1))
        if item_ids is not None:
            df.insert(1, "item_id", item_ids)
        df.to_parquet(out / "codes.parquet", index=False)
        if self.z_hat_ is not None:
            np.save(out / "z_hat.npy", self.z_hat_.astype(np.float32))
        meta = {"method": self.method, "config": to_dict(self.cfg), "n_items": len(self.sids_),
                "levels": int(self.codes_.shape[1]), "id_length": int(self.sids_.shape[1]),
                "level_sizes": self.level_sizes, "codebook_size": int(self.base_sizes[0])}
        (out / "tokenizer.json").write_text(json.dumps(meta, indent=2))
        self._save_weights(out)

    def _save_weights(self, out: Path) -> None:
        pass


class SemanticIDs:
    """A loaded tokens directory: the unique ID of every item, as the generator consumes it."""

    def __init__(self, path: str | Path):
        p = Path(path)
        if not (p / "codes.npy").is_file() or not (p / "tokenizer.json").is_file():
            raise SidrecError(f"{p}: not a tokens directory (missing codes.npy / tokenizer.json); run `sidrec tokenize`")
        self.path = p
        verify(p)
        self.meta = read_json(p / "tokenizer.json")
        self.codes = load_npy(p / "codes.npy").astype(np.int64)  # (n_items, L')
        self.level_sizes = list(self.meta["level_sizes"])

    @property
    def n_items(self) -> int:
        return len(self.codes)

    def check_dataset(self, ds) -> None:
        if self.n_items != ds.n_items:
            raise SidrecError(f"{self.path}: tokens are for {self.n_items} items but dataset {ds.path} has "
                              f"{ds.n_items}; tokenize this dataset first")
        fp = self.meta.get("dataset_fingerprint")
        if fp and ds.fingerprint and fp != ds.fingerprint:
            raise SidrecError(f"{self.path}: tokens were made for another dataset (fingerprint {fp} != {ds.fingerprint})")
