"""The one generic training loop: epochs, AMP, gradient clipping, validation cadence, early stopping,
self-describing checkpoints and exact resume (per-epoch seeding, so a resumed run equals an unbroken one).

The step is built for speed on a GPU without a second code path: the model's forward can be compiled
(``compile``; default on CUDA for trainers that allow it, with a one-line fallback to eager), batches may
arrive already on the device, the loss is accumulated on the device and read once per epoch (no host
sync per step), AdamW is fused on CUDA, and ``lr_scale`` adapts the learning rate to the batch size."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file, save_model

from sidrec.errors import SidrecError
from sidrec.train.config import TrainConfig  # noqa: F401 (the trainers' config, re-exported)
from sidrec.utils import dist
from sidrec.utils.artifacts import load_model_weights, load_safetensors, torch_load
from sidrec.utils.cache import CompileArtifacts, artifact_key, persistent_compile_caches
from sidrec.utils.progress import progress

CKPT = "checkpoint.pt"
BEST = "model.safetensors"


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a run keeps of ``model``: everything, or only the trained parameters when the model says
    ``save_trainable_only`` (LoRA on a pretrained LLM: adapter + new token rows, megabytes, not the base)."""
    if getattr(model, "save_trainable_only", False):
        return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return model.state_dict()


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write what ``weights`` keeps. A sharded model (FSDP) is gathered first, a collective: every rank calls this,
    rank 0 writes the unsharded layout (tied weights once, under the name safetensors keeps: the first in sorted
    order), so ``load_weights`` reads it on any number of ranks."""
    if sharded(model):
        state = dist.full_state(model)[0]
        if dist.is_main():
            drop = {n for group in getattr(model, "tied_names", []) for n in sorted(group)[1:]}
            save_file({k: v.contiguous() for k, v in state.items() if k not in drop}, str(path))
    elif getattr(model, "save_trainable_only", False):
        save_file({n: t.contiguous() for n, t in weights(model).items()}, str(path))
    else:
        save_model(model, str(path))  # handles tied weights


def sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` is sharded over the ranks (FSDP; ``shard()`` sets ``sharded``)."""
    return bool(getattr(model, "sharded", False))


