"""Preparation: de-duplication, k-core to a fixed point, chronological order, id remapping, item text,
leave-one-out split; writes the dataset directory atomically (temp dir, then rename)."""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sidrec import __version__
from sidrec.config import to_dict
from sidrec.data.io import atomic_dir
from sidrec.data.schema import TEXT_FIELDS_DEFAULT, RawData
from sidrec.errors import SidrecError
from sidrec.utils.artifacts import sha256_file, write_manifest


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    min_count: int = 5  # k-core: users and items with at least this many interactions (fixed point)
    max_history: int = 20  # history cut used by the models (recorded here, applied at training time)
    text_fields: tuple[str, ...] = TEXT_FIELDS_DEFAULT  # item fields joined into the item text, in order
    dedup: bool | None = None  # collapse repeated (user, item); None = as the source calls for


def _flatten(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(s for s in (_flatten(x) for x in v) if s)
    return str(v)


_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"\s+")


def clean_text(v: Any) -> str:
    """HTML-unescape, strip tags, normalise whitespace."""
    s = html.unescape(_flatten(v))
    s = _TAG.sub(" ", s)
    return _WS.sub(" ", s).strip()


def _natural_order(ids: pd.Index) -> np.ndarray:
    ids = pd.Index(ids.astype(str))
    num = pd.to_numeric(pd.Series(ids), errors="coerce")
    if num.notna().all():
        return np.argsort(num.to_numpy(), kind="stable")
    return np.argsort(ids.to_numpy(), kind="stable")


def kcore(inter: pd.DataFrame, k: int) -> tuple[pd.DataFrame, int]:
    """Iterate until every user and item has >= k interactions; returns (frame, rounds). Counts run on
    integer codes (``np.bincount``), not on the id strings: 10^7 rows in seconds."""
    u, _ = pd.factorize(inter["user"])
    i, _ = pd.factorize(inter["item"])
    rows = np.arange(len(inter))
    rounds = 0
    while True:
        keep = (np.bincount(u)[u] >= k) & (np.bincount(i)[i] >= k)
        rounds += 1
        if keep.all():
            return (inter if len(rows) == len(inter) else inter.iloc[rows]), rounds
        u, i, rows = u[keep], i[keep], rows[keep]


def prepare(raw: RawData, out: str | Path, cfg: PrepareConfig = PrepareConfig(), *, source: str = "") -> dict:
    """Turn ``raw`` into a dataset directory at ``out``; returns the stats dict (also ``out/stats.json``)."""
    out = Path(out)
    inter = raw.interactions
    filtered = dict(raw.filtered)
    n_raw = len(inter)
    if n_raw == 0:
        raise SidrecError(f"{raw.source_files[0] if raw.source_files else source}: no interactions found")
    inter = _filter(inter, raw, cfg, filtered)
    if inter.empty:
        where = raw.source_files[0] if raw.source_files else source
        raise SidrecError(f"{where}: no interactions left after {cfg.min_count}-core filtering "
                          f"({n_raw} read); lower --min-count")
    users, items, inter_out, counts, split_code = _index_and_split(inter)
    del inter
    item_df, fields = _item_table(raw, items, cfg)
    has_text = item_df["text"].str.len() > 0
    user_df = pd.DataFrame({"user_idx": np.arange(1, len(users) + 1), "user_id": users.astype(str)})

    stats = {
        "source": source,
        "users": int(len(users)),
        "items": int(len(items)),
        "interactions": int(len(inter_out)),
        "avg_seq_len": round(float(counts.mean()), 4),
        "density": float(len(inter_out) / (len(users) * len(items))),
        "raw_interactions": int(n_raw),
        "filtered": {k: int(v) for k, v in filtered.items()},
        "items_with_text": int(has_text.sum()),
        "items_without_text": int((~has_text).sum()),
        "text_fields": fields,
        "split": {"protocol": "leave-one-out", "train": int((split_code == 0).sum()),
                  "valid": int((split_code == 1).sum()), "test": int((split_code == 2).sum())},
        "config": to_dict(cfg),
        "inputs": [{"path": f, "sha256": _sha256(f)} for f in raw.source_files],
        "sidrec_version": __version__,
    }
    stats["fingerprint"] = hashlib.sha256(
        pd.util.hash_pandas_object(inter_out[["user_idx", "item_idx"]], index=False).to_numpy().tobytes()
        + "\x00".join(item_df["text"]).encode()).hexdigest()[:16]

    with atomic_dir(out) as tmp:
        inter_out.to_parquet(tmp / "interactions.parquet", index=False)
        item_df.to_parquet(tmp / "items.parquet", index=False)
        user_df.to_parquet(tmp / "users.parquet", index=False)
        (tmp / "stats.json").write_text(json.dumps(stats, indent=2))
        write_manifest(tmp)
    return stats


