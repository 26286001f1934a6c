"""LC-Rec training step and test decoding, the previous GPU step vs the fast one, on a prepared dataset's own
training batches (length-bucketed as the trainer cuts them) and all its test users.

Variants of the training step (``--variants``, comma-separated; every one runs the same model on the same batches):
- ``old``: float32 base weights under the trainer's bf16 autocast, micro-batch 128, eager (the step before);
- ``bf16``: the frozen base weights stored in bf16 (``base_dtype``), micro-batch 128, eager;
- ``bf16-b512``, ``bf16-b1024``: and micro-batch 512, 1024;
- ``bf16-nodropout``: ``bf16`` without LoRA dropout (what dropout's kernels cost);
- ``bf16-layers``, ``bf16-b256-layers``, ... : and each decoder layer compiled (``LCRec.compile_layers``, the
  trainer's default on a GPU: one layer's graph, shared by all 30); ``-nodropout``: LoRA dropout 0;
  ``-cudagraphs``: the layers compiled in mode reduce-overhead (CUDA graphs);
- ``bf16-b512-compiled``: the whole model compiled instead (one graph per history width; a very long cold start);
- ``full-b128``, ``full-b512-layers``: full fine-tuning (every weight trained, float32 master weights, bf16
  autocast).
Each variant reports samples/s (forward + backward + AdamW step, after a warm-up that visits every history
width), peak memory, the loss of one fixed batch next to ``old``'s (dropout off: the same weights must give
the same loss within bf16 round-off) and, under ``--profile``, the share of the step's wall time the GPU spends
in kernels. Decoding: all test users with the trie-constrained beam search (beam 20, top 20), base weights in
float32 without autocast (before) vs bf16 (now), users/s and seconds.

    python experiments/bench/lcrec_train_step.py --data data/beauty --tokens runs/beauty-released-ids \
        --model smollm2-135m --device cuda --profile

``--random-init``: the backbone's architecture and tokenizer with random weights (config.json + tokenizer files
suffice; speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sidrec.data.dataset import load_dataset
from sidrec.decoding.trie import build_trie
from sidrec.models.lcrec import LCRec, LCRecConfig
from sidrec.results import write_bench
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.lcrec import SPARE_SUFFIXES
from sidrec.train.trainer import PrefixBatches, decode_users, id_sizes

VARIANTS = {  # name -> (base_dtype, micro-batch, compiled, finetune)
    "old": ("float32", 128, False, "lora"),
    "bf16": ("bfloat16", 128, False, "lora"),
    "bf16-b512": ("bfloat16", 512, False, "lora"),
    "bf16-b1024": ("bfloat16", 1024, False, "lora"),
    "bf16-nodropout": ("bfloat16", 128, False, "lora"),
    "bf16-layers": ("bfloat16", 128, "layers", "lora"),
    "bf16-b256-layers": ("bfloat16", 256, "layers", "lora"),
    "bf16-b512-layers": ("bfloat16", 512, "layers", "lora"),
    "bf16-b1024-layers": ("bfloat16", 1024, "layers", "lora"),
    "bf16-b512-layers-nodropout": ("bfloat16", 512, "layers", "lora"),
    "bf16-b1024-layers-nodropout": ("bfloat16", 1024, "layers", "lora"),
    "bf16-b512-layers-cudagraphs-nodropout": ("bfloat16", 512, "layers-cudagraphs", "lora"),
    "bf16-b1024-layers-cudagraphs-nodropout": ("bfloat16", 1024, "layers-cudagraphs", "lora"),
    "bf16-b512-compiled": ("bfloat16", 512, "model", "lora"),
    "full-b128": ("float32", 128, False, "full"),
    "full-b512-layers": ("float32", 512, "layers", "full"),
}


def random_backbone(src: Path, dst: Path) -> Path:
    """``src``'s config and tokenizer with freshly initialised weights, saved as a local HF directory."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".json", ".txt", ".model") and f.name != "model.safetensors.index.json":
            shutil.copy(f, dst / f.name)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src)).save_pretrained(dst)
    return dst


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def build(model: str, ids, max_history: int, base: str, finetune: str, dev, lora_dropout: float = 0.05) -> LCRec:
    torch.manual_seed(0)
    sizes = id_sizes(ids, SPARE_SUFFIXES)
    m = LCRec(LCRecConfig(model=model, max_history=max_history, base_dtype=base, finetune=finetune,
                          share_prefix=False, temperature=0.7, lora_dropout=lora_dropout), sizes, ids.codes)
    return m.to(dev)


