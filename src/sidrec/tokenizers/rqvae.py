"""RQ-VAE tokenizer (TIGER, Rajput et al. 2023), and LETTER (Wang et al. 2024) when its weights are set.

MLP encoder -> residual quantizer (L levels x N codes) -> mirrored MLP decoder. Loss: reconstruction
+ per level (codebook + mu * commitment), summed (TIGER) or averaged (LETTER) over levels, + alpha CF
+ beta diversity (LETTER). Full-batch training on the device when ``batch_size == 0``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sidrec.errors import SidrecError
from sidrec.tokenizers.base import ItemTokenizer, check_embeddings
from sidrec.tokenizers.letter import CodebookClusters, cf_loss, diversity_loss
from sidrec.tokenizers.quantizers import ResidualQuantizer
from sidrec.train.progress import progress


@dataclass(frozen=True, kw_only=True)
class RQVAEConfig:
    hidden: tuple[int, ...] = (512, 256, 128)  # encoder widths between input and code_dim (decoder mirrors)
    code_dim: int = 32
    n_levels: int = 3
    codebook_size: int = 256
    commitment: float = 0.25  # mu: weight of ||r - sg[e]||^2
    level_reduce: Literal["sum", "mean"] = "sum"  # TIGER sums level losses, LETTER averages them
    epochs: int = 2000
    batch_size: int = 0  # 0 = full batch (whole catalog per step)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    dropout: float = 0.0
    kmeans_init: bool = True  # k-means on each level's residuals before training
    reseed_dead: bool = True  # re-seed codes unused since the last check with random residuals
    reseed_every: int = 100  # epochs
    collision: Literal["append", "sinkhorn", "none"] = "append"
    sinkhorn_epsilon: float = 0.003
    sinkhorn_rounds: int = 20
    cf_weight: float = 0.0  # LETTER alpha (collaborative regulariser)
    div_weight: float = 0.0  # LETTER beta (diversity regulariser); not the commitment weight
    div_clusters: int = 10
    recluster_every: int = 10  # epochs between constrained k-means of the codebooks (official: 1)
    log_every: int = 250
    seed: int = 0
    device: str = "auto"


PRESETS = {
    "tiger": RQVAEConfig(),
    "letter": RQVAEConfig(hidden=(2048, 1024, 512, 256, 128, 64), n_levels=4, level_reduce="mean",
                          cf_weight=0.02, div_weight=1e-4, collision="append"),
}


def _mlp(dims: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        dims = [in_dim, *cfg.hidden, cfg.code_dim]
        self.encoder = _mlp(dims, cfg.dropout)
        self.decoder = _mlp(dims[::-1], cfg.dropout)
        self.rq = ResidualQuantizer(n_levels=cfg.n_levels, codebook_size=cfg.codebook_size, dim=cfg.code_dim)

    def forward(self, x: torch.Tensor):
        out = self.rq(self.encoder(x))
        return self.decoder(out.z_q), out


class RQVAETokenizer(ItemTokenizer):
    method = "rqvae"

    def fit(self, emb: np.ndarray, *, cf: np.ndarray | None = None, log=print) -> RQVAETokenizer:
        """emb (n, d) item text embeddings (no padding row); cf (n, code_dim) CF embeddings for LETTER."""
        from sidrec.train.seeding import pick_device, seed_everything

        cfg = self.cfg
        check_embeddings(emb, codebook_size=cfg.codebook_size)
        if cfg.cf_weight > 0:
            if cf is None:
                raise SidrecError("LETTER needs CF embeddings: pass --cf SASREC_RUN (sidrec train sasrec --dim 32)")
            if cf.shape[0] != emb.shape[0]:
                raise SidrecError(f"CF embeddings are for {cf.shape[0]} items but the text embeddings for {emb.shape[0]}")
            if cf.shape[1] != cfg.code_dim:
                raise SidrecError(f"CF embeddings are {cf.shape[1]}-d but the code dim is {cfg.code_dim}; "
                                  f"train SASRec with --dim {cfg.code_dim} or set code_dim")
            check_embeddings(cf, codebook_size=0, name="CF embeddings")
        seed_everything(cfg.seed)
        dev = pick_device(cfg.device)
        x = torch.as_tensor(emb, dtype=torch.float32, device=dev)
        h = torch.as_tensor(cf, dtype=torch.float32, device=dev) if cf is not None else None
        model = RQVAE(x.shape[1], cfg).to(dev)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        if cfg.kmeans_init:
            with torch.no_grad():
                model.rq.init_kmeans(model.encoder(x), seed=cfg.seed)
        clusters = [CodebookClusters(n_clusters=cfg.div_clusters, seed=cfg.seed + lvl) for lvl in range(cfg.n_levels)]
        g = torch.Generator().manual_seed(cfg.seed)
        n = len(x)
        bs = n if cfg.batch_size <= 0 else min(cfg.batch_size, n)
        usage = torch.zeros(cfg.n_levels, cfg.codebook_size, device=dev)
        self.history_ = []
        self.reseeded_ = 0
        t0 = time.time()
        self.recluster_seconds_ = 0.0
        for epoch in progress(range(cfg.epochs), total=cfg.epochs, desc=f"{self.method} epochs"):
            if cfg.div_weight > 0 and epoch % cfg.recluster_every == 0:
                tc = time.time()
                for lvl, c in enumerate(clusters):
                    c.update(model.rq.codebooks[lvl])
                self.recluster_seconds_ += time.time() - tc
            perm = torch.randperm(n, generator=g).to(dev) if bs < n else torch.arange(n, device=dev)
            for s in range(0, n, bs):
                idx = perm[s:s + bs]
                xb = x[idx]
                x_hat, out = model(xb)
                recon = F.mse_loss(x_hat, xb)
                per_level = out.codebook_loss + cfg.commitment * out.commit_loss  # (L,)
                if cfg.div_weight > 0:
                    div = torch.stack([diversity_loss(model.rq.codebooks[lvl], out.codes[:, lvl],
                                                      clusters[lvl].positives(out.codes[:, lvl], g))
                                       for lvl in range(cfg.n_levels)])
                    per_level = per_level + cfg.div_weight * div
                q = per_level.mean() if cfg.level_reduce == "mean" else per_level.sum()
                loss = recon + q
                lcf = cf_loss(out.z_q, h[idx]) if cfg.cf_weight > 0 else torch.zeros((), device=dev)
                loss = loss + cfg.cf_weight * lcf
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                usage.index_put_((torch.arange(cfg.n_levels, device=dev)[None].expand_as(out.codes), out.codes),
                                 torch.ones_like(out.codes, dtype=usage.dtype), accumulate=True)
            last = epoch + 1 == cfg.epochs
            if cfg.reseed_dead and (epoch + 1) % cfg.reseed_every == 0 and not last:
                self.reseeded_ += model.rq.reseed(usage, out.residuals.detach(), cfg.seed + epoch)
                usage.zero_()
            if (epoch + 1) % cfg.log_every == 0 or last:
                with torch.no_grad():
                    all_codes = model.rq(model.encoder(x)).codes
                used = [int(all_codes[:, lvl].unique().numel()) for lvl in range(cfg.n_levels)]
                rec = {"epoch": epoch + 1, "loss": loss.item(), "recon": recon.item(), "quant": q.item(),
                       "cf": lcf.item(), "used": used, "seconds": round(time.time() - t0, 2)}
                self.history_.append(rec)
                log(f"epoch {epoch + 1}: loss {rec['loss']:.4f} recon {rec['recon']:.4f} cf {rec['cf']:.3f} "
                    f"usage {used}")
        self.fit_seconds_ = time.time() - t0
        model.eval()
        with torch.no_grad():
            x_hat, out = model(x)
        self.model_ = model
        self.reconstruction_mse_ = float(F.mse_loss(x_hat, x).item())
        self.z_hat_ = out.chosen.sum(1).cpu().numpy()
        self.finalize(out.codes.cpu().numpy(), out.residuals[:, -1].cpu().numpy(),
                      model.rq.codebooks[-1].detach().cpu().numpy())
        return self

    def _save_weights(self, out: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()},
                  str(out / "model.safetensors"))


class LETTERTokenizer(RQVAETokenizer):
    """LETTER: RQ-VAE + collaborative alignment + codebook diversity (needs CF embeddings)."""

    method = "letter"


def make_config(preset: str, **overrides) -> RQVAEConfig:
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
