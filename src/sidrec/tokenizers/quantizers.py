"""Residual quantization (Zeghidour et al. 2021; TIGER's RQ-VAE): k-means init per level on residuals,
straight-through estimator, codebook + commitment losses, dead-code re-seeding."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


CHUNK = 1 << 16  # rows per distance computation on whole catalogs: memory stays bounded at 10^6+ items


def nearest(x: torch.Tensor, c: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """Index of the nearest row of ``c`` for every row of ``x``, ``chunk`` rows at a time."""
    return torch.cat([torch.cdist(x[s:s + chunk], c).argmin(1) for s in range(0, len(x), chunk)]) \
        if len(x) else torch.zeros(0, dtype=torch.long, device=x.device)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 25, seed: int = 0, max_points_per_centroid: int = 256) -> torch.Tensor:
    """Lloyd k-means with k-means++ seeding on the device (x (n, d) -> centroids (k, d)). Above
    ``max_points_per_centroid`` * k points it fits on a seeded sample of that size (faiss's rule), so a
    million-item catalog costs what 65k items cost at k = 256."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    if max_points_per_centroid and len(x) > max_points_per_centroid * k:
        x = x[torch.randperm(len(x), generator=g)[: max_points_per_centroid * k].to(x.device)]
    c = x[torch.randint(len(x), (1,), generator=g).to(x.device)].clone()
    d2 = torch.cdist(x, c).squeeze(1) ** 2  # (n,) squared distance to the nearest chosen centroid
    for _ in range(1, k):  # k-means++: sample proportional to squared distance
        p = (d2 / d2.sum().clamp(min=1e-12)).cpu() if d2.sum() > 0 else torch.full((len(x),), 1 / len(x))
        nxt = x[torch.multinomial(p.double(), 1, generator=g).to(x.device)]
        c = torch.cat([c, nxt])
        d2 = torch.minimum(d2, ((x - nxt) ** 2).sum(1))
    for _ in range(iters):
        assign = nearest(x, c)  # (n,)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        c = torch.where(empty[:, None], c, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            c[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=g).to(x.device)]
    return c


@dataclass
class RQOutput:
    z_q: torch.Tensor  # (B, d) summed quantized vector, straight-through to the input
    codes: torch.Tensor  # (B, L)
    residuals: torch.Tensor  # (B, L, d) input of each level
    chosen: torch.Tensor  # (B, L, d) chosen code vectors
    codebook_loss: torch.Tensor  # (L,) ||sg[r] - e||^2 per level
    commit_loss: torch.Tensor  # (L,) ||r - sg[e]||^2 per level


class ResidualQuantizer(nn.Module):
    def __init__(self, *, n_levels: int, codebook_size: int, dim: int):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(n_levels, codebook_size, dim) * 0.1)  # (L, N, d)

    @property
    def n_levels(self) -> int:
        return self.codebooks.shape[0]

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, seed: int = 0) -> None:
        r = z
        for lvl in range(self.n_levels):
            c = kmeans(r, self.codebooks.shape[1], seed=seed + lvl)
            self.codebooks[lvl].copy_(c)
            r = r - c[nearest(r, c)]

    def forward(self, z: torch.Tensor) -> RQOutput:
        r = z
        codes, res, chosen, cb_l, cm_l = [], [], [], [], []
        for lvl in range(self.n_levels):
            cb = self.codebooks[lvl]  # (N, d)
            idx = torch.cdist(r.detach(), cb.detach()).argmin(1)  # (B,)
            e = cb[idx]
            res.append(r)
            chosen.append(e)
            codes.append(idx)
            cb_l.append(F.mse_loss(e, r.detach()))
            cm_l.append(F.mse_loss(r, e.detach()))
            r = r - e.detach()  # the next level quantises what is left
        z_hat = torch.stack(chosen, 1).sum(1)
        z_q = z + (z_hat - z).detach()  # straight-through estimator
        return RQOutput(z_q, torch.stack(codes, 1), torch.stack(res, 1), torch.stack(chosen, 1),
                        torch.stack(cb_l), torch.stack(cm_l))

    @torch.no_grad()
    def reseed(self, usage: torch.Tensor, residuals: torch.Tensor, seed: int) -> int:
        """Replace codes with zero usage by random residuals of their level; returns how many."""
        g = torch.Generator(device="cpu").manual_seed(seed)
        n = 0
        for lvl in range(self.n_levels):
            dead = (usage[lvl] == 0).nonzero().flatten()
            if len(dead):
                pick = torch.randint(len(residuals), (len(dead),), generator=g).to(residuals.device)
                self.codebooks[lvl, dead] = residuals[pick, lvl] + 1e-3 * torch.randn(
                    len(dead), residuals.shape[-1], generator=g).to(residuals.device)
                n += len(dead)
        return n
