"""VQ-Rec training: pre-training over several domains, fine-tuning on a target, loading a run.

Run directory (pre-training and fine-tuning alike):
  config.json, run.json        configs, versions, data fingerprints
  vqrec.json                   code layout (D, M), model config, domains (dataset, fingerprint, n_items,
                               offset into codes.npy), embeddings directory per domain, init run, stages
  codes.npy                    (1 + sum n_items, D) int64 codes of every item, row 0 padding
  opq/                         the fitted OPQ tokenizer (opq.faiss: encodes new items' text, cold start)
  model.safetensors            weights (code tables + Transformer)
  metrics.json                 validation / test metrics (fine-tuning), per-domain validation (pre-training)
  stage1/, stage2/, pretrain/  the training loop's checkpoints and logs (resume)
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_model

from sidrec.config import from_dict, to_dict
from sidrec.data.dataset import Dataset
from sidrec.embeddings.text import EmbedConfig, embed_dataset, load_embeddings
from sidrec.errors import SidrecError
from sidrec.eval.evaluate import EvalConfig, evaluate_scorer
from sidrec.models.vqrec import VQRec, VQRecConfig
from sidrec.tokenizers.base import SemanticIDs
from sidrec.tokenizers.collisions import collision_stats
from sidrec.tokenizers.opq import OPQConfig, OPQTokenizer
from sidrec.tokenizers.stage import train_item_mask
from sidrec.train.config import VQREC_TRAIN_DEFAULTS  # noqa: F401 (re-exported)
from sidrec.train.loop import TrainConfig, fit
from sidrec.train.sasrec import sequence_batches
from sidrec.utils import dist
from sidrec.utils.artifacts import load_model_weights, load_npy, read_json, verify, write_manifest
from sidrec.utils.log import info as log_info
from sidrec.utils.runinfo import data_info, write_run_info
from sidrec.utils.seeding import pick_device, seed_everything

VQREC_EVAL_KS = (10, 50)
ARCHITECTURE = ("n_levels", "codebook_size", "dim", "n_layers", "n_heads", "inner", "max_history")  # must match the init run


@dataclass(frozen=True, kw_only=True)
class VQRecTrainConfig:
    rho: float = 0.75  # pre-training: probability of replacing each code of the semi-synthetic negative (0 = none)
    permutation: bool = True  # fine-tuning stage 1: learn a permutation of each code table (encoder frozen)
    permutation_epochs: int = 20  # stage 1 budget (early stopping on validation as well)
    permutation_lr: float = 0.05  # stage 1 learning rate of the permutation logits
    finetune: Literal["codes", "all"] = "codes"  # stage 2 trains the code tables only, or everything
    codes: Literal["opq", "random"] = "opq"  # "random": the ablation with uniformly random codes
    opq_iters: int = 50  # OPQ rotation iterations (faiss default)

    @property
    def codes_from_text(self) -> bool:
        """The codes are fitted on item text (OPQ); the ``random`` ablation needs no text."""
        return self.codes != "random"


def _embeddings(ds: Dataset, out: Path, embed_cfg: EmbedConfig, given: str | Path | None, log) -> tuple[np.ndarray, str]:
    """(item embeddings (n_items + 1, d), directory they live in)."""
    if given is not None:
        emb = load_embeddings(given, ds.n_items)
        return emb, str(Path(given) if Path(given).is_dir() else Path(given).parent)
    emb = embed_dataset(ds, out, embed_cfg, log=log)
    return emb, str(out)


def _fit_opq(embs: list[np.ndarray], masks: list[np.ndarray], cfg: VQRecConfig, seed: int, out: Path,
             log, iters: int = 50) -> tuple[OPQTokenizer, list[np.ndarray]]:
    """One OPQ fitted on the training items of all given catalogs; codes (n_items, D) of each catalog."""
    dims = {e.shape[1] for e in embs}
    if len(dims) != 1:
        raise SidrecError(f"the datasets' text embeddings have different widths {sorted(dims)}; "
                          "embed them all with the same encoder")
    tok = OPQTokenizer(OPQConfig(n_levels=cfg.n_levels, codebook_size=cfg.codebook_size, seed=seed, opq_iters=iters))
    tok.fit(np.concatenate([e[1:] for e in embs]), train_mask=np.concatenate(masks), log=log)
    tok.save(out)
    return tok, [tok.encode(e[1:]) for e in embs]


def _stack_codes(per_domain: list[np.ndarray], D: int) -> tuple[np.ndarray, list[int]]:
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in per_domain])]).astype(int).tolist()
    return np.concatenate([np.zeros((1, D), np.int64)] + [c.astype(np.int64) for c in per_domain]), offsets[:-1]


def _shift(a: np.ndarray, off: int) -> np.ndarray:
    return np.where(a > 0, a + off, 0)


def _domain_scorer(model: VQRec, off: int, n: int):
    def score(_u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        tables = model.tables()
        reps = model.item_reps(tables)
        reps = torch.cat([reps[:1], reps[off + 1: off + n + 1]])
        return model.logits(model.forward(torch.where(h > 0, h + off, 0), tables)[:, -1], reps)
    return score


def _code_report(codes: np.ndarray) -> dict:
    return {"items": int(len(codes) - 1), **collision_stats(codes[1:])}


def _write_meta(out: Path, model_cfg: VQRecConfig, vq_cfg: VQRecTrainConfig, domains: list[dict], **extra) -> None:
    meta = {"kind": "vqrec", "n_levels": model_cfg.n_levels, "codebook_size": model_cfg.codebook_size,
            "model": to_dict(model_cfg), "vqrec": to_dict(vq_cfg), "domains": domains, **extra}
    (out / "vqrec.json").write_text(json.dumps(meta, indent=2))


def pretrain_vqrec(datasets: list[Dataset], out: str | Path, model_cfg: VQRecConfig, vq_cfg: VQRecTrainConfig,
                   train_cfg: TrainConfig, embed_cfg: EmbedConfig, embeddings: list[str | Path | None] | None = None,
                   log=log_info) -> dict:
    """Contrastive pre-training over several domains mixed in every batch; returns per-domain validation."""
    out = Path(out)
    if not datasets:
        raise SidrecError("pre-training needs at least one --pretrain dataset")
    model_cfg = replace(model_cfg, twin_vectors=False)  # twins of the mixed catalog do not transfer
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    embeddings = embeddings or [None] * len(datasets)
    if len(embeddings) != len(datasets):
        raise SidrecError(f"got {len(embeddings)} --embeddings for {len(datasets)} --pretrain datasets")

    codes = offsets = None
    if dist.is_main():  # torchrun: rank 0 embeds, fits OPQ and writes; the others receive the codes
        write_run_info(out, kind="vqrec-pretrain", config={"model": to_dict(model_cfg), "vqrec": to_dict(vq_cfg),
                                                           "train": to_dict(train_cfg), "embed": to_dict(embed_cfg)},
                       data={"domains": [data_info(ds) for ds in datasets]}, device=str(device))
        embs, emb_dirs = [], []
        for i, (ds, given) in enumerate(zip(datasets, embeddings)):
            e, d = _embeddings(ds, out / "embeddings" / f"{i}-{ds.path.name}", embed_cfg, given, log)
            embs.append(e)
            emb_dirs.append(d)
        _, per_domain = _fit_opq(embs, [train_item_mask(ds) for ds in datasets], model_cfg, train_cfg.seed,
                                 out / "opq", log, vq_cfg.opq_iters)
        codes, offsets = _stack_codes(per_domain, model_cfg.n_levels)
        np.save(out / "codes.npy", codes)
        domains = [{"dataset": str(ds.path), "fingerprint": ds.fingerprint, "n_items": ds.n_items, "offset": off,
                    "embeddings": d} for ds, off, d in zip(datasets, offsets, emb_dirs)]
        _write_meta(out, model_cfg, vq_cfg, domains, stage="pretrain", code_report=_code_report(codes),
                    embed=to_dict(embed_cfg))
    codes, offsets = dist.broadcast((codes, offsets))

    inputs, targets = [], []
    for ds, off in zip(datasets, offsets):
        x, y = ds.train_sequences(model_cfg.max_history)
        keep = (y > 0).any(1)
        inputs.append(_shift(x[keep], off))
        targets.append(_shift(y[keep], off))
    inputs, targets = np.concatenate(inputs), np.concatenate(targets)  # shuffled together: mixed-domain batches
    model = VQRec(model_cfg, codes)
    eval_cfg = EvalConfig(ks=VQREC_EVAL_KS, max_history=model_cfg.max_history)

    def validate(m: VQRec) -> dict:
        per = [evaluate_scorer(_domain_scorer(m, off, ds.n_items), ds, "valid", eval_cfg, device=device)
               for ds, off in zip(datasets, offsets)]
        res = {k: float(np.mean([p[k] for p in per])) for k in per[0] if "@" in k}
        res["domains"] = per
        return res

    log(f"pre-training on {len(datasets)} domains: {len(inputs):,} sequences, {len(codes) - 1:,} items, "
        f"semi-synthetic rho {vq_cfg.rho}")
    res = fit(model, cfg=train_cfg, run_dir=out / "pretrain", device=device,
              batches=sequence_batches(inputs, targets, train_cfg.batch_size, train_cfg.seed),
              steps_per_epoch=-(-len(inputs) // train_cfg.batch_size),
              loss_fn=lambda m, b: m.contrastive_loss(b[0], b[1], rho=vq_cfg.rho), validate=validate, log=log)
    if not dist.is_main():  # rank 0 writes
        return {"model": "vqrec", "stage": "pretrain", "rank": dist.rank(), "best_epoch": res.best_epoch}

    save_model(model, str(out / "model.safetensors"))
    metrics = {"model": "vqrec", "stage": "pretrain", "validation": res.best_validation, "best_epoch": res.best_epoch,
               "epochs_run": len(res.history), "stopped": res.stopped, "train_seconds": round(res.seconds, 2)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_manifest(out)
    return metrics


def _read_meta(run: Path) -> dict:
    f = run / "vqrec.json"
    if not f.is_file():
        raise SidrecError(f"{run}: not a VQ-Rec run (missing vqrec.json); pre-train one with "
                          "`sidrec train vqrec --pretrain DIR ... --out RUN`")
    return read_json(f)


def _target_codes(ds: Dataset, emb: np.ndarray, model_cfg: VQRecConfig, vq_cfg: VQRecTrainConfig,
                  tokens: str | Path | None, seed: int, out: Path, log) -> np.ndarray:
    D, M = model_cfg.n_levels, model_cfg.codebook_size
    if not vq_cfg.codes_from_text:
        rng = np.random.default_rng(seed)
        codes = rng.integers(0, M, size=(ds.n_items, D))
    elif tokens is not None:
        sid = SemanticIDs(tokens)
        sid.check_dataset(ds)
        base = load_npy(sid.path / "base_codes.npy") if (sid.path / "base_codes.npy").is_file() else sid.codes
        if base.shape[1] != D or base.max() >= M:
            raise SidrecError(f"{tokens}: codes have width {base.shape[1]} and values up to {int(base.max())}, but "
                              f"the model expects {D} codes per item in [0, {M})")
        codes = base
        if (sid.path / "opq.faiss").is_file():  # keep the encoder of new items' text (cold start)

            shutil.copytree(sid.path, out / "opq", dirs_exist_ok=True)
    else:
        _, (codes,) = _fit_opq([emb], [train_item_mask(ds)], model_cfg, seed, out / "opq", log, vq_cfg.opq_iters)
    return np.concatenate([np.zeros((1, D), np.int64), codes.astype(np.int64)])


def finetune_vqrec(ds: Dataset, out: str | Path, *, init: str | Path | None, model_cfg: VQRecConfig,
                   vq_cfg: VQRecTrainConfig, train_cfg: TrainConfig, embed_cfg: EmbedConfig,
                   embeddings: str | Path | None = None, tokens: str | Path | None = None,
                   eval_cfg: EvalConfig | None = None, log=log_info) -> dict:
    """Fine-tune a pre-trained run on ``ds`` (or train from scratch when ``init`` is None); test once."""
    out = Path(out)
    seed_everything(train_cfg.seed)
    device = pick_device(train_cfg.device)
    init = Path(init) if init is not None else None
    init_meta = _check_init(init, model_cfg) if init is not None else None
    if init_meta is not None and embeddings is None and tokens is None and vq_cfg.codes_from_text:
        embed_cfg = from_dict(EmbedConfig, {**to_dict(embed_cfg), **init_meta.get("embed", {})})
    eval_cfg = _eval_config(eval_cfg, model_cfg, train_cfg)
    codes = emb_dir = None
    if dist.is_main():  # torchrun: rank 0 embeds, fits OPQ and writes; the others receive the codes
        write_run_info(out, kind="vqrec", config={"model": to_dict(model_cfg), "vqrec": to_dict(vq_cfg),
                                                  "train": to_dict(train_cfg), "embed": to_dict(embed_cfg),
                                                  "eval": to_dict(eval_cfg), "init": str(init) if init else None},
                       data=data_info(ds), device=str(device))
        emb = None
        if (vq_cfg.codes_from_text and tokens is None) or embeddings is not None:
            emb, emb_dir = _embeddings(ds, out / "embeddings", embed_cfg, embeddings, log)
        codes = _target_codes(ds, emb, model_cfg, vq_cfg, tokens, train_cfg.seed, out, log)
        np.save(out / "codes.npy", codes)
    codes = dist.broadcast(codes)
    model = VQRec(model_cfg, codes)
    if init is not None:
        # twin vectors belong to the target's catalog: a pre-trained run has none (they start at zero here)
        missing, unexpected = load_model_weights(model, str(init / "model.safetensors"), strict=model.twin_emb is None)
        if set(missing) - {"twin_emb"} or unexpected:
            raise SidrecError(f"{init}: weights do not match this model (missing {sorted(missing)}, "
                              f"unexpected {sorted(unexpected)})")
    if dist.is_main():
        domains = [{"dataset": str(ds.path), "fingerprint": ds.fingerprint, "n_items": ds.n_items, "offset": 0,
                    "embeddings": emb_dir}]
        _write_meta(out, model_cfg, vq_cfg, domains, stage="finetune", init=str(init) if init else None,
                    code_report=_code_report(codes), embed=to_dict(embed_cfg))
    stages = _finetune_stages(model, ds, out, init is not None, model_cfg, vq_cfg, train_cfg, eval_cfg, device, log)
    if not dist.is_main():  # rank 0 tests and writes
        return {"model": "vqrec", "stage": "finetune", "rank": dist.rank(), "stages": stages}
    save_model(model, str(out / "model.safetensors"))
    val = evaluate_scorer(lambda u, h: model.score(h), ds, "valid", eval_cfg, device=device)
    test = evaluate_scorer(lambda u, h: model.score(h), ds, "test", eval_cfg, device=device)
    metrics = {"model": "vqrec", "stage": "finetune", "init": str(init) if init else None,
               "ablation": _ablation_name(init, vq_cfg, init_meta), "validation": val, "test": test,
               "stages": stages, "train_seconds": round(sum(s["seconds"] for s in stages.values()), 2)}
    if device.type == "cuda":
        metrics["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_manifest(out)
    return metrics


def _check_init(init: Path, model_cfg: VQRecConfig) -> dict:
    """The pre-trained run's metadata, after checking its code layout and architecture match ``model_cfg``."""
    init_meta = _read_meta(init)
    pre = from_dict(VQRecConfig, init_meta["model"])
    for field in ARCHITECTURE:
        if getattr(model_cfg, field) != getattr(pre, field):
            raise SidrecError(f"{init}: pre-trained with {field}={getattr(pre, field)} but {field}="
                              f"{getattr(model_cfg, field)} was asked for; code layout and architecture must match")
    return init_meta


