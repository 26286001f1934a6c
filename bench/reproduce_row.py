"""One row of bench/results/reproduce.json from a finished `sidrec train tiger` run (issue 11).

  python bench/reproduce_row.py RUN --dataset beauty --tokens letter --variant full --encoder minilm \
      --seed 0 --command "..." >> rows.jsonl

A run stopped by its time budget (metrics.json "stopped": "time") is not finished: no row (exit 1).
  python bench/reproduce_row.py --merge reproduce.jsonl    # add finished rows to bench/results/reproduce.json"""

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
    gen = "tiger"
    if conf.get("kind", info.get("kind")) == "lcrec" or "finetune" in conf["model"]:
        from sidrec.models.lcrec import PRETRAINED

        name = conf["model"]["model"]
        known = {sha: n for n, (_, _, sha) in PRETRAINED.items()}
        name = known.get(conf.get("backbone_fingerprint"), Path(name).name.removesuffix(".gguf"))
        gen = f"lcrec-{name}" + ("-full" if conf["model"].get("finetune") == "full" else "")
    return {**meta, "generator": gen, "epochs": m["epochs_run"], "best_epoch": m["best_epoch"],
            "stopped": m.get("stopped"),
            **{k: round(t[k], 5) for k in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")},
            "valid_loss": m["validation"].get("loss"),
            "train_seconds": round(sum(r["seconds"] + r.get("validate_seconds", 0) for r in log), 1),
            "gpu": info.get("gpu", info.get("device")), "torch": info["versions"]["torch"],
            "batch_size": conf["train"]["batch_size"], "learning_rate": conf["train"]["learning_rate"],
            "weight_decay": conf["train"]["weight_decay"], "lr_scale": conf["train"].get("lr_scale", "none"),
            "temperature": conf["model"]["temperature"], "preset": conf["model"].get("preset", "lcrec")}


def merge(jsonl: Path, into: Path) -> int:
    """Add the rows of ``jsonl`` to the table ``into`` (a JSON list), skipping rows already there."""
    rows = json.loads(into.read_text()) if into.exists() else []
    key = lambda r: (r["dataset"], r["tokens"], r["variant"], r.get("preset"), r["seed"], r["command"])  # noqa: E731
    have = {key(r) for r in rows}
    new = [r for r in (json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()) if key(r) not in have]
    into.write_text(json.dumps(rows + new, indent=1) + "\n")
    return len(new)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--merge":
        into = Path(__file__).parent / "results" / "reproduce.json"
        print(f"{merge(Path(sys.argv[2]), into)} new rows in {into}")
        return
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
