"""RPG's training epoch, one sample per prefix vs each training sequence once with a loss at every position
(``sequence_loss``), in one run on one device: the same model, data and optimiser for one epoch each; how fast
each trains the same next-item targets.

    python experiments/bench/rpg_sequence_loss.py DATA TOKENS --results experiments/results [--epochs 1]

DATA: a prepared dataset (`sidrec prepare`), TOKENS: its OPQ tokens (`sidrec tokenize --method opq --n-levels 32
--collision append`). Rows (bench `rpg-train-epoch`): variant (prefix | sequence), samples (prefixes or
sequences), id_length, targets (next items trained per epoch), train_seconds (the epochs without validation),
targets_per_second, speedup (against prefix), loss (the last epoch's mean), valid_ndcg@10.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sidrec.config import merge
from sidrec.data.dataset import load_dataset
from sidrec.models.rpg import RPGConfig
from sidrec.results import write_bench
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.loop import TrainConfig
from sidrec.train.rpg import RPG_TRAIN_DEFAULTS, train_rpg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("tokens")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", default=None)
    a = ap.parse_args()
    ds = load_dataset(a.data)
    H = int(ds.stats["config"]["max_history"])
    n_prefix = len(ds.train_prefix_samples(H)[1])
    longest, _ = ds.train_prefix_samples(H, longest_only=True)
    targets = {"prefix": n_prefix, "sequence": int((longest > 0).sum())}
    samples = {"prefix": n_prefix, "sequence": len(longest)}
    id_length = SemanticIDs(a.tokens).codes.shape[1]  # ID tokens per item (32 OPQ digits + a collision suffix)
    rows = []
    for variant in ("prefix", "sequence"):
        with tempfile.TemporaryDirectory() as tmp:
            tcfg = merge(TrainConfig, RPG_TRAIN_DEFAULTS, {"epochs": a.epochs, "seed": a.seed})
            res = train_rpg(ds, a.tokens, Path(tmp) / "run", RPGConfig(sequence_loss=variant == "sequence"), tcfg,
                            log=lambda s: None)
            log = [json.loads(x) for x in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
        secs = sum(r["seconds"] for r in log)  # training only (validation is timed apart)
        rows.append({"variant": variant, "dataset": ds.stats.get("name", Path(a.data).name), "id_length": id_length,
                     "epochs": a.epochs,
                     "samples": samples[variant], "targets": targets[variant], "train_seconds": round(secs, 2),
                     "targets_per_second": round(targets[variant] * a.epochs / secs, 1),
                     "loss": round(log[-1]["loss"], 4), "valid_ndcg@10": round(res["validation"]["ndcg@10"], 4)})
        print(rows[-1], flush=True)
    for r in rows:
        r["speedup"] = round(r["targets_per_second"] / rows[0]["targets_per_second"], 2)
    for r in write_bench("rpg-train-epoch", rows, a.results):
        print(r)


if __name__ == "__main__":
    main()