def load_weights(model: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    if sharded(model):  # every rank reads the whole file, FSDP keeps its shard
        dist.load_full_state(model, load_safetensors(path))
    elif getattr(model, "save_trainable_only", False):
        _load_partial(model, load_safetensors(path, device=str(device)), path)
    else:
        load_model_weights(model, str(path), device=str(device))


def _load_partial(model: torch.nn.Module, state: dict, source) -> None:
    want = set(weights(model))
    if set(state) != want:
        missing, extra = sorted(want - set(state)), sorted(set(state) - want)
        raise SidrecError(f"{source}: weights do not match the model (missing {missing[:3]}, unexpected {extra[:3]})")
    model.load_state_dict(state, strict=False)


def scaled_lr(cfg: TrainConfig) -> float:
    """Learning rate for ``cfg.batch_size`` under the batch-size rule ``cfg.lr_scale``: lr * (B / B0) ** (1/2 or 1).

    Warm-up stays ``warmup_steps`` optimizer steps at any batch size: the larger rate needs at least as
    many warm-up steps (measured on Beauty, batch 1024: warm-up scaled to the same number of samples,
    250 steps, cost 8% R@10 against 1,000 steps, measured on Beauty)."""
    if cfg.lr_scale == "none" or cfg.batch_size == cfg.base_batch_size:
        return cfg.learning_rate
    ratio = cfg.batch_size / cfg.base_batch_size
    return cfg.learning_rate * (ratio ** 0.5 if cfg.lr_scale == "sqrt" else ratio)


@dataclass
class FitResult:
    best_epoch: int
    best_validation: dict
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0
    stopped: str = "epochs"  # why training ended: epochs (all run), patience (early stop) or time (budget; resumable)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, total_steps: int):
    """AdamW (fused on CUDA; weight decay on matrices only, not on norm scales or biases, as HF's Trainer)
    with linear warm-up and the schedule of ``cfg``."""
    warmup = round(cfg.warmup_ratio * total_steps) if cfg.warmup_ratio > 0 else cfg.warmup_steps
    fused = next(model.parameters()).device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=scaled_lr(cfg), fused=fused or None)

    def lr_lambda(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
        if cfg.schedule == "cosine":
            prog = min(1.0, step / max(1, total_steps))
            return warm * 0.5 * (1 + math.cos(math.pi * prog))
        if cfg.schedule == "inverse_sqrt":
            return warm * min(1.0, math.sqrt(max(1, warmup) / max(1, step)))
        return warm

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def _tensorboard_epoch(run_dir: Path, rec: dict) -> None:
    """One epoch's record as TensorBoard scalars in RUN/tensorboard (train/loss, train/lr, valid/<metric>)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SidrecError("tensorboard = true needs the tensorboard package: pip install 'sidrec[tensorboard]'") from None
    with SummaryWriter(str(run_dir / "tensorboard")) as w:
        w.add_scalar("train/loss", rec["loss"], rec["epoch"])
        for key in ("lr", "seconds"):
            if isinstance(rec.get(key), (int, float)):
                w.add_scalar(f"train/{key}", rec[key], rec["epoch"])
        for key, value in rec.get("validation", {}).items():
            w.add_scalar(f"valid/{key}", value, rec["epoch"])


@dataclass
class _Progress:
    """Where early stopping stands: what a checkpoint keeps and a resumed run continues from."""
    epoch: int = 0  # epochs done
    best: float = -math.inf  # best selection score so far (sign-adjusted: higher is better)
    best_epoch: int = 0
    bad: int = 0  # validations since the best one
    history: list[dict] = field(default_factory=list)
    best_validation: dict = field(default_factory=dict)


def fit(model: torch.nn.Module, *, cfg: TrainConfig, run_dir: str | Path, device: torch.device,
        batches: Callable[[int], Iterable[tuple[torch.Tensor, ...]]], steps_per_epoch: int,
        loss_fn: Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], torch.Tensor],
        validate: Callable[[torch.nn.Module], dict], log: Callable[[str], None] = lambda s: None,
        compilable: bool = False) -> FitResult:
    """Train ``model`` with early stopping on ``cfg.select_metric`` of ``validate``; best weights end in it.

    ``select_metric`` "loss" (a validation loss) is minimised, any other metric maximised. ``compilable``:
    the trainer's ``loss_fn`` may run on ``torch.compile(model)`` (``cfg.compile`` None = on CUDA only).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    sign = -1.0 if cfg.select_metric == "loss" else 1.0
    main = dist.is_main()
    if not main:
        log = lambda s: None  # noqa: E731  (rank 0 reports)
    if dist.world() > 1 and getattr(model, "shardable", False):
        model.shard()  # FSDP: the weights, gradients and optimizer state split over the ranks
        log(f"sharded over {dist.world()} ranks (FSDP)")
    step_model = Compiled(model, log, cfg.batch_size // dist.world(), cfg.compile_mode, dynamic=cfg.compile_dynamic,
                          cache=cfg.compile_cache and main) \
        if compilable and not sharded(model) and (cfg.compile or (cfg.compile is None and device.type == "cuda")) \
        else model
    opt, sched = make_optimizer(model, cfg, cfg.epochs * math.ceil(steps_per_epoch / max(1, cfg.accumulate)))
    state = _resume(model, opt, sched, run_dir / CKPT, device, log) if cfg.resume else _Progress()
    start_epoch, t0, reason = state.epoch, time.time(), ""
    stopped = state.bad >= cfg.patience
    for epoch in range(start_epoch, cfg.epochs):
        if stopped:
            break
        rec = _train_epoch(model, step_model, loss_fn, opt, sched, cfg, device, batches(epoch), steps_per_epoch, epoch)
        if epoch == start_epoch and isinstance(step_model, Compiled):
            step_model.save_cache()  # every batch width has been compiled by now
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            _validate_epoch(model, validate, cfg, sign, state, rec, run_dir)
            stopped = state.bad >= cfg.patience
        state.epoch = epoch + 1
        state.history.append(rec)
        _record(model, opt, sched, cfg, sign, state, rec, run_dir, log)
        # the next epoch is expected to take the mean of this run's epochs so far: stop before one that would end past
        # the budget (an LLM epoch can take 10+ minutes; a deadline-bound queue needs the run to end on time)
        spent = time.time() - t0
        out_of_time = cfg.max_minutes and spent + spent / (epoch + 1 - start_epoch) > cfg.max_minutes * 60
        if dist.broadcast(bool(out_of_time)) and epoch + 1 < cfg.epochs and not stopped:
            log(f"time budget of {cfg.max_minutes} min reached after epoch {epoch + 1} (rerun to resume)")
            reason = "time"
            break
    if (run_dir / BEST).exists():
        load_weights(model, run_dir / BEST, device)
    reason = reason or ("patience" if stopped else "epochs")
    return FitResult(state.best_epoch, state.best_validation, state.history, start_epoch, time.time() - t0, reason)


def _resume(model: torch.nn.Module, opt, sched, ckpt_path: Path, device: torch.device, log) -> _Progress:
    """The model, optimizer, schedule and early-stopping state of the last checkpoint (a fresh state if none)."""
    if not ckpt_path.exists():
        return _Progress()
    ck = torch_load(ckpt_path, map_location="cpu" if sharded(model) else device, weights_only=False)
    if sharded(model):
        dist.load_full_state(model, ck["model"], opt, ck["optimizer"])
    elif getattr(model, "save_trainable_only", False):
        _load_partial(model, ck["model"], ckpt_path)
    else:
        model.load_state_dict(ck["model"])
    if not sharded(model):
        opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    log(f"resumed from {ckpt_path} after epoch {ck['epoch']}")
    return _Progress(ck["epoch"], ck["best"], ck["best_epoch"], ck["bad"], ck["history"], ck["best_validation"])


def _train_epoch(model, step_model, loss_fn, opt, sched, cfg: TrainConfig, device: torch.device,
                 batches: Iterable[tuple[torch.Tensor, ...]], steps_per_epoch: int, epoch: int) -> dict[str, Any]:
    """One epoch of optimizer steps; returns the epoch's record (mean loss, seconds, last learning rate).

    torchrun: each rank trains on its slice of every global batch; gradients are averaged over ranks after
    backward (one flat all-reduce, whatever the trainer's loss function), so every rank takes the same step."""
    W, acc, fsdp = dist.world(), max(1, cfg.accumulate), sharded(model)
    use_amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout/sampling stream depends only on (seed, epoch)
    model.train()
    total, n, pending = torch.zeros((), device=device), 0, 0
    te = time.time()
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(progress(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}",
                                       disable=not dist.is_main())):
        batch, share = dist.shard(tuple(b.to(device, non_blocking=True) for b in batch))
        if batch is not None:  # None: fewer rows than ranks (an epoch's last remainder), skipped by every rank
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = loss_fn(step_model, batch)
            # share: this rank's part of the global batch (the rank sum is the whole batch's mean); FSDP averages
            # the ranks' gradients, hence x W for their sum
            (loss * (share / acc * (W if fsdp else 1)) if (W > 1 or acc > 1) else loss).backward()
            total += loss.detach().float() * share  # stays on the device: no host sync per step
            n += 1
            pending += 1
        if pending and (pending == acc or i + 1 == steps_per_epoch):
            if W > 1 and not fsdp:
                dist.average_gradients(model, 1.0)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=not fsdp or None)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            pending = 0
    rec: dict[str, Any] = {"epoch": epoch + 1, "loss": dist.total(total).item() / max(1, n),
                           "seconds": time.time() - te, "lr": sched.get_last_lr()[0]}
    if W > 1:
        rec["world_size"] = W
    return rec