def train_variant(name, a, ds, ids, hist, target, users, dev, fixed) -> dict:
    base, B, compiled, finetune = VARIANTS[name]
    model = build(a.model, ids, a.max_history, base, finetune, dev, 0.0 if "nodropout" in name else 0.05)
    trained = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trained, lr=1e-4, fused=dev.type == "cuda")
    step_model = torch.compile(model, dynamic=False) if compiled == "model" else model
    if compiled and compiled.startswith("layers"):
        model.compile_layers(mode="reduce-overhead" if compiled.endswith("cudagraphs") else None)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16) if dev.type == "cuda" else contextlib.nullcontext()
    model.eval()
    with torch.no_grad(), amp:  # the fixed batch's loss, dropout off
        fixed_loss = float(model(*fixed))
    model.train()
    batches = PrefixBatches(users, hist, target, batch_size=B, buckets=a.buckets, seed=0, device=dev)

    def step(b):
        if compiled == "layers-cudagraphs":
            torch.compiler.cudagraph_mark_step_begin()
        with amp:
            loss = step_model(*b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    it = batches(0)
    seen, t0 = set(), time.perf_counter()
    for b in it:  # warm-up: every history width once (a compiled step builds its graphs here)
        step(b)
        seen.add(b[1].shape[1])
        if len(seen) == len(batches.widths):
            break
    sync(dev)
    warm = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats() if dev.type == "cuda" else None
    n, t0, losses = 0, time.perf_counter(), []
    for i, b in enumerate(it):
        if i == a.steps:
            break
        losses.append(step(b))
        n += len(b[2])
    sync(dev)
    secs = time.perf_counter() - t0
    row = {"variant": name, "base_dtype": base, "micro_batch": B, "compiled": compiled, "finetune": finetune,
           "samples_per_second": round(n / secs, 1), "timed_samples": n, "warmup_seconds": round(warm, 1),
           "fixed_batch_loss": round(fixed_loss, 5),
           "timed_mean_loss": round(float(torch.stack(losses).float().mean()), 4),
           "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None}
    if a.profile and dev.type == "cuda":
        row.update(profile(step, batches, dev))
    del model, step_model, opt
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    return row


def profile(step, batches, dev, steps: int = 6, top: int = 15) -> dict:
    """Kernel time vs wall time over a few steps: the GPU's busy share (1 = never waiting for the host), and the
    ``top`` kernels by GPU time (name, ms per step)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    it = batches(1)
    sync(dev)
    with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
        t0 = time.perf_counter()
        for _, b in zip(range(steps), it):
            step(b)
        sync(dev)
        wall = time.perf_counter() - t0
    kernel_us = sum(getattr(e, "self_device_time_total", 0) for e in p.key_averages()
                    if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type))
    launches = sum(e.count for e in p.key_averages() if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                                  "cudaLaunchKernelExC"))
    kernels = sorted(((e.key, getattr(e, "self_device_time_total", 0)) for e in p.key_averages()
                      if getattr(e, "device_type", None) is not None and "CUDA" in str(e.device_type)),
                     key=lambda kv: -kv[1])
    return {"profile_wall_ms_per_step": round(wall / steps * 1e3, 1),
            "profile_kernel_ms_per_step": round(kernel_us / steps / 1e3, 1),
            "profile_gpu_busy": round(kernel_us / 1e6 / wall, 3),
            "profile_launches_per_step": round(launches / steps),
            "profile_top_kernels": [[k[:90], round(us / steps / 1e3, 2)] for k, us in kernels[:top] if us > 0]}


def decode_variant(spec: str, a, ds, ids, dev) -> dict:
    """``name:batch:users`` (users 0 = every test user; a rate from a subset: users in id order, so their
    history lengths are a fair sample)."""
    name, batch, n = spec.split(":")
    batch, n = int(batch), int(n) or ds.n_users
    base = "float32" if name == "old" else "bfloat16"
    model = build(a.model, ids, a.max_history, base, "lora", dev).eval()
    trie = build_trie(ids.codes, id_sizes(ids, SPARE_SUFFIXES)).to(dev)
    decode_users(model, trie, ds, "test", beam=20, k=20, batch_size=batch, device=dev,
                 users=np.arange(min(ds.n_users, 2 * batch)))  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    top = decode_users(model, trie, ds, "test", beam=20, k=20, batch_size=batch, device=dev, users=np.arange(n))
    sync(dev)
    secs = time.perf_counter() - t0
    valid = bool(((top[:n] >= 1) & (top[:n] <= len(ids.codes))).all())
    del model
    torch.cuda.empty_cache() if dev.type == "cuda" else None
    return {"variant": f"decode-{name}", "base_dtype": base, "decode_batch": batch, "users": n,
            "decode_seconds": round(secs, 1), "users_per_second": round(n / secs, 1),
            "all_users_seconds": round(ds.n_users * secs / n, 1), "valid_items_only": valid}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tokens", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--random-init", action="store_true", help="the backbone's architecture, random weights")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--decode", default="old:256:4096,new:256:0,new:512:0",
                    help="decoding runs, comma-separated name:batch:users (old | new; users 0 = every test user)")
    ap.add_argument("--max-history", type=int, default=20)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"),
                    help="results folder: rows are appended to RESULTS/bench-lcrec-train-step.jsonl")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.random_init:
        from sidrec.models.lcrec import resolve_backbone

        src = Path(a.model) if Path(a.model).is_dir() else resolve_backbone(a.model)[0]
        a.model = str(random_backbone(src, Path(tempfile.mkdtemp()) / "backbone"))
    ds, ids = load_dataset(a.data), SemanticIDs(a.tokens)
    hist, target = ds.train_prefix_samples(a.max_history)
    users = np.repeat(np.arange(1, ds.n_users + 1), np.clip(np.diff(ds.offsets) - 3, 0, None))
    rng = np.random.default_rng(0)
    r = rng.choice(len(target), 64, replace=False)
    fixed = tuple(torch.as_tensor(x[r], device=dev) for x in (users, hist, target))
    common = {"model": "random-init " + Path(a.model).name if a.random_init else a.model, "data": ds.path.name,
              "device": dev.type, "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
              "torch": torch.__version__}
    old = None  # each row is written as soon as it is measured (a run cut short keeps what it had)
    for name in [v for v in a.variants.split(",") if v]:
        try:
            row = train_variant(name, a, ds, ids, hist, target, users, dev, fixed)
        except torch.OutOfMemoryError as e:
            row = {"variant": name, "error": f"out of memory: {str(e).splitlines()[0][:100]}"}
            torch.cuda.empty_cache()
        except Exception as e:  # a variant the backend cannot run (a compile mode, say): a row says why
            row = {"variant": name, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
            torch.cuda.empty_cache() if dev.type == "cuda" else None
        if name == "old" and "error" not in row:
            old = row
        if old and "error" not in row:
            row["speedup_vs_old"] = round(row["samples_per_second"] / old["samples_per_second"], 2)
            row["loss_vs_old"] = round(row["fixed_batch_loss"] - old["fixed_batch_loss"], 5)
        print(json.dumps(row), flush=True)
        write_bench("lcrec-train-step", {**common, **row}, a.results, variant=name)
    for spec in [v for v in a.decode.split(",") if v]:
        row = decode_variant(spec, a, ds, ids, dev)
        print(json.dumps(row), flush=True)
        write_bench("lcrec-decode", {**common, **row}, a.results, variant=row["variant"])


if __name__ == "__main__":
    main()
