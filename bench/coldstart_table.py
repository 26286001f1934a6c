"""The cold-start tables of bench/README.md from bench/results/coldstart.json (issue 13).

  python bench/coldstart_table.py [--tau 0.1] [--json bench/results/coldstart.json]

One row per (dataset, epsilon): R@10 seed by seed and the mean N@10 of the text baselines (semantic KNN on the mean
history embedding, TIGER's; kernel KNN, the history's items as anchors) and of the generator's new-item rules
(prefix, neighbours, blend; reserved slots, and blend with competing slots), TIGER rows only (not VQ-Rec)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("semantic KNN", "knn", "reserve", "history", False), ("kernel KNN", "knn", "reserve", "kernel", True),
           ("TIGER prefix", "tiger", "reserve", "prefix", False), ("TIGER neighbours", "tiger", "reserve", "neighbours", True),
           ("TIGER blend", "tiger", "reserve", "blend", True), ("TIGER blend, competing", "tiger", "compete", "blend", True))


def table(rows: list[dict], tau: float) -> str:
    rows = [r for r in rows if "rule" in r and r["model"] in ("tiger", "knn")]
    out = ["| dataset | epsilon | " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for d in dict.fromkeys(r["dataset"] for r in rows):
        for eps in sorted({r["epsilon"] for r in rows if r["dataset"] == d}):
            cells = []
            for _, model, slots, rule, kernel in COLUMNS:
                rs = sorted((r for r in rows if r["dataset"] == d and r["epsilon"] == eps and r["model"] == model
                             and r["slots"] == slots and r["rule"] == rule and (not kernel or r["tau"] == tau)),
                            key=lambda r: r["seed"])
                if not rs:
                    cells.append("-")
                    continue
                rec = [r["recall@10"] for r in rs]
                cells.append(" / ".join(f"{x:.4f}" for x in rec) + f" ({sum(rec) / len(rec):.4f}; N "
                             f"{sum(r['ndcg@10'] for r in rs) / len(rs):.4f})")
            out.append(f"| {d} | {eps} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "coldstart.json")
    a = ap.parse_args()
    print(table(json.loads(a.json.read_text()), a.tau))