def _validate_epoch(model, validate, cfg: TrainConfig, sign: float, state: _Progress, rec: dict, run_dir: Path) -> None:
    """Validate (rank 0; the same decision on every rank), keep the best weights, count epochs without a gain."""
    model.eval()
    tv = time.time()
    val = dist.broadcast(validate(model) if dist.is_main() or sharded(model) else None)  # sharded: all run it
    rec["validate_seconds"] = round(time.time() - tv, 3)
    if cfg.select_metric not in val:
        raise SidrecError(f"selection metric {cfg.select_metric!r} is not among the validation results "
                          f"({', '.join(k for k in val if '@' in k or k == 'loss')}); pick one of those")
    score = sign * val[cfg.select_metric]
    rec["validation"] = {k: v for k, v in val.items() if "@" in k or k == "loss"}
    if score > state.best:
        state.best, state.best_epoch, state.bad, state.best_validation = score, rec["epoch"], 0, val
        if dist.is_main() or sharded(model):  # sharded: gathering the weights takes every rank
            save_weights(model, run_dir / BEST)
    else:
        state.bad += 1


def _record(model, opt, sched, cfg: TrainConfig, sign: float, state: _Progress, rec: dict, run_dir: Path,
            log) -> None:
    """The epoch's line in log.jsonl (and TensorBoard), its log line, and the checkpoint a resume starts from."""
    v = rec.get("validation", {})
    val_txt = f"{cfg.select_metric} {v[cfg.select_metric]:.4f}  best {sign * state.best:.4f} (epoch {state.best_epoch})" \
        if cfg.select_metric in v else f"not validated (every {cfg.eval_every} epochs)"
    log(f"epoch {rec['epoch']}: loss {rec['loss']:.4f}  {val_txt}  {rec['seconds']:.1f}s")
    msd, osd = dist.full_state(model, opt) if sharded(model) else (None, None)  # collective: before rank 0 goes on
    if not dist.is_main():
        return
    with (run_dir / "log.jsonl").open("a") as f:
        f.write(json.dumps(rec) + "\n")
    if cfg.tensorboard:
        _tensorboard_epoch(run_dir, rec)
    torch.save({"model": weights(model) if msd is None else msd,
                "optimizer": opt.state_dict() if osd is None else osd, "scheduler": sched.state_dict(),
                "epoch": state.epoch, "best": state.best, "best_epoch": state.best_epoch, "bad": state.bad,
                "history": state.history, "best_validation": state.best_validation}, run_dir / CKPT)


