"""Run report (markdown + PNG): metrics next to SASRec, code-usage plots, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from sidrec.utils.artifacts import read_json


def _curves(runs: dict[str, Path], out: Path) -> str | None:
    matplotlib.use("Agg")

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    drawn = False
    for name, d in runs.items():
        log = d / "log.jsonl"
        if not log.is_file():
            continue
        recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        axes[0].plot([r["epoch"] for r in recs], [r["loss"] for r in recs], label=name)
        val = [r for r in recs if "validation" in r]
        axes[1].plot([r["epoch"] for r in val], [r["validation"].get("ndcg@10", float("nan")) for r in val], "o-",
                     label=name)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    axes[0].set_title("training loss")
    axes[1].set_title("validation NDCG@10")
    for a in axes:
        a.set_xlabel("epoch")
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)
    plt.close(fig)
    return "training_curves.png"


def training_status(m: dict) -> str:
    """How a run's training ended, in words: early stop, or cut by its epoch / time budget while improving."""
    ran, best, why = m.get("epochs_run"), m.get("best_epoch"), m.get("stopped")
    if ran is None:
        return "-"
    if why == "patience":
        return f"early stop at epoch {ran} (best {best})"
    improving = best is not None and ran - best <= max(2, ran // 10)
    cut = "its epoch budget" if why == "epochs" else "its time budget"
    return f"cut by {cut} at epoch {ran} (best {best})" + (": still improving" if improving else "")


def write_run_report(out: Path, runs: dict[str, Path], tokens: Path | None, *, title: str) -> dict:
    test, valid, status = {}, {}, {}
    for name, d in runs.items():
        m = read_json(d / "metrics.json")
        test[name], valid[name], status[name] = m["test"], m["validation"], training_status(m)
    lines = [f"# {title}", "", "## Test metrics (full ranking over all items, leave-one-out)", "",
             "| model | R@5 | N@5 | R@10 | N@10 | R@20 | N@20 |", "|---|---|---|---|---|---|---|"]
    for name, m in test.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(f'{x}@{k}', float('nan')):.4f}"
                                                for k in (5, 10, 20) for x in ("recall", "ndcg")) + " |")
    lines += ["", "## Training", "", "| model | training |", "|---|---|"] + [f"| {n} | {t} |" for n, t in status.items()]
    if any("still improving" in t for t in status.values()):
        lines += ["", "A model cut while still improving scores below what it reaches when trained to its early stop: "
                      "these figures are a short budget, not the model's level (runs at the papers' budget: "
                      "experiments/RESULTS.md in the source)."]
    curve = _curves(runs, out)
    if curve:
        lines += ["", f"![training curves]({curve})"]
    if tokens is not None and (tokens / "report.json").is_file():
        rep = read_json(tokens / "report.json")
        lines += ["", f"## Semantic IDs ({rep['method']})", "",
                  f"- codes used per level: {rep['usage_per_level']} of {rep['codebook_size']}",
                  f"- collision rate before / after: {rep['collision_rate_before']:.4f} / {rep['collision_rate_after']:.4f}",
                  f"- CF overlap: {rep['cf_overlap']}", f"- reconstruction MSE: {rep['reconstruction_mse']}", ""]
        for p in rep.get("plots", []):
            lines.append(f"![{p}]({Path('..') / tokens.name / p if tokens.parent != out else tokens.name + '/' + p})")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    summary = {"test": test, "validation": valid, "training": status, "report": str(out / "report.md")}
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    return summary