def _eval_config(eval_cfg: EvalConfig | None, model_cfg: VQRecConfig, train_cfg: TrainConfig) -> EvalConfig:
    """VQ-Rec's cut-offs (@10, @50), with the selection cut-off always among them (--ks 5,20 selects on @10 too)."""
    eval_cfg = eval_cfg or EvalConfig(ks=VQREC_EVAL_KS, max_history=model_cfg.max_history)
    if "@" in train_cfg.select_metric:
        sel_k = int(train_cfg.select_metric.split("@")[1])
        if sel_k not in eval_cfg.ks:
            eval_cfg = replace(eval_cfg, ks=tuple(sorted({*eval_cfg.ks, sel_k})))
    return eval_cfg


def _finetune_stages(model: VQRec, ds: Dataset, out: Path, pretrained: bool, model_cfg: VQRecConfig,
                     vq_cfg: VQRecTrainConfig, train_cfg: TrainConfig, eval_cfg: EvalConfig, device, log) -> dict:
    """Stage 1 (a pre-trained run with ``permutation``): the code tables' permutation, encoder frozen; stage 2:
    the code tables (``finetune = "codes"``) or everything. Returns each stage's summary."""
    inputs, targets = ds.train_sequences(model_cfg.max_history)
    keep = (targets > 0).any(1)
    inputs, targets = inputs[keep], targets[keep]
    batches = sequence_batches(inputs, targets, train_cfg.batch_size, train_cfg.seed)
    steps = -(-len(inputs) // train_cfg.batch_size)

    def validate(m: VQRec) -> dict:
        return evaluate_scorer(lambda u, h: m.score(h), ds, "valid", eval_cfg, device=device)

    def run_stage(name: str, trainable, epochs: int, lr: float | None = None) -> dict:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in trainable:
            p.requires_grad_(True)
        cfg = from_dict(TrainConfig, {**to_dict(train_cfg), "epochs": epochs,
                                      "learning_rate": lr or train_cfg.learning_rate})
        log(f"stage {name}: {sum(p.numel() for p in trainable):,} trainable parameters")
        r = fit(model, cfg=cfg, run_dir=out / name, device=device, batches=batches, steps_per_epoch=steps,
                loss_fn=lambda m, b: m.loss(b[0], b[1]), validate=validate, log=log)
        return {"best_epoch": r.best_epoch, "epochs_run": len(r.history), "stopped": r.stopped, "seconds": round(r.seconds, 2),
                "validation": {k: v for k, v in r.best_validation.items() if "@" in k}}

    stages = {}
    if pretrained and vq_cfg.permutation:
        model.enable_permutation()
        stages["permutation"] = run_stage("stage1", [model.perm_logits], vq_cfg.permutation_epochs,
                                          vq_cfg.permutation_lr)
        model.bake_permutation()
    trainable = [model.code_emb] + ([model.twin_emb] if model.twin_emb is not None else []) \
        if (pretrained and vq_cfg.finetune == "codes") else list(model.parameters())
    stages["finetune"] = run_stage("stage2", trainable, train_cfg.epochs)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return stages


def _ablation_name(init, vq_cfg: VQRecTrainConfig, init_meta: dict | None) -> str:
    parts = []
    if init is None:
        parts.append("no pre-training")
    elif not vq_cfg.permutation:
        parts.append("no permutation stage")
    if init_meta and float(init_meta.get("vqrec", {}).get("rho", 0.75)) == 0:
        parts.append("no semi-synthetic negative")
    if vq_cfg.codes == "random":
        parts.append("random codes")
    return ", ".join(parts) or "full"


def init_model_config(init: str | Path) -> dict:
    """The model config of a pre-trained run (defaults for fine-tuning it); twin vectors are the target's own
    choice (pre-training has none), not inherited."""
    return {k: v for k, v in _read_meta(Path(init))["model"].items() if k != "twin_vectors"}


def load_vqrec(run: str | Path, device: torch.device | str = "cpu") -> tuple[VQRec, dict]:
    """A fine-tuned run's model (codes of its catalog loaded) and its vqrec.json."""
    run = Path(run)
    verify(run)
    meta = _read_meta(run)
    model = VQRec(from_dict(VQRecConfig, {"twin_vectors": False, **meta["model"]}),  # runs older than the option
                  load_npy(run / "codes.npy"))
    load_model_weights(model, str(run / "model.safetensors"))
    return model.to(device).eval(), meta