class Compiled:
    """``torch.compile(model)`` called like the model; if compilation fails (no compiler, unsupported
    platform), one line is logged and the eager model is used from then on. Static shapes (``dynamic``
    False): one graph per input shape; batches of another size than ``batch_size`` (an epoch's remainders)
    run eagerly instead of compiling a graph each. ``cache``: the compiled work is kept under
    ``$SIDREC_CACHE/compile`` and its portable artifacts loaded before the first call (``utils.cache``)."""

    def __init__(self, model: torch.nn.Module, log: Callable[[str], None], batch_size: int | None = None,
                 mode: str = "default", *, dynamic: bool = False, cache: bool = False):
        self.model, self.log, self.batch_size = model, log, batch_size
        self.artifacts: CompileArtifacts | None = None
        if cache:
            persistent_compile_caches()
            self.artifacts = CompileArtifacts(artifact_key(model, batch_size=batch_size, mode=mode, dynamic=dynamic),
                                              log)
            self.artifacts.load()
        self.fn: Callable | None = torch.compile(model, dynamic=None if dynamic else False,
                                                 mode=None if mode == "default" else mode)

    def save_cache(self) -> None:
        if self.artifacts is not None and self.fn is not None:
            self.artifacts.save()

    def __call__(self, *args, **kwargs):
        full = self.batch_size is None or not args or getattr(args[0], "shape", (None,))[:1] == (self.batch_size,)
        if self.fn is not None and full:
            try:
                return self.fn(*args, **kwargs)
            except Exception as e:  # compile errors surface on the first call
                self.log(f"torch.compile unavailable ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                         f"training eagerly (--no-compile silences this)")
                self.fn = None
        return self.model(*args, **kwargs)
