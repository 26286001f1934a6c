"""The cold-start tables of bench/README.md from bench/results/coldstart.json (issue 13).

  python bench/coldstart_table.py [--tau 0.1] [--json bench/results/coldstart.json]

One row per (dataset, epsilon): R@10 seed by seed and the mean N@10 of the text baselines (semantic KNN on the mean
history embedding, TIGER's; kernel KNN, the history's items as anchors) and of the generator's new-item rules
(prefix, neighbours, blend; reserved slots, and blend with competing slots) of each generator run (TIGER, LC-Rec; not
VQ-Rec, whose rows have no rule)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (("semantic KNN", "knn", "reserve", "history", False), ("kernel KNN", "knn", "reserve", "kernel", True),
           ("prefix", "gen", "reserve", "prefix", False), ("neighbours", "gen", "reserve", "neighbours", True),
           ("blend", "gen", "reserve", "blend", True), ("blend, competing", "gen", "compete", "blend", True))


def table(rows: list[dict], tau: float) -> str:
    """One table per generator (tiger, lcrec), its runs' baselines beside it (the KNN rows of the same runs)."""
    rows = [r for r in rows if "rule" in r and r["model"] in ("tiger", "lcrec", "knn")]
    out = ["| dataset | generator | epsilon | " + " | ".join(c[0] for c in COLUMNS) + " |",
           "|---" * (len(COLUMNS) + 3) + "|"]
    gens = {(r["dataset"], r["seed"]): r["model"] for r in rows if r["model"] != "knn"}
    for d, g in dict.fromkeys((r["dataset"], gens.get((r["dataset"], r["seed"]))) for r in rows):
        for eps in sorted({r["epsilon"] for r in rows if r["dataset"] == d}):
            cells = []
            for _, model, slots, rule, kernel in COLUMNS:
                rs = sorted((r for r in rows if r["dataset"] == d and gens.get((d, r["seed"])) == g
                             and r["epsilon"] == eps and r["model"] == (g if model == "gen" else model)
                             and r["slots"] == slots and r["rule"] == rule and (not kernel or r["tau"] == tau)),
                            key=lambda r: r["seed"])
                if not rs:
                    cells.append("-")
                    continue
                rec = [r["recall@10"] for r in rs]
                cells.append(" / ".join(f"{x:.4f}" for x in rec) + f" ({sum(rec) / len(rec):.4f}; N "
                             f"{sum(r['ndcg@10'] for r in rs) / len(rs):.4f})")
            out.append(f"| {d} | {g} | {eps} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "coldstart.json")
    a = ap.parse_args()
    print(table(json.loads(a.json.read_text()), a.tau))
