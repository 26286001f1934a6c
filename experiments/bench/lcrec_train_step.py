"""LC-Rec training step: the prompt's fixed head shared by the batch (``share_prefix``, default) vs run by
every row, on the same model and batch; also the tokens a row runs. Samples are real training prefixes of a
prepared dataset (history lengths matter: the shorter the histories, the larger the head's share).

    python experiments/bench/lcrec_train_step.py --data data/beauty --tokens runs/beauty-released-ids \
        --model ~/.cache/sidrec/models/smollm2-135m-b179c9523d0e --batch 16 --device cpu 
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sidrec.results import write_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--tokens", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-lcrec-train-step.jsonl")
    a = ap.parse_args()
    from sidrec.data.dataset import load_dataset
    from sidrec.models.lcrec import LCRecConfig
    from sidrec.tokenizers.base import SemanticIDs
    from sidrec.train.lcrec import build_lcrec

    ds = load_dataset(a.data)
    ids = SemanticIDs(a.tokens)
    hist, target = ds.train_prefix_samples(20)
    rng = np.random.default_rng(0)
    rows = rng.choice(len(target), a.batch * a.steps, replace=False)
    dev = torch.device(a.device)
    res = {"model": a.model, "data": str(a.data), "batch": a.batch, "device": a.device}
    for share in (False, True):
        torch.manual_seed(0)
        model, _ = build_lcrec(LCRecConfig(model=a.model, max_history=20, share_prefix=share), ids)
        model.to(dev).train()
        secs = []
        for s in range(a.steps):
            r = rows[s * a.batch:(s + 1) * a.batch]
            h, t = torch.as_tensor(hist[r], device=dev), torch.as_tensor(target[r], device=dev)
            w = int((h != 0).sum(1).max())  # the trainer's length buckets cut each batch to its longest history
            t0 = time.perf_counter()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                loss = model(torch.arange(len(r), device=dev), h[:, -w:], t)
            loss.backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            secs.append(time.perf_counter() - t0)
            model.zero_grad(set_to_none=True)
        ids_, mask = model._prompt(torch.as_tensor(hist[rows], device=dev), prefix=not share)
        key = "shared" if share else "per_row"
        res[f"{key}_seconds_per_step"] = round(float(np.median(secs)), 3)
        res[f"{key}_tokens_per_row"] = round(float(mask.sum(1).float().mean()) + 5, 1)  # + the answer's tokens
        res["prefix_tokens"] = int(model.prefix.numel())
    res["speedup"] = round(res["per_row_seconds_per_step"] / res["shared_seconds_per_step"], 2)
    print(json.dumps(res, indent=1))
    write_bench('lcrec-train-step', res, a.results, variant=None)


if __name__ == "__main__":
    main()
