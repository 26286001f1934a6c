"""The protocol: leave-one-out, full ranking over all items, explicit options recorded in the results."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sidrec.config import to_dict
from sidrec.data.dataset import Dataset
from sidrec.data.io import check_file, iter_records
from sidrec.errors import SidrecError
from sidrec.eval.metrics import DEFAULT_KS, metrics_from_ranks, ranks_from_lists, target_ranks
from sidrec.utils.artifacts import read_parquet


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    ks: tuple[int, ...] = DEFAULT_KS
    exclude_history: bool = False  # off as in TIGER/LETTER; when on, history items are masked (target too)
    batch_size: int = 1024
    max_history: int = 20


def _result(split: str, n: int, m: dict[str, float], cfg: EvalConfig, **extra) -> dict:
    return {"split": split, "users": n, **m, "protocol": {"ranking": "full", "leave_one_out": True,
                                                        **to_dict(cfg), **extra}}


def evaluate_scorer(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ds: Dataset, split: str,
                    cfg: EvalConfig = EvalConfig(), *, device: str | torch.device = "cpu") -> dict:
    """Score every user with ``score_fn(user_idx, history) -> (B, n_items + 1)`` and rank all items."""
    users, hist, targets = ds.eval_inputs(split, cfg.max_history)
    if cfg.exclude_history:
        hrows, hitems = ds.history_sets(split)
    ranks = []
    for s in range(0, len(users), cfg.batch_size):
        e = min(s + cfg.batch_size, len(users))
        u = torch.as_tensor(users[s:e], device=device)
        h = torch.as_tensor(hist[s:e], device=device)
        with torch.no_grad():
            scores = score_fn(u, h).float()
        scores[:, 0] = -torch.inf  # padding is never an item
        if cfg.exclude_history:
            sel = (hrows >= s) & (hrows < e)
            r = torch.as_tensor(hrows[sel] - s, device=device)
            c = torch.as_tensor(hitems[sel], device=device)
            scores[r, c] = -torch.inf
        ranks.append(target_ranks(scores, torch.as_tensor(targets[s:e], device=device)).cpu())
    return _result(split, len(users), metrics_from_ranks(torch.cat(ranks), cfg.ks), cfg)


def evaluate_lists(ranked: np.ndarray, ds: Dataset, split: str, cfg: EvalConfig = EvalConfig(), **extra) -> dict:
    """Score ranked item_idx lists (n_users, K) (row u-1 = user u; -1/0 = empty slot)."""
    _, _, targets = ds.eval_inputs(split, 1)
    if cfg.exclude_history:
        hrows, hitems = ds.history_sets(split)
        hist = pd.MultiIndex.from_arrays([hrows, hitems])
        rows = np.repeat(np.arange(ranked.shape[0]), ranked.shape[1])
        bad = pd.MultiIndex.from_arrays([rows, ranked.ravel()]).isin(hist).reshape(ranked.shape)
        ranked = _compact(np.where(bad, -1, ranked))
    ranks = ranks_from_lists(ranked, targets)
    return _result(split, len(targets), metrics_from_ranks(ranks, cfg.ks), cfg, **extra)


def _compact(ranked: np.ndarray) -> np.ndarray:
    """Shift entries left over -1 holes, keeping order (vectorised)."""
    keep = ranked > 0
    order = np.argsort(~keep, axis=1, kind="stable")
    out = np.take_along_axis(ranked, order, 1)
    return np.where(np.take_along_axis(keep, order, 1), out, -1)


def read_predictions(path: str | Path, ds: Dataset, max_k: int) -> tuple[np.ndarray, dict]:
    """Read a predictions file of raw user ids and ranked raw item ids into an (n_users, max_k) matrix."""
    p = check_file(path)
    if p.suffix == ".parquet":
        df = read_parquet(p)
        for c in ("user", "items"):
            if c not in df.columns:
                raise SidrecError(f"{p}: missing column {c!r} (have {list(df.columns)})")
        recs = list(zip(df["user"].astype(str), df["items"]))
        lines = list(range(1, len(recs) + 1))
    else:
        recs, lines = [], []
        for n, rec in iter_records(p, "json"):
            if "user" not in rec or "items" not in rec:
                raise SidrecError(f"{p}:{n}: each line needs 'user' and 'items'")
            if not isinstance(rec["items"], list):
                raise SidrecError(f"{p}:{n}: 'items' must be a list of item ids")
            recs.append((str(rec["user"]), rec["items"]))
            lines.append(n)
    uidx = pd.Series(ds.users["user_idx"].to_numpy(), index=ds.users["user_id"].astype(str))
    iidx = ds.item_index()
    out = np.full((ds.n_users, max_k), -1, dtype=np.int64)
    report = {"unknown_users": 0, "unknown_items": 0, "duplicate_items": 0, "users_without_predictions": 0}
    seen = np.zeros(ds.n_users, dtype=bool)
    for (u, items), n in zip(recs, lines):
        if u not in uidx.index:
            report["unknown_users"] += 1
            continue
        row = int(uidx[u]) - 1
        ids = pd.Series([str(x) for x in list(items)], dtype=str)
        mapped = ids.map(iidx)
        report["unknown_items"] += int(mapped.isna().sum())
        mapped = mapped.fillna(-1).astype(np.int64)
        dup = mapped.duplicated() & (mapped > 0)
        report["duplicate_items"] += int(dup.sum())
        vals = mapped[~dup].to_numpy()[:max_k]
        out[row, : len(vals)] = vals
        seen[row] = True
    report["users_without_predictions"] = int((~seen).sum())
    return out, report


def evaluate_predictions(path: str | Path, ds: Dataset, split: str, cfg: EvalConfig = EvalConfig()) -> dict:
    """Score an outside model's ranked lists; users without a list count as misses (reported)."""
    ranked, report = read_predictions(path, ds, max(cfg.ks))
    return evaluate_lists(ranked, ds, split, cfg, predictions=str(path), **report)


def write_metrics(path: str | Path, metrics: dict) -> None:
    Path(path).write_text(json.dumps(metrics, indent=2))


def metrics_table(rows: dict[str, dict], ks: Sequence[int] = (5, 10)) -> list[list[str]]:
    header = ["model"] + [f"{m}@{k}" for k in ks for m in ("R", "N")]
    body = [[name] + [f"{r.get(f'{m}@{k}', float('nan')):.4f}" for k in ks for m in ("recall", "ndcg")]
            for name, r in rows.items()]
    return [header] + body
