"""RQ-VAE tokenizer (TIGER, Rajput et al. 2023), and LETTER (Wang et al. 2024) when its weights are set.

MLP encoder -> residual quantizer (L levels x N codes) -> mirrored MLP decoder. Loss: reconstruction
+ per level (codebook + mu * commitment), summed (TIGER) or averaged (LETTER) over levels, + alpha CF
+ beta diversity (LETTER). Inputs are standardised; mini-batches of 512 (full batch when ``batch_size == 0``),
dead codes re-seeded every 10 epochs, and the fit stops once its smoothed signals (reconstruction, collision
rate, codebook usage, LETTER's CF loss) have plateaued (:func:`plateaued`, ``converge_tol``), so a default fit
ends by itself in minutes rather than running all its ``epochs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from sidrec.errors import SidrecError
from sidrec.tokenizers.base import ItemTokenizer, check_embeddings
from sidrec.tokenizers.collisions import collision_stats
from sidrec.tokenizers.letter_losses import CodebookClusters, cf_loss, diversity_loss
from sidrec.tokenizers.quantizers import CHUNK, ResidualQuantizer
from sidrec.tokenizers.report import healthy_floor
from sidrec.utils.progress import progress
from sidrec.utils.log import info as log_info
from sidrec.utils import dist
from sidrec.utils.artifacts import load_safetensors
from sidrec.utils.seeding import pick_device, seed_everything


@dataclass(frozen=True, kw_only=True)
class RQVAEConfig:
    hidden: tuple[int, ...] = (512, 256, 128)  # encoder widths between input and code_dim (decoder mirrors)
    code_dim: int = 32
    n_levels: int = 3
    codebook_size: int = 256
    commitment: float = 0.25  # mu: weight of ||r - sg[e]||^2
    level_reduce: Literal["sum", "mean"] = "sum"  # TIGER sums level losses, LETTER averages them
    epochs: int = 2000  # at most; the convergence stop usually ends the fit far earlier
    batch_size: int = 512  # 0 = full batch (whole catalog per step)
    learning_rate: float = 2e-3
    warmup_epochs: int = 0  # linear learning-rate warm-up over this many epochs (a deep, wide encoder at full rate
    # from the first step can die: every ReLU off, all items on one code)
    weight_decay: float = 1e-4
    dropout: float = 0.0
    init: Literal["he", "torch"] = "torch"  # MLP weights: "torch" = PyTorch's default; "he" = Kaiming-normal for the
    # ReLU layers, zero biases: the encoder's output keeps the inputs' spread at any depth (LETTER's 6-layer encoder:
    # variance across items 0.19 vs 2e-6), a better reconstruction early on (Beauty subsample, LETTER with warm-up,
    # epoch 60: 0.56 vs 0.72), not yet measured downstream, so not the default
    standardize: bool = True  # centre the inputs and scale them to unit mean variance (healthy codebooks at init)
    recon_units: Literal["input", "standardized"] = "standardized"  # unit of the reconstruction loss ("input":
    # the papers' balance against the CF / diversity weights, but at short schedules RQ-VAE then collapses)
    kmeans_init: bool = True  # k-means on each level's residuals before training
    reseed_dead: bool = True  # re-seed codes unused since the last check with random residuals
    reseed_every: int = 10  # epochs
    collision: Literal["append", "sinkhorn", "sinkhorn-append", "none"] = "append"
    sinkhorn_epsilon: float = 0.003
    sinkhorn_rounds: int = 20
    cf_weight: float = 0.0  # LETTER alpha (collaborative regulariser)
    div_weight: float = 0.0  # LETTER beta (diversity regulariser); not the commitment weight
    div_clusters: int = 10
    recluster_every: int = 10  # epochs between constrained k-means of the codebooks (official: 1)
    converge_tol: float = 0.01  # plateau stop: no smoothed signal (reconstruction, CF loss: relative; collision rate:
    # relative to at least 1%; codebook usage: share of the codebook) improved by more than this (0 = off) ...
    converge_checks: int = 3  # ... over this many checks (at check_every spacing), compared with its best before them
    converge_smooth: int = 3  # checks averaged into each signal's value (noise does not hold the fit open)
    check_every: int = 20  # epochs between convergence checks (whole catalog encoded)
    min_epochs: int = 100
    log_every: int = 100
    seed: int = 0
    device: str = "auto"


PRESETS = {
    "tiger": RQVAEConfig(),
    # CF weight 0.2, not the paper's 0.02: the reconstruction here is in standardised units, against which 0.02
    # leaves the CF term too weak (Beauty, 2 seeds, TIGER on the tokens: R@10 0.0640 vs 0.0539; experiments/RESULTS.md)
    # A 10-epoch warm-up: at full rate from the first step this 6-layer, 2048-wide encoder can die (LETTER without its
    # CF term, or with Kaiming init, ended on one code per level, reconstruction = the data's variance)
    "letter": RQVAEConfig(hidden=(2048, 1024, 512, 256, 128, 64), n_levels=4, level_reduce="mean",
                          cf_weight=0.2, div_weight=1e-4, collision="append", warmup_epochs=10),
}


def _mlp(dims: list[int], dropout: float, init: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        lin = nn.Linear(dims[i], dims[i + 1])
        relu = i < len(dims) - 2
        if init == "he":  # variance-preserving through ReLU layers; the output layer linear (gain 1)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu" if relu else "linear")
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if relu:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


def plateaued(history: list[dict], *, window: int, smooth: int, tol: float, codebook_size: int,
              cf: bool = False) -> bool:
    """True once no training signal has improved by more than ``tol`` over the last ``window`` checks.

    Each signal is averaged over ``smooth`` consecutive checks, and its latest smoothed value is compared with
    the best smoothed value before the window, so a signal that oscillates (a collision rate between 0.98% and
    1.16%) or creeps (reconstruction -0.2% per check) does not hold the fit open, while one still falling does.
    Signals: whole-catalog reconstruction and the CF loss (relative), the collision rate (relative, at least
    1% of the items), the mean share of each codebook in use (absolute, higher is better)."""
    if tol <= 0 or len(history) < window + smooth:
        return False
    def series(rec):  # noqa: E306  lower is better for every entry
        out = {"recon": rec["recon_all"], "collisions": rec["collision_rate"],
               "usage": -float(np.mean(rec["used"])) / codebook_size}
        if cf:
            out["cf"] = rec.get("cf_epoch", rec["cf"])
        return out
    vals = [series(r) for r in history]
    smoothed = [{k: float(np.mean([v[k] for v in vals[i - smooth + 1:i + 1]])) for k in vals[i]}
                for i in range(smooth - 1, len(vals))]
    now, before = smoothed[-1], smoothed[:-window]
    if not before:
        return False
    for k, v in now.items():
        best = min(b[k] for b in before)
        scale = 1.0 if k == "usage" else max(abs(best), 0.01) if k == "collisions" else abs(best)
        if best - v > tol * max(scale, 1e-12):
            return False
    return True


class RQVAE(nn.Module):
    """Input -> (x - mean) / scale -> MLP encoder -> residual quantizer -> MLP decoder (standardised space)."""

    def __init__(self, in_dim: int, cfg: RQVAEConfig):
        super().__init__()
        dims = [in_dim, *cfg.hidden, cfg.code_dim]
        self.encoder = _mlp(dims, cfg.dropout, cfg.init)
        self.decoder = _mlp(dims[::-1], cfg.dropout, cfg.init)
        self.rq = ResidualQuantizer(n_levels=cfg.n_levels, codebook_size=cfg.codebook_size, dim=cfg.code_dim)
        self.register_buffer("in_mean", torch.zeros(in_dim))
        self.register_buffer("in_scale", torch.ones(()))

    @torch.no_grad()
    def set_standardization(self, x: torch.Tensor) -> None:
        """Unit mean per-dimension variance: tf-idf or unit-norm text vectors have per-dimension scales of
        ~1/sqrt(d), at which a freshly initialised encoder maps every item to nearly the same point and the
        k-means-initialised codebooks collapse to one code per level."""
        self.in_mean.copy_(x.mean(0))
        self.in_scale.copy_((x - self.in_mean).pow(2).mean().sqrt().clamp(min=1e-12))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.in_mean) / self.in_scale

    def forward(self, x: torch.Tensor):
        """x: standardised inputs."""
        out = self.rq(self.encoder(x))
        return self.decoder(out.z_q), out


@torch.no_grad()
def encode_all(model: RQVAE, x: torch.Tensor, chunk: int = CHUNK) -> dict:
    """The whole catalog through the autoencoder ``chunk`` rows at a time (bounded memory at 10^6+ items):
    codes (n, L), the last level's residuals, the quantised vectors and the reconstruction MSE."""
    codes, last, z_hat, sse = [], [], [], 0.0
    for s in range(0, len(x), chunk):
        xb = x[s:s + chunk]
        x_hat, out = model(xb)
        codes.append(out.codes)
        last.append(out.residuals[:, -1])
        z_hat.append(out.chosen.sum(1))
        sse += float(F.mse_loss(x_hat, xb, reduction="sum"))
    return {"codes": torch.cat(codes), "last_residual": torch.cat(last), "z_hat": torch.cat(z_hat),
            "mse": sse / x.numel()}


