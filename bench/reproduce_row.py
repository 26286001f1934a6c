"""One row of bench/results/reproduce.json from a finished `sidrec train tiger` run (issue 11).

  python bench/reproduce_row.py RUN --dataset beauty --tokens letter --variant full --encoder minilm \
      --seed 0 --command "..." >> rows.jsonl

A run stopped by its time budget (metrics.json "stopped": "time") is not finished: no row (exit 1).
  python bench/reproduce_row.py --merge reproduce.jsonl    # add finished rows to bench/results/reproduce.json
  python bench/reproduce_row.py --table                     # the markdown table of bench/README.md"""

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


# published figures (R@5, N@5, R@10, N@10; None = not reported) per (dataset, tokens, variant, generator);
# variant "*": every variant without an entry of its own
PUBLISHED = {
    ("beauty", "published", "full", "tiger"): ("LETTER-TIGER", (0.0431, 0.0277, 0.0672, 0.0364)),
    ("beauty", "letter", "full", "tiger"): ("LETTER-TIGER", (0.0431, 0.0277, 0.0672, 0.0364)),
    ("beauty", "letter", "cf-only", "tiger"): ("LETTER Table 2, + CF only", (None, None, 0.0660, 0.0351)),
    ("beauty", "letter", "div-only", "tiger"): ("LETTER Table 2, + diversity only", (None, None, 0.0618, 0.0335)),
    ("beauty", "letter", "no-rank-loss", "tiger"): ("LETTER Table 2, no ranking loss", (None, None, 0.0672, 0.0357)),
    ("beauty", "letter", "cf0.2", "tiger"): ("LETTER-TIGER (beyond: CF weight 0.2)", (0.0431, 0.0277, 0.0672, 0.0364)),
    ("beauty", "rqvae", "full", "tiger"): ("TIGER paper", (0.0454, 0.0321, 0.0648, 0.0384)),
    ("beauty", "rqkmeans", "full", "tiger"): ("TIGER paper (beyond: RQ-KMeans IDs)", (0.0454, 0.0321, 0.0648, 0.0384)),
    ("beauty", "published", "ls0.1", "tiger"): ("LETTER-TIGER (beyond: label smoothing 0.1)", (0.0431, 0.0277, 0.0672, 0.0364)),
    ("instruments", "published", "full", "tiger"): ("LETTER-TIGER", (None, None, 0.1122, 0.0831)),
    ("yelp", "rqvae", "full", "tiger"): ("TIGER (LETTER's table)", (None, None, 0.0331, 0.0207)),
    ("yelp", "letter", "full", "tiger"): ("LETTER-TIGER", (None, None, 0.0364, 0.0227)),
    ("yelp", "letter", "cf0.2", "tiger"): ("LETTER-TIGER (CF weight 0.2 + warm-up: the preset)", (None, None, 0.0364, 0.0227)),
    ("toys", "rqvae", "full", "tiger"): ("TIGER paper", (0.0521, 0.0371, 0.0712, 0.0432)),
    ("toys", "rqvae", "full2000", "tiger"): ("TIGER paper (tokenizer fit for all 2,000 epochs)", (0.0521, 0.0371, 0.0712, 0.0432)),
    ("toys", "letter", "cf0.2", "tiger"): ("TIGER paper (LETTER has no Toys row)", (0.0521, 0.0371, 0.0712, 0.0432)),
    ("beauty", "letter", "full", "lcrec"): ("LETTER-LC-Rec", (0.0505, 0.0355, 0.0703, 0.0418)),
    # LETTER's released IDs are LETTER's tokens: every LC-Rec row on them (any variant, "*") sits next to LETTER-LC-Rec
    ("beauty", "published", "*", "lcrec"): ("LETTER-LC-Rec (LLaMA-7B, all tasks)", (0.0505, 0.0355, 0.0703, 0.0418)),
}
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def table(rows: list[dict]) -> str:
    """Mean and min-max over seeds per (dataset, tokens, variant, encoder, generator, recipe), next to the paper."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["tokens"], r["variant"], r["encoder"], r["generator"],
                           r.get("preset", "-")), []).append(r)
    out = ["| dataset | tokens | variant | encoder | generator (recipe) | seeds | epochs (best) | "
           "R@5 | N@5 | R@10 | N@10 | published R@10 / N@10 | ours / published R@10 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (d, t, v, e, g, p), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        cells = []
        for m in METRICS:
            x = [r[m] for r in rs]
            cells.append(f"{sum(x) / len(x):.4f}" + (f" ({min(x):.4f}-{max(x):.4f})" if len(x) > 1 else ""))
        gen = g.split("-")[0]
        name, pub = PUBLISHED.get((d, t, v, gen)) or PUBLISHED.get((d, t, "*", gen), ("", (None,) * 4))
        ref = f"{name} {pub[2]:.4f} / {pub[3]:.4f}" if pub[2] else "-"
        ratio = f"{sum(r['recall@10'] for r in rs) / len(rs) / pub[2]:.0%}" if pub[2] else "-"
        ep = ", ".join(f"{r['epochs']} ({r['best_epoch']})" for r in rs)
        out.append(f"| {d} | {t} | {v} | {e} | {g} ({p}) | {','.join(str(r['seed']) for r in rs)} | {ep} | "
                   + " | ".join(cells) + f" | {ref} | {ratio} |")
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--table":
        print(table(json.loads((Path(__file__).parent / "results" / "reproduce.json").read_text())))
        return
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
