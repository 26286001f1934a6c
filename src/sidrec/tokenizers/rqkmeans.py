"""RQ-KMeans (as in GRID / OneRec): residual k-means level by level with faiss, no gradient training."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sidrec.errors import SidrecError
from sidrec.tokenizers.base import ItemTokenizer, check_embeddings
from sidrec.utils.log import info as log_info
from sidrec.utils.artifacts import load_npy


def kmeans_pp_init(x: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """k-means++ seeding (faiss itself seeds at random, which merges planted clusters)."""
    rng = np.random.default_rng(seed)
    c = np.empty((k, x.shape[1]), np.float32)
    c[0] = x[rng.integers(len(x))]
    d2 = ((x - c[0]) ** 2).sum(1)
    for j in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        c[j] = x[rng.choice(len(x), p=p)]
        d2 = np.minimum(d2, ((x - c[j]) ** 2).sum(1))
    return c


@dataclass(frozen=True, kw_only=True)
class RQKMeansConfig:
    n_levels: int = 3
    codebook_size: int = 256
    niter: int = 25
    normalize: bool = False  # L2-normalise embeddings first
    collision: Literal["append", "sinkhorn", "sinkhorn-append", "none"] = "append"
    sinkhorn_epsilon: float = 0.003
    sinkhorn_rounds: int = 20
    seed: int = 0


class RQKMeansTokenizer(ItemTokenizer):
    method = "rqkmeans"
    config_cls = RQKMeansConfig

    def fit(self, emb: np.ndarray | None = None, *, cf: np.ndarray | None = None,
            train_mask: np.ndarray | None = None, item_ids: list[str] | None = None, log=log_info) -> RQKMeansTokenizer:
        import faiss

        cfg = self.cfg
        check_embeddings(emb, codebook_size=cfg.codebook_size)
        x = np.ascontiguousarray(emb, dtype=np.float32)
        if cfg.normalize:
            x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        t0 = time.time()
        r = x.copy()
        codes, cents = [], []
        for lvl in range(cfg.n_levels):
            km = faiss.Kmeans(r.shape[1], cfg.codebook_size, niter=cfg.niter, seed=cfg.seed + lvl, verbose=False,
                              min_points_per_centroid=1, max_points_per_centroid=1 << 20)
            init = kmeans_pp_init(r, cfg.codebook_size, seed=cfg.seed + lvl)
            km.train(r, init_centroids=init)
            _, a = km.index.search(r, 1)
            a = a[:, 0].astype(np.int64)
            codes.append(a)
            cents.append(km.centroids.copy())
            last_res = r.copy()
            r = r - km.centroids[a]
        self.fit_seconds_ = time.time() - t0
        self.centroids_ = np.stack(cents)  # (L, N, d)
        self.z_hat_ = x - r
        self.reconstruction_mse_ = float((r ** 2).mean())
        self.history_ = []
        log(f"rqkmeans: {cfg.n_levels} levels in {self.fit_seconds_:.1f}s, residual mse {self.reconstruction_mse_:.5f}")
        self.finalize(np.stack(codes, 1), last_res, self.centroids_[-1])
        return self

    def encode(self, emb: np.ndarray) -> np.ndarray:
        """Base codes (n, L): the nearest centroid of each level, on the residual of the levels before."""
        import faiss

        check_embeddings(emb, codebook_size=0)
        if emb.shape[1] != self.centroids_.shape[2]:
            raise SidrecError(f"embeddings are {emb.shape[1]}-d but this tokenizer was fitted on "
                              f"{self.centroids_.shape[2]}-d ones; embed with the same encoder")
        r = np.ascontiguousarray(emb, dtype=np.float32)
        if self.cfg.normalize:
            r = r / np.linalg.norm(r, axis=1, keepdims=True).clip(1e-12)
        codes = []
        for cents in self.centroids_:
            index = faiss.IndexFlatL2(cents.shape[1])
            index.add(np.ascontiguousarray(cents))
            a = index.search(r, 1)[1][:, 0].astype(np.int64)
            codes.append(a)
            r = r - cents[a]
        return np.stack(codes, 1)

    def _save_weights(self, out: Path) -> None:
        np.save(out / "centroids.npy", self.centroids_)

    def _load_weights(self, path: Path, meta: dict) -> None:
        self.centroids_ = load_npy(path / "centroids.npy")
