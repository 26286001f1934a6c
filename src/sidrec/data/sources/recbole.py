"""RecBole atomic files: ``.inter`` / ``.item`` with ``name:type`` headers (tab separated)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import iter_lines, to_float_time
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError


def read_atomic(p: Path) -> tuple[list[str], list[list[str]]]:
    lines = iter_lines(p)
    _, header = next(lines)
    cols = [c.split(":")[0] for c in header.split("\t")]
    rows = []
    for n, line in lines:
        parts = line.split("\t")
        if len(parts) != len(cols):
            raise SidrecError(f"{p}:{n}: expected {len(cols)} tab-separated fields, got {len(parts)}")
        rows.append(parts)
    return cols, rows


def read_recbole(inputs: list[Path]) -> RawData:
    inter = [p for p in inputs if p.name.endswith((".inter", ".inter.gz"))]
    item = [p for p in inputs if p.name.endswith((".item", ".item.gz"))]
    if not inter:
        raise SidrecError(f"{inputs[0]}: the recbole source needs a '.inter' file")
    frames = []
    for p in inter:
        cols, rows = read_atomic(p)
        for need in ("user_id", "item_id"):
            if need not in cols:
                raise SidrecError(f"{p}:1: missing column {need!r} in header {cols}")
        df = pd.DataFrame(rows, columns=cols)
        if "timestamp" in cols:
            t = pd.to_numeric(df["timestamp"], errors="coerce")
            if t.isna().any():
                bad = int(t.isna().to_numpy().argmax())
                to_float_time(df["timestamp"].iloc[bad], p, bad + 2, "timestamp")
        else:
            t = pd.Series(range(len(df)), dtype=float)  # file order
        frames.append(pd.DataFrame({"user": df["user_id"], "item": df["item_id"], "time": t.astype(float)}))
    items = None
    if item:
        ifr = []
        for p in item:
            cols, rows = read_atomic(p)
            if "item_id" not in cols:
                raise SidrecError(f"{p}:1: missing column 'item_id' in header {cols}")
            df = pd.DataFrame(rows, columns=cols).rename(
                columns={"item_id": "item", "movie_title": "title", "class": "categories", "genre": "categories"})
            ifr.append(df)
        items = pd.concat(ifr)
    return RawData(pd.concat(frames, ignore_index=True), items, source_files=[str(p) for p in inputs])
