"""Where a length-bucketed TIGER epoch spends its time on the GPU: compile modes side by side.

Each variant runs in its own process: all compile at once (warm-up: one batch per width), then they time
one epoch each in turn, alone on the card (file barrier), and one profiles its epoch (wall vs kernel time,
top CPU-side ops).
  python experiments/bench/compile_modes.py --data DIR --tokens TOK --batch 1024 --modes default reduce-overhead --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def worker(a, k: int, mode: str) -> None:
    from sidrec.data.dataset import load_dataset
    from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
    from sidrec.tokenizers.base import SemanticIDs
    from sidrec.train.loop import Compiled
    from sidrec.train.tiger import PrefixBatches

    dev = torch.device("cuda")
    torch.manual_seed(0)
    ds, ids = load_dataset(a.data), SemanticIDs(a.tokens)
    cfg = TIGERConfig(preset="tiger", max_history=20)
    hist, target = ds.train_prefix_samples(20)
    users = np.repeat(np.arange(1, ds.n_users + 1), np.clip(np.diff(ds.offsets) - 3, 0, None))
    pb = PrefixBatches(users, hist, target, batch_size=a.batch, buckets=a.buckets, seed=0, device=dev)
    m = TIGER(cfg, Vocab(ids.level_sizes, 0), ids.codes).to(dev).train()
    fn = Compiled(m, print, a.batch, mode)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)

    def step(b):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = fn(*b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.detach()

    tc = time.time()
    for _ in range(2):  # cudagraph trees record on the second call of a shape
        seen = set()
        for b in pb(0):
            if tuple(b[1].shape) not in seen:
                seen.add(tuple(b[1].shape))
                step(b)
    torch.cuda.synchronize()
    warm = time.time() - tc
    Path(a.out, f"ready{k}").touch()
    while not Path(a.out, f"go{k}").exists():
        time.sleep(0.2)
    res = {"mode": mode, "batch": a.batch, "widths": pb.widths, "warmup_seconds": round(warm, 1)}
    for e in (1, 2):
        torch.cuda.synchronize()
        t0 = time.time()
        tot = sum(step(b) for b in pb(e))
        torch.cuda.synchronize()
        res[f"epoch{e}_seconds"] = round(time.time() - t0, 3)
        res[f"epoch{e}_loss"] = round(float(tot) / pb.steps, 4)
    res["samples_per_second"] = round(pb.n / min(res["epoch1_seconds"], res["epoch2_seconds"]), 1)
    if k == 0:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            t0 = time.time()
            sum(step(b) for b in pb(3))
            torch.cuda.synchronize()
            wall = time.time() - t0
        ev = prof.key_averages()
        kern = sum(e.self_device_time_total for e in ev if e.device_type.name == "CUDA") / 1e6
        res["profile"] = {"wall_seconds": round(wall, 3), "kernel_seconds": round(kern, 3),
                          "steps": pb.steps,
                          "top_cpu": [{"name": e.key[:80], "self_cpu_ms": round(e.self_cpu_time_total / 1e3, 1),
                                       "count": e.count}
                                      for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:15]],
                          "top_cuda": [{"name": e.key[:80], "ms": round(e.self_device_time_total / 1e3, 1)}
                                       for e in sorted((e for e in ev if e.device_type.name == "CUDA"),
                                                       key=lambda e: -e.self_device_time_total)[:8]]}
    Path(a.out, f"result{k}.json").write_text(json.dumps(res, indent=1))
    Path(a.out, f"done{k}").touch()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--buckets", type=int, default=4)
    ap.add_argument("--modes", nargs="+", default=["default", "reduce-overhead"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--worker", type=int, default=None)
    a = ap.parse_args()
    if a.worker is not None:
        return worker(a, a.worker, a.modes[a.worker])
    Path(a.out).mkdir(parents=True, exist_ok=True)
    procs = [subprocess.Popen([sys.executable, __file__, *sys.argv[1:], "--worker", str(k)])
             for k in range(len(a.modes))]
    for k, p in enumerate(procs):  # time in turn, each alone on the card
        while not Path(a.out, f"ready{k}").exists() and p.poll() is None:
            time.sleep(0.5)
    for k, p in enumerate(procs):
        Path(a.out, f"go{k}").touch()
        while not Path(a.out, f"done{k}").exists() and p.poll() is None:
            time.sleep(0.5)
        p.wait()
    rows = [json.loads(Path(a.out, f"result{k}.json").read_text()) for k in range(len(a.modes))
            if Path(a.out, f"result{k}.json").exists()]
    Path(a.out, "bucket-probe.json").write_text(json.dumps(rows, indent=1))
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "profile"}))
    if rows and "profile" in rows[0]:
        print(json.dumps(rows[0]["profile"], indent=1))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
