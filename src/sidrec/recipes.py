"""Recipes: a pipeline config with a ``[recipe]`` section, one file per table row.

```toml
[recipe]
table = "reproduce"                 # the results file it appends to: RESULTS/<table>.jsonl
row = "beauty-letter-tiger"         # default: the file name
seeds = [0, 1]                      # what `sidrec run RECIPE` runs when no --seed is given
model = "tiger"                     # the stage whose test metrics make the row (default: the last model)
tokens = "letter (CF 0.2)"          # how the row names its semantic IDs (default: the tokenizer method)
note = "..."                        # shown under the table
budget = "..."                      # a short-budget row says so here
published = { source = "LETTER Table 1 (LETTER-TIGER)", "recall@10" = 0.0672, "ndcg@10" = 0.0364 }

[data]                              # then the pipeline's sections (sidrec.pipeline)
name = "beauty"
...
```
Input paths are relative to the data root (``--data-root``). A finished run appends its rows to the results
file; a run stopped at a time budget appends nothing and resumes when run again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sidrec.config import load_file
from sidrec.errors import SidrecError
from sidrec.pipeline import device_name, needed, run_pipeline, validate
from sidrec.train.generator import GENERATORS
from sidrec.results import append_rows, commit, read_rows, versions
from sidrec.utils.log import info as log_info
from sidrec.utils.artifacts import read_json

RECIPE_KEYS = {"table", "row", "seeds", "model", "tokens", "note", "budget", "published", "vary", "title"}


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read and check a recipe: known sections and keys, a table name, a stage plan that resolves."""
    path = Path(path)
    cfg = load_file(path)
    rec = cfg.get("recipe")
    if not isinstance(rec, dict):
        raise SidrecError(f"{path}: not a recipe (no [recipe] section); `sidrec run CONFIG --out DIR` runs a plain "
                          f"pipeline config")
    bad = set(rec) - RECIPE_KEYS
    if bad:
        raise SidrecError(f"{path}: unknown [recipe] key(s) {sorted(bad)}; known: {sorted(RECIPE_KEYS)}")
    if not rec.get("table"):
        raise SidrecError(f"{path}: [recipe] needs table = NAME (its results file)")
    validate(cfg, str(path))
    ens = cfg.get("ensemble") or {}
    if ens.get("with"):  # other recipes' runs in the ensemble: their paths are relative to this recipe
        ens["with"] = [str((path.parent / w).resolve()) for w in ens["with"]]
        for w in ens["with"]:
            if not Path(w).is_file():
                raise SidrecError(f"{path}: [ensemble] with {w}: no such recipe file")
    rec.setdefault("row", path.stem)
    rec.setdefault("seeds", [0, 1])
    stages = needed(cfg)
    if rec.get("model") and rec["model"] not in stages:
        raise SidrecError(f"{path}: [recipe] model = {rec['model']!r} is not a stage of this recipe ({stages})")
    return cfg


def default_results_dir(recipe: Path) -> Path | None:
    """``experiments/recipes/<table>/x.toml`` -> ``experiments/results``: the results folder beside the
    nearest ``recipes`` folder above the recipe."""
    for parent in recipe.resolve().parents:
        if parent.name == "recipes":
            return parent.parent / "results"
    return None


def recipe_path_for_row(recipe: Path) -> str:
    """How a row names its recipe: the path from the folder above ``recipes`` (``recipes/reproduce/x.toml``)."""
    parts = recipe.resolve().parts
    if "recipes" in parts:
        i = len(parts) - 1 - parts[::-1].index("recipes")
        return "/".join(parts[i:])
    return recipe.name