def _filter(inter: pd.DataFrame, raw: RawData, cfg: PrepareConfig, filtered: dict) -> pd.DataFrame:
    """Rows with a missing field, duplicate (user, item) rows and the k-core's leftovers out; each count noted
    in ``filtered``. Adds ``_row`` (file order, the tie-break of equal times)."""
    missing = inter["user"].isna() | inter["item"].isna() | inter["time"].isna()
    filtered["rows with missing user/item/time"] = int(missing.sum())
    inter = inter[~missing] if missing.any() else inter
    inter = inter.assign(_row=np.arange(len(inter)))
    dedup = raw.dedup if cfg.dedup is None else cfg.dedup
    if dedup:  # keep each (user, item)'s earliest row: chronological per user, file order breaking ties
        u = pd.factorize(inter["user"])[0]  # integer codes: sorting 10^7 strings is what costs
        inter = inter.iloc[np.lexsort((inter["_row"].to_numpy(), inter["time"].to_numpy(), u))]
        before = len(inter)
        inter = inter.drop_duplicates(["user", "item"], keep="first")
        filtered["duplicate (user, item) rows"] = before - len(inter)
    before = len(inter)
    inter, rounds = kcore(inter, cfg.min_count)
    filtered[f"below {cfg.min_count}-core ({rounds} rounds)"] = before - len(inter)
    if cfg.min_count < 3:
        codes = pd.factorize(inter["user"])[0]
        uc = np.bincount(codes)[codes]
        filtered["users with < 3 interactions (no leave-one-out split)"] = int((uc < 3).sum())
        inter = inter[uc >= 3]
    return inter


def _index_and_split(inter: pd.DataFrame):
    """Users and items numbered from 1 (natural order of their ids); the interactions chronological per user
    with their leave-one-out split. Returns (users, items, interactions frame, per-user counts, split codes)."""
    # ids may arrive dictionary-encoded (categorical, from the chunked csv reader) or as strings
    users = pd.Index(np.asarray(inter["user"].unique(), dtype=object))
    users = users[_natural_order(users)]
    items = pd.Index(np.asarray(inter["item"].unique(), dtype=object))
    items = items[_natural_order(items)]
    uidx = pd.Series(np.arange(1, len(users) + 1), index=users)
    iidx = pd.Series(np.arange(1, len(items) + 1), index=items)
    # the output as plain arrays (no frame copies): chronological per user, file order breaking ties
    u = np.asarray(inter["user"].map(uidx), dtype=np.int64)
    it = np.asarray(inter["item"].map(iidx), dtype=np.int64)
    t = inter["time"].to_numpy(np.float64)
    order = np.lexsort((inter["_row"].to_numpy(), t, u))
    u, it, t = u[order], it[order], t[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    counts = np.diff(np.r_[starts, len(u)])
    pos = np.arange(len(u)) - np.repeat(starts, counts)
    back = np.repeat(counts, counts) - 1 - pos  # 0 = a user's last item (test), 1 = valid
    split_code = np.where(back == 0, 2, np.where(back == 1, 1, 0))
    split = np.array(["train", "valid", "test"], dtype=object)[split_code]
    inter_out = pd.DataFrame({"user_idx": u, "item_idx": it, "time": t, "position": pos.astype(np.int64),
                              "split": split})

    return users, items, inter_out, counts, split_code


def _item_table(raw: RawData, items: pd.Index, cfg: PrepareConfig) -> tuple[pd.DataFrame, list[str]]:
    """One row per item: its cleaned text fields, their join (``text``) and the other metadata columns."""
    meta = raw.items if raw.items is not None else pd.DataFrame({"item": []})
    meta = meta.assign(item=meta["item"].astype(str)).drop_duplicates("item").set_index("item")
    item_df = pd.DataFrame({"item_idx": np.arange(1, len(items) + 1), "item_id": items.astype(str)})
    fields = [f for f in cfg.text_fields if f in meta.columns]
    for f in fields:
        item_df[f] = [clean_text(v) for v in meta[f].reindex(item_df["item_id"]).to_numpy()]
    item_df["text"] = [". ".join(v for v in row if v) for row in item_df[fields].itertuples(index=False)] \
        if fields else ""
    extra = [c for c in meta.columns if c not in fields]
    for c in extra:  # keep other metadata (e.g. price, synthetic ground truth) for inspection
        item_df[c] = meta[c].reindex(item_df["item_id"]).to_numpy()
        if item_df[c].dtype == object:
            item_df[c] = [_flatten(v) for v in item_df[c]]
    return item_df, fields


def _sha256(path: str) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None
