"""Results files and the tables generated from them.

A results file is JSON lines, one row per finished run: ``RESULTS/<table>.jsonl`` for quality rows (written by
``sidrec run RECIPE``) and ``RESULTS/bench-<what>.jsonl`` for benchmarks. A quality row holds at least
``table, row, recipe, dataset, model, tokens, seed, metrics, published, epochs, best_epoch, commit, gpu,
versions, stage_seconds`` (and ``variant`` where one run gives several rows: cold-start epsilons and rules,
decoding temperatures). A benchmark row holds ``bench, variant``, its figures and ``gpu`` (or ``"cpu"``).

``render(RESULTS, OUT_MD)`` (``sidrec results``) writes every table as markdown (mean and min-max over seeds,
the published figure and the ratio to it, a link to the recipe) with one plot per table.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch

from sidrec import __version__
from sidrec.errors import SidrecError

REQUIRED = ("table", "row", "recipe", "dataset", "model", "tokens", "seed", "metrics", "published", "epochs",
            "best_epoch", "commit", "gpu", "versions", "stage_seconds")
METRIC_ORDER = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50",
                "entropy@10")
SHORT = {"recall": "R", "ndcg": "N", "entropy": "Entropy"}


def commit() -> str:
    """The source's git commit (``+dirty`` with uncommitted changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10)
        if rev.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def versions() -> dict[str, str]:
    return {"sidrec": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__}