def run_recipe(path: str | Path, *, seed: int, work: str | Path = "runs/work", data_root: str | Path | None = None,
               results: str | Path | None = None, smoke: bool = False, until: str | None = None,
               log=log_info) -> list[dict]:
    """Run one seed of a recipe; append its rows to RESULTS/<table>.jsonl (a smoke run: WORK/smoke-results).
    ``until``: stop after that stage; no rows."""
    path = Path(path)
    cfg = load_recipe(path)
    rec = cfg["recipe"]
    res = run_pipeline(cfg, work=work, seed=seed, data_root=data_root, smoke=smoke, until=until, log=log)
    if res.get("partial"):
        log(f"stopped after stage {until}: {res['dirs'][until]}")
        return []
    rows = rows_of(cfg, path, res, smoke=smoke)
    target = Path(work) / "smoke-results" if smoke else Path(results) if results else \
        (default_results_dir(path) or Path(work) / "results")
    file = target / f"{rec['table']}.jsonl"
    key = lambda r: (r["row"], r["seed"], r.get("variant"), json.dumps(r.get("fingerprints"), sort_keys=True))  # noqa: E731
    have = {key(r) for r in read_rows(file)} if file.is_file() else set()
    new = [r for r in rows if key(r) not in have]
    append_rows(file, new)
    log(f"{len(new)} row(s) -> {file}" + (f" ({len(rows) - len(new)} already there)" if len(new) < len(rows) else ""))
    return rows


def _tokens(cfg: dict) -> str:
    rec = cfg["recipe"]
    if rec.get("tokens"):
        return rec["tokens"]
    if "tokenize" in cfg:
        return cfg["tokenize"].get("method", "rqvae")
    if "vqrec" in cfg:
        return "opq"
    if "coldstart" in cfg:
        return cfg["coldstart"].get("method", "rqvae")
    return "-"


def rows_of(cfg: dict, path: Path, res: dict, *, smoke: bool = False) -> list[dict]:
    """The results rows of a finished pipeline run (several for cold-start and diversity runs)."""
    rec = cfg["recipe"]
    model = res["model"]
    dirs = {k: Path(v) for k, v in res["dirs"].items()}
    base = {"table": rec["table"], "row": rec["row"], "recipe": recipe_path_for_row(path),
            "dataset": cfg.get("data", {}).get("name") or dirs["data"].name, "model": model, "tokens": _tokens(cfg),
            "seed": res["seed"], "published": rec.get("published"), "commit": commit(), "gpu": device_name(),
            "versions": versions(), "stage_seconds": res["seconds"], "fingerprints": res["fingerprints"]}
    for k in ("note", "budget"):
        if rec.get(k):
            base[k] = rec[k]
    if smoke:
        base["smoke"] = True
    train = _train_info(dirs.get(model))
    if "coldstart" in dirs:
        rows = read_json(dirs["coldstart"] / "rows.json")
        return [{**base, **_train_info(dirs["coldstart"] / "run"), "model": r["model"],
                 "variant": _cold_variant(r), "users": r["users"],
                 "metrics": {k: r[k] for k in r if "@" in k}} for r in rows]
    if "diversity" in dirs:
        rows = read_json(dirs["diversity"] / "rows.json")
        gen = next(g for g in GENERATORS if g in dirs)
        return [{**base, **_train_info(dirs[gen]), "model": gen,
                 "variant": "beam search" if r["decoding"] == "beam" else f"sampling T={r['temperature']:g}",
                 "users": r["users"], "metrics": {k: r[k] for k in r if "@" in k}} for r in rows]
    m = read_json(dirs[model] / "metrics.json")
    test = m.get("test", {})
    return [{**base, **train, "metrics": {k: round(float(v), 6) for k, v in test.items() if "@" in k},
             "users": test.get("users")}]


def _train_info(run: Path | None) -> dict:
    if run is None or not (run / "metrics.json").is_file():
        return {"epochs": None, "best_epoch": None}
    m = read_json(run / "metrics.json")
    return {"epochs": m.get("epochs_run"), "best_epoch": m.get("best_epoch"), "stopped": m.get("stopped")}


def _cold_variant(r: dict) -> str:
    parts = [f"eps {r['epsilon']:g}", r["model"]]
    if r.get("rule"):
        parts.append(r["rule"] + (f" tau {r['tau']:g}" if r.get("tau") else ""))
    if r.get("slots"):
        parts.append(r["slots"])
    if r.get("levels"):
        parts.append(f"{r['levels']} levels")
    return " ".join(parts)
