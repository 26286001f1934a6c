"""One row of bench/results/reproduce.json from a finished `sidrec train tiger` run (issue 11).

  python bench/reproduce_row.py RUN --dataset beauty --tokens letter --variant full --encoder minilm \
      --seed 0 --command "..." >> rows.jsonl

A run stopped by its time budget (metrics.json "stopped": "time") is not finished: no row (exit 1)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row(run: Path, **meta) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    if m.get("stopped") == "time":
        raise SystemExit(f"{run}: stopped by its time budget after {m['epochs_run']} epochs; rerun to resume")
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    info = json.loads((run / "run.json").read_text())
    conf = json.loads((run / "config.json").read_text())
    t = m["test"]
    return {**meta, "generator": "tiger", "epochs": m["epochs_run"], "best_epoch": m["best_epoch"],
            "stopped": m.get("stopped"),
            **{k: round(t[k], 5) for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")},
            "valid_loss": m["validation"].get("loss"),
            "train_seconds": round(sum(r["seconds"] + r.get("validate_seconds", 0) for r in log), 1),
            "gpu": info.get("gpu", info.get("device")), "torch": info["versions"]["torch"],
            "batch_size": conf["train"]["batch_size"], "learning_rate": conf["train"]["learning_rate"],
            "temperature": conf["model"]["temperature"], "preset": conf["model"]["preset"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run", type=Path)
    for k in ("dataset", "tokens", "variant", "encoder", "command"):
        ap.add_argument(f"--{k}", required=True)
    ap.add_argument("--seed", type=int, required=True)
    a = ap.parse_args()
    meta = {k: getattr(a, k) for k in ("dataset", "tokens", "variant", "encoder", "seed")}
    print(json.dumps({**row(a.run, **meta), "command": a.command}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