def append_rows(path: str | Path, rows: list[dict]) -> None:
    """Append rows to a results file (one JSON object per line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.writelines(json.dumps(r, default=_plain) + "\n" for r in rows)


def _plain(x: Any):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def read_rows(path: str | Path) -> list[dict]:
    """The rows of one results file; a damaged line is an error naming the file and line."""
    path = Path(path)
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise SidrecError(f"{path}:{i}: not a JSON object ({e.msg})") from None
    return rows


def check_row(row: dict, where: str) -> None:
    missing = [k for k in REQUIRED if k not in row]
    if missing:
        raise SidrecError(f"{where}: results row lacks {missing}")


# -- rendering -------------------------------------------------------------------------------------------------
def _fmt(x: float | None, nd: int = 4) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def _label(metric: str) -> str:
    name, _, k = metric.partition("@")
    return f"{SHORT.get(name, name)}@{k}" if k else metric


def _metric_columns(rows: list[dict]) -> list[str]:
    have = {k for r in rows for k in r.get("metrics", {})}
    cols = [m for m in METRIC_ORDER if m in have]
    return cols or sorted(have)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["row"], r.get("variant") or ""), []).append(r)
    return out


def _cell(vals: list[float]) -> str:
    if not vals:
        return "-"
    mean = sum(vals) / len(vals)
    return _fmt(mean) + (f" ({_fmt(min(vals))}-{_fmt(max(vals))})" if len(vals) > 1 else "")


def summarise(rows: list[dict]) -> list[dict]:
    """Per (row, variant): seeds, mean / min / max of each metric, published figures and ratios."""
    out = []
    for (name, variant), rs in _groups(rows).items():
        rs = sorted(rs, key=lambda r: r["seed"])
        first = rs[-1]
        stats = {}
        for m in _metric_columns(rs):
            v = [r["metrics"][m] for r in rs if r["metrics"].get(m) is not None]
            if v:
                stats[m] = {"mean": float(np.mean(v)), "min": float(min(v)), "max": float(max(v)), "values": v}
        pub = first.get("published") or {}
        ratio = {m: stats[m]["mean"] / pub[m] for m in ("recall@10", "ndcg@10") if pub.get(m) and m in stats}
        out.append({"row": name, "variant": variant, "recipe": first.get("recipe"), "dataset": first.get("dataset"),
                    "model": first.get("model"), "tokens": first.get("tokens"), "seeds": [r["seed"] for r in rs],
                    "epochs": [(r.get("epochs"), r.get("best_epoch")) for r in rs], "stats": stats,
                    "published": pub, "ratio": ratio, "gpu": sorted({str(r.get("gpu")) for r in rs}),
                    "note": first.get("note", ""), "budget": first.get("budget", "")})
    return out


def _table_md(table: str, rows: list[dict], link_root: Path, out_dir: Path) -> list[str]:
    summ = summarise(rows)
    cols = _metric_columns(rows)
    has_variant = any(s["variant"] for s in summ)
    head = ["row"] + (["variant"] if has_variant else []) + ["dataset", "model", "tokens", "seeds",
                                                              "epochs (best)"] + [_label(c) for c in cols]
    has_pub = any(s["published"] for s in summ)
    if has_pub:
        head += ["published R@10 / N@10", "ours / published R@10, N@10"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summ:
        rec = s["recipe"]
        name = f"[{s['row']}]({_rel(link_root / rec, out_dir)})" if rec else s["row"]
        ep = ", ".join("-" if e is None else f"{e} ({b})" if b is not None else str(e) for e, b in s["epochs"])
        cells = [name] + ([s["variant"] or "-"] if has_variant else []) + [
            str(s["dataset"]), str(s["model"]), str(s["tokens"]), ",".join(map(str, s["seeds"])), ep]
        cells += [_cell(s["stats"][c]["values"]) if c in s["stats"] else "-" for c in cols]
        if has_pub:
            p = s["published"]
            pub = f"{_fmt(p.get('recall@10'))} / {_fmt(p.get('ndcg@10'))} ({p.get('source', '')})" if p else "-"
            rat = " / ".join(f"{s['ratio'][m]:.0%}" for m in ("recall@10", "ndcg@10") if m in s["ratio"]) or "-"
            cells += [pub, rat]
        lines.append("| " + " | ".join(cells) + " |")
    notes = list(dict.fromkeys(f"- **{s['row']}**: {s['note']}" for s in summ if s["note"]))
    budget = sorted({s["budget"] for s in summ if s["budget"]})
    gpus = sorted({g for s in summ for g in s["gpu"]})
    lines += ["", f"Hardware: {', '.join(gpus)}."] + ([f"Budget: {'; '.join(budget)}."] if budget else [])
    return lines + ([""] + notes if notes else [])


def _rel(target: Path, start: Path) -> str:
    return os.path.relpath(target, start).replace(os.sep, "/")


def _plot(table: str, rows: list[dict], out: Path) -> Path | None:
    """Ours (mean, min-max over seeds) vs the published figure, R@10 (or the first metric) per row."""
    matplotlib.use("Agg")

    summ = summarise(rows)
    metric = "recall@10" if any("recall@10" in s["stats"] for s in summ) else (_metric_columns(rows) or [None])[0]
    summ = [s for s in summ if metric in s["stats"]]
    if not summ:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(summ) + 1.2))
    y = np.arange(len(summ))
    mean = np.array([s["stats"][metric]["mean"] for s in summ])
    lo = mean - np.array([s["stats"][metric]["min"] for s in summ])
    hi = np.array([s["stats"][metric]["max"] for s in summ]) - mean
    ax.barh(y, mean, xerr=[lo, hi], color="#4C72B0", alpha=0.85, label="sidrec (mean, min-max over seeds)")
    pub = [(i, s["published"].get(metric)) for i, s in enumerate(summ) if s["published"].get(metric)]
    if pub:
        ax.scatter([p for _, p in pub], [i for i, _ in pub], marker="|", s=250, color="#C44E52", zorder=3,
                   label="published")
    ax.set_yticks(y, [s["row"] + (f" [{s['variant']}]" if s["variant"] else "") for s in summ], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(_label(metric))
    ax.set_title(table)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _bench_md(rows: list[dict]) -> list[str]:
    skip = {"bench", "command", "versions", "commit"}
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in skip and k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(_bench_cell(r.get(k)) for k in keys) + " |")
    cmds = sorted({r["command"] for r in rows if r.get("command")})
    return lines + ([""] + [f"- `{c}`" for c in cmds] if cmds else [])


def _bench_cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if abs(v) < 1000:
            return f"{v:.4g}"
        return f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"
    if isinstance(v, list) and len(json.dumps(v)) > 120:  # a long list (a profile's kernel table, say): its head
        def short(x):
            return x[:40] + "…" if isinstance(x, str) and len(x) > 40 else short_list(x) if isinstance(x, list) else x

        def short_list(xs):
            return [short(x) for x in xs]
        return json.dumps(short_list(v[:3]), ensure_ascii=False) + f" … +{len(v) - 3} in the jsonl" * (len(v) > 3)
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def load_tables(results: str | Path) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
    """(quality tables, benchmark tables) of a results folder, by file stem."""
    results = Path(results)
    if not results.is_dir():
        raise SidrecError(f"{results}: no results folder")
    tables, benches = {}, {}
    for f in sorted(results.glob("*.jsonl")):
        rows = read_rows(f)
        if f.stem.startswith("bench-"):
            benches[f.stem] = rows
        else:
            for i, r in enumerate(rows, 1):
                check_row(r, f"{f}:{i}")
            tables[f.stem] = rows
    return tables, benches


def render(results: str | Path, out_md: str | Path, *, recipes_root: str | Path | None = None,
           about: str | Path | None = None) -> Path:
    """Write every table of ``results`` into ``out_md`` (plots beside it, in ``plots/``)."""
    results, out_md = Path(results), Path(out_md)
    tables, benches = load_tables(results)
    meta = tomllib.loads(Path(about).read_text()) if about and Path(about).is_file() else {}
    root = Path(recipes_root) if recipes_root else out_md.parent
    order = [t for t in meta if t in tables or t in benches] + \
        sorted(t for t in (*tables, *benches) if t not in meta)
    lines = ["# Results", "", "Generated by `sidrec results` from the results files in "
             f"`{results.name}/`; do not edit by hand. Each quality row links to the recipe that "
             "makes it (`sidrec run RECIPE --seed S`). Figures: mean over seeds, (min-max) where there are several.",
             "", "Contents: " + ", ".join(f"[{meta.get(t, {}).get('title', t)}](#{t})" for t in order), ""]
    for t in order:
        info = meta.get(t, {})
        lines += [f'<a id="{t}"></a>', f"## {info.get('title', t)}", ""]
        if info.get("about"):
            lines += [info["about"].strip(), ""]
        if t in tables:
            lines += _table_md(t, tables[t], root, out_md.parent)
            done = {r["row"] for r in tables[t]}
            todo = sorted(f for f in (root / "recipes" / t).glob("*.toml") if f.stem not in done) \
                if (root / "recipes" / t).is_dir() else []
            if todo:
                lines += ["", "Recipes with no results yet: " + ", ".join(
                    f"[{f.stem}]({_rel(f, out_md.parent)})" for f in todo) + "."]
            png = _plot(info.get("title", t), tables[t], out_md.parent / "plots" / f"{t}.png")
            if png is not None:
                lines += ["", f"![{t}]({_rel(png, out_md.parent)})"]
        else:
            lines += _bench_md(benches[t])
        lines.append("")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("\n".join(lines) + "\n")
    return out_md


# -- benchmarks --------------------------------------------------------------------------------------------------
def flatten(result: Any) -> list[dict]:
    """A benchmark's result -> rows: a list stays a list; a dict with a list of ``rows`` / ``runs`` gives one row
    per entry, each with the dict's scalar fields; any other dict is one row."""
    if isinstance(result, list):
        return [dict(r) for r in result]
    for key in ("rows", "runs"):
        if isinstance(result.get(key), list):
            top = {k: v for k, v in result.items() if not isinstance(v, (list, dict))}
            return [{**top, **r} for r in result[key]]
    return [dict(result)]


def write_bench(bench: str, result: Any, results: str | Path | None, *, variant: Any = None) -> list[dict]:
    """Append a benchmark's rows to RESULTS/bench-<bench>.jsonl, each with ``bench``, ``variant``, ``gpu`` (or
    "cpu"), ``versions``, ``commit`` and the command line; returns the rows. ``variant``: a value, or a function
    of the row. ``results`` None: nothing written."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows = []
    for r in flatten(result):
        v = variant(r) if callable(variant) else variant
        rows.append({"bench": bench, "variant": r.pop("variant", v), **r, "gpu": r.get("gpu") or gpu,
                     "versions": versions(), "commit": commit(),
                     "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])})
    if results is not None:
        append_rows(Path(results) / f"bench-{bench}.jsonl", rows)
    return rows