@dataclass
class _FitRun:
    """What a fit carries from epoch to epoch."""
    model: RQVAE
    opt: torch.optim.Optimizer
    x: torch.Tensor  # standardised inputs
    h: torch.Tensor | None  # CF embeddings (LETTER)
    recon_scale: float
    clusters: list  # CodebookClusters per level (diversity positives)
    g: torch.Generator  # batch order
    gp: torch.Generator  # diversity positives
    bs: int
    usage: torch.Tensor  # (L, K) code counts since the last re-seed


class RQVAETokenizer(ItemTokenizer):
    method = "rqvae"
    config_cls = RQVAEConfig

    @property
    def needs(self) -> tuple[str, ...]:
        return ("embeddings", "cf") if self.cfg.cf_weight > 0 else ("embeddings",)

    def fit(self, emb: np.ndarray | None = None, *, cf: np.ndarray | None = None,
            train_mask: np.ndarray | None = None, item_ids: list[str] | None = None, log=log_info) -> RQVAETokenizer:
        """emb (n, d) item text embeddings (no padding row); cf (n, code_dim) CF embeddings for LETTER."""
        cfg = self.cfg
        self._check_inputs(emb, cf)
        seed_everything(cfg.seed)
        run = self._start(emb, cf)
        self.history_, self.reseeded_, self.recluster_seconds_ = [], 0, 0.0
        t0 = time.time()
        for epoch in progress(range(cfg.epochs), total=cfg.epochs, desc=f"{self.method} epochs"):
            if cfg.div_weight > 0 and epoch % cfg.recluster_every == 0:
                tc = time.time()
                for lvl, c in enumerate(run.clusters):
                    c.update(run.model.rq.codebooks[lvl])
                self.recluster_seconds_ += time.time() - tc
            last_batch = self._epoch(run, epoch)
            last = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.check_every == 0 or (epoch + 1) % cfg.log_every == 0 or last:
                if self._check_and_stop(run, epoch + 1, last_batch, time.time() - t0, last, log):
                    break
            if cfg.reseed_dead and (epoch + 1) % cfg.reseed_every == 0 and not last:
                self._reseed(run, last_batch["out"].residuals.detach(), epoch)
        self.epochs_run_ = epoch + 1
        self.fit_seconds_ = time.time() - t0
        run.model.eval()
        whole = encode_all(run.model, run.x)
        self.model_ = run.model
        self.reconstruction_mse_ = whole["mse"] * run.model.in_scale.item() ** 2  # input units
        self.z_hat_ = whole["z_hat"].cpu().numpy()
        self.finalize(whole["codes"].cpu().numpy(), whole["last_residual"].cpu().numpy(),
                      run.model.rq.codebooks[-1].detach().cpu().numpy())
        return self

    def _check_inputs(self, emb: np.ndarray | None, cf: np.ndarray | None) -> None:
        cfg = self.cfg
        check_embeddings(emb, codebook_size=cfg.codebook_size)
        if cfg.cf_weight <= 0:
            return
        if cf is None:
            raise SidrecError("LETTER needs CF embeddings: pass --cf SASREC_RUN (sidrec train sasrec --dim 32)")
        if cf.shape[0] != emb.shape[0]:
            raise SidrecError(f"CF embeddings are for {cf.shape[0]} items but the text embeddings for {emb.shape[0]}")
        if cf.shape[1] != cfg.code_dim:
            raise SidrecError(f"CF embeddings are {cf.shape[1]}-d but the code dim is {cfg.code_dim}; "
                              f"train SASRec with --dim {cfg.code_dim} or set code_dim")
        check_embeddings(cf, codebook_size=0, name="CF embeddings")

    def _start(self, emb: np.ndarray, cf: np.ndarray | None) -> _FitRun:
        """The model (standardised inputs, k-means-initialised codebooks), optimizer and random streams."""
        cfg = self.cfg
        dev = pick_device(cfg.device)
        x = torch.as_tensor(emb, dtype=torch.float32, device=dev)
        h = torch.as_tensor(cf, dtype=torch.float32, device=dev) if cf is not None else None
        model = RQVAE(x.shape[1], cfg).to(dev)
        if cfg.standardize:
            model.set_standardization(x)
        x = model.standardize(x)  # the autoencoder works in standardised units; reports convert back
        # the reconstruction term in input units keeps the papers' balance with the CF / diversity weights
        recon_scale = model.in_scale.item() ** 2 if cfg.recon_units == "input" else 1.0
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay, foreach=True)
        if cfg.kmeans_init:
            with torch.no_grad():
                model.rq.init_kmeans(torch.cat([model.encoder(x[s:s + CHUNK]) for s in range(0, len(x), CHUNK)]),
                                     seed=cfg.seed)
        clusters = [CodebookClusters(n_clusters=cfg.div_clusters, seed=cfg.seed + lvl) for lvl in range(cfg.n_levels)]
        g = torch.Generator().manual_seed(cfg.seed)
        # torchrun: every rank holds the catalog, trains on its slice of each batch; diversity positives draw from
        # their own stream, so that ``g`` (the batch order) stays the same on every rank whatever its slice size
        gp = g if dist.world() == 1 else torch.Generator().manual_seed(cfg.seed * 7919 + 1 + dist.rank())
        bs = len(x) if cfg.batch_size <= 0 else min(cfg.batch_size, len(x))
        return _FitRun(model, opt, x, h, recon_scale, clusters, g, gp, bs,
                       torch.zeros(cfg.n_levels, cfg.codebook_size, device=dev))

    def _epoch(self, run: _FitRun, epoch: int) -> dict:
        """One pass over the catalog in batches; returns the last batch's losses and quantiser output."""
        cfg, model, n, bs, dev = self.cfg, run.model, len(run.x), run.bs, run.x.device
        perm = torch.randperm(n, generator=run.g).to(dev) if bs < n else torch.arange(n, device=dev)
        cf_sum, batches, last = torch.zeros((), device=dev), 0, {}  # the epoch's mean CF loss: a smoother signal
        for s in range(0, n, bs):
            idx, share = perm[s:s + bs], 1.0
            if dist.world() > 1:  # torchrun: this rank's slice of the batch; gradients weighted by its share below
                (idx,), share = dist.shard((idx,))
                if idx is None:
                    continue
            xb = run.x[idx]
            x_hat, out = model(xb)
            recon = F.mse_loss(x_hat, xb) * run.recon_scale
            per_level = out.codebook_loss + cfg.commitment * out.commit_loss  # (L,)
            if cfg.div_weight > 0:
                div = torch.stack([diversity_loss(model.rq.codebooks[lvl], out.codes[:, lvl],
                                                  run.clusters[lvl].positives(out.codes[:, lvl], run.gp))
                                   for lvl in range(cfg.n_levels)])
                per_level = per_level + cfg.div_weight * div
            q = per_level.mean() if cfg.level_reduce == "mean" else per_level.sum()
            lcf = cf_loss(out.z_q, run.h[idx]) if cfg.cf_weight > 0 else torch.zeros((), device=dev)
            loss = recon + q + cfg.cf_weight * lcf
            cf_sum += lcf.detach()
            batches += 1
            run.opt.zero_grad(set_to_none=True)
            loss.backward()
            if dist.world() > 1:
                dist.average_gradients(model, share)
            if cfg.warmup_epochs > 0:
                for grp in run.opt.param_groups:
                    grp["lr"] = cfg.learning_rate * min(1.0, (epoch + s / n + bs / n) / cfg.warmup_epochs)
            run.opt.step()
            run.usage.index_put_((torch.arange(cfg.n_levels, device=dev)[None].expand_as(out.codes), out.codes),
                                 torch.ones_like(out.codes, dtype=run.usage.dtype), accumulate=True)
            last = {"out": out, "loss": loss, "recon": recon, "q": q, "lcf": lcf}
        last["cf_epoch"] = cf_sum / max(1, batches)
        return last

    def _check_and_stop(self, run: _FitRun, epochs: int, b: dict, seconds: float, last: bool, log) -> bool:
        """Record a check of the whole catalog, log it, and say whether the fit has plateaued."""
        cfg = self.cfg
        rec = self._check(run.model, run.x, epochs, b["loss"], b["recon"], b["q"], b["lcf"], seconds,
                          cf_epoch=b["cf_epoch"])
        stable = cfg.converge_tol > 0 and epochs >= cfg.min_epochs and self._converged(len(run.x))
        if epochs % cfg.log_every == 0 or last or stable:
            log(f"epoch {epochs}: loss {rec['loss']:.4f} recon {rec['recon']:.4f} cf {rec['cf']:.3f} "
                f"usage {rec['used']} collisions {rec['collision_rate']:.4f}")
        if stable:
            log(f"converged after {epochs} epochs: no signal (reconstruction, collisions, usage"
                f"{', CF loss' if cfg.cf_weight > 0 else ''}) improved by more than {cfg.converge_tol:g} over "
                f"the last {cfg.converge_checks * cfg.check_every} epochs")
        return stable

    def _reseed(self, run: _FitRun, res: torch.Tensor, epoch: int) -> None:
        """Dead codes (unused since the last re-seed) restart at residuals of the last batch."""
        usage = run.usage
        if dist.world() > 1:  # every rank's usage counts; rank 0 re-seeds from the whole last batch (every rank's
            usage = dist.total(usage)  # slice, in rank order, as one process sees it), the others copy
            res = dist.gather_rows(res)[0]
        self.reseeded_ += run.model.rq.reseed(usage, res, self.cfg.seed + epoch)
        if dist.world() > 1:
            dist.broadcast_module(run.model)
        run.usage.zero_()

    @torch.no_grad()
    def _check(self, model: RQVAE, x: torch.Tensor, epoch: int, loss, recon, q, lcf, seconds: float,
               cf_epoch=None) -> dict:
        """Encode the whole catalog: codes used per level, collision rate and reconstruction (one record)."""
        was = model.training
        model.eval()
        whole = encode_all(model, x)
        model.train(was)
        codes = whole["codes"]
        rec = {"epoch": epoch, "loss": loss.item(), "recon": recon.item(), "quant": q.item(), "cf": lcf.item(),
               "cf_epoch": float(cf_epoch) if cf_epoch is not None else lcf.item(),
               "used": [int(codes[:, lvl].unique().numel()) for lvl in range(codes.shape[1])],
               "collision_rate": collision_stats(codes.cpu().numpy())["rate"],
               "recon_all": whole["mse"], "seconds": round(seconds, 2)}
        self.history_.append(rec)
        return rec

    def _converged(self, n_items: int) -> bool:
        """The fit has plateaued (:func:`plateaued` over the checks at ``check_every`` spacing) with a healthy
        codebook (a stable but degenerate one keeps training)."""
        cfg = self.cfg
        h = [r for r in self.history_ if r["epoch"] % cfg.check_every == 0]
        if not h or min(h[-1]["used"]) < healthy_floor(cfg.codebook_size, n_items):
            return False
        return plateaued(h, window=cfg.converge_checks, smooth=cfg.converge_smooth, tol=cfg.converge_tol,
                         codebook_size=cfg.codebook_size, cf=cfg.cf_weight > 0)

    @torch.no_grad()
    def encode(self, emb: np.ndarray) -> np.ndarray:
        """Base codes (n, L) of any items through the trained encoder and codebooks (eval mode)."""
        model = self.model_.eval()
        dev = model.in_mean.device
        check_embeddings(emb, codebook_size=0)
        if emb.shape[1] != model.in_mean.shape[0]:
            raise SidrecError(f"embeddings are {emb.shape[1]}-d but this tokenizer was fitted on "
                              f"{model.in_mean.shape[0]}-d ones; embed with the same encoder")
        out = []
        for s in range(0, len(emb), 8192):
            x = model.standardize(torch.as_tensor(emb[s:s + 8192], dtype=torch.float32, device=dev))
            out.append(model.rq(model.encoder(x)).codes.cpu())
        return torch.cat(out).numpy().astype(np.int64)

    def _save_weights(self, out: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()},
                  str(out / "model.safetensors"))

    def _load_weights(self, path: Path, meta: dict) -> None:
        sd = load_safetensors(path / "model.safetensors")
        self.model_ = RQVAE(int(sd["in_mean"].shape[0]), self.cfg)
        self.model_.load_state_dict(sd)
        self.model_.eval()


def make_config(preset: str, **overrides) -> RQVAEConfig:
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
