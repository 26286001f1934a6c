"""Achieved FLOP/s of the TIGER generator's training step against the card's peak.

FLOPs of one step (forward + backward) are counted by ``torch.utils.flop_counter.FlopCounterMode`` on
the real model (matmuls and attention; elementwise work is not counted, so utilisation is a lower
bound); the step is then timed over ``--steps`` iterations (bf16 autocast on CUDA, AdamW), after warm-up.
Synthetic IDs of the Beauty shape (12,101 items, 4 levels of 256 + a collision level), history 20.

  python experiments/bench/train_flops.py --preset tiger --batch 256 
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sidrec.models.tiger import PRESETS, TIGER, TIGERConfig, Vocab
from sidrec.results import write_bench

PEAK_BF16_DENSE = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H200": 989e12}  # NVIDIA datasheets, dense


def peak_for(name: str) -> float | None:
    for k, v in PEAK_BF16_DENSE.items():
        if k in name:
            return v
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiger")
    ap.add_argument("--batch", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--items", type=int, default=12101)
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-train-flops.jsonl")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    codes = np.concatenate([rng.integers(0, 256, (a.items, 4)), np.zeros((a.items, 1), np.int64)], 1)
    cfg = TIGERConfig(preset=a.preset, **PRESETS[a.preset])
    model = TIGER(cfg, Vocab([256] * 4 + [8]), codes).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gpu = torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"
    res = {"device": str(dev), "gpu": gpu, "preset": a.preset,
           "params": sum(p.numel() for p in model.parameters()), "runs": []}
    for B in a.batch:
        users = torch.zeros(B, dtype=torch.long, device=dev)
        hist = torch.randint(1, a.items + 1, (B, 20), device=dev)
        tgt = torch.randint(1, a.items + 1, (B,), device=dev)

        def step():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = model(users, hist, tgt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        for _ in range(5):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t) / a.steps
        peak = peak_for(gpu)
        r = {"batch": B, "flops_per_step": flops, "seconds_per_step": dt, "samples_per_s": B / dt,
             "achieved_tflops": flops / dt / 1e12, "utilisation_of_peak": (flops / dt / peak) if peak else None}
        res["runs"].append(r)
        print(json.dumps(r), flush=True)
    write_bench('train-flops', res, a.results, variant=None)


if __name__ == "__main__":
    main()
