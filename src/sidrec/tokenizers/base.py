"""What every tokenizer shares: validation, collision handling, save/load of the codes artifact.

Artifact (a tokens directory TOK): ``codes.npy`` (n_items, L') int64 with row i = item_idx i + 1 and
the last column the collision position when ``collision == 'append'``; ``codes.parquet`` (item_idx,
item_id, c0..); ``tokenizer.json`` (method, config, levels, codebook sizes); method weights;
``report.json`` + PNG plots (see report.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.errors import SidrecError
from sidrec.tokenizers.collisions import append_position, collision_stats, sinkhorn_reassign


def check_embeddings(emb: np.ndarray, *, codebook_size: int, name: str = "embeddings") -> None:
    if emb.ndim != 2:
        raise SidrecError(f"{name}: expected a 2-d matrix, got shape {emb.shape}")
    if not np.isfinite(emb).all():
        raise SidrecError(f"{name}: row {int(np.argwhere(~np.isfinite(emb))[0][0]) + 1} holds NaN or infinite values")
    if codebook_size > len(emb):
        raise SidrecError(f"{name}: codebook size {codebook_size} is larger than the catalog ({len(emb)} items); "
                          f"use a smaller --codebook-size")


class ItemTokenizer:
    """Base: subclasses implement ``_fit`` returning base codes (n, L) and set ``z_hat_`` when they have one."""

    method = "base"

    def __init__(self, cfg: Any):
        self.cfg = cfg  # no work in __init__

    # learned state: codes_ (n, L) base codes, sids_ (n, L') unique IDs, z_hat_, reconstruction_mse_
    def finalize(self, codes: np.ndarray, last_residual: np.ndarray | None = None,
                 last_codebook: np.ndarray | None = None) -> None:
        self.codes_ = codes.astype(np.int64)
        self.collisions_before_ = collision_stats(self.codes_)
        mode = getattr(self.cfg, "collision", "append")
        self.sinkhorn_rounds_ = 0
        if mode == "sinkhorn" and last_residual is not None:
            sids, self.sinkhorn_rounds_ = sinkhorn_reassign(
                self.codes_, last_residual, last_codebook, epsilon=self.cfg.sinkhorn_epsilon,
                rounds=self.cfg.sinkhorn_rounds)
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
        import pandas as pd

        from sidrec.config import to_dict

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "codes.npy", self.sids_)
        np.save(out / "base_codes.npy", self.codes_)
        df = pd.DataFrame(self.sids_, columns=[f"c{j}" for j in range(self.sids_.shape[1])])
        df.insert(0, "item_idx", np.arange(1, len(df) + 1))
        if item_ids is not None:
            df.insert(1, "item_id", item_ids)
        df.to_parquet(out / "codes.parquet", index=False)
        if getattr(self, "z_hat_", None) is not None:
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
        self.meta = json.loads((p / "tokenizer.json").read_text())
        self.codes = np.load(p / "codes.npy").astype(np.int64)  # (n_items, L')
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
