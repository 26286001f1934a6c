"""Tables: generic CSV/Parquet with a column mapping, and the UCI Online Retail set (xlsx or csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import column as _col
from sidrec.data.io import read_table as _read_table
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError


def _time(series: pd.Series, p: Path, name: str) -> pd.Series:
    """Numbers or dates; missing values stay missing (prepare counts and drops those rows)."""
    present = series.notna()
    num = pd.to_numeric(series, errors="coerce")
    if num[present].notna().all():
        return num.astype(float)
    dt = pd.to_datetime(series, errors="coerce")
    bad = dt.isna() & present
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise SidrecError(f"{p}:{row + 2}: {name}={series.iloc[row]!r} is neither numeric nor a date")
    return (dt.astype("int64") / 1e9).astype(float).where(present)  # NaT stays missing, not 1677-09-21


def read_table(inputs: list[Path], columns: dict[str, str], fmt: str) -> RawData:
    """Interactions table (first input) and optional items table (second input).

    ``columns`` maps canonical names to the file's: user, item, time (optional), and for the items
    table item plus any text fields (title=..., description=...).
    """
    p = inputs[0]
    df = _read_table(p, [columns.get("user", "user"), columns.get("item", "item"), columns.get("time", "time")])
    u, i = _col(df, columns.get("user", "user"), p), _col(df, columns.get("item", "item"), p)
    tname = columns.get("time", "time" if "time" in df.columns else "")
    t = _time(_col(df, tname, p), p, tname) if tname else pd.Series(range(len(df)), dtype=float)
    inter = pd.DataFrame({"user": u.astype(str), "item": i.astype(str), "time": t.to_numpy()})
    items = None
    if len(inputs) > 1:
        q = inputs[1]
        it = _read_table(q)
        iname = columns.get("item_id", columns.get("item", "item"))
        items = pd.DataFrame({"item": _col(it, iname, q).astype(str)})
        for k in ("title", "description", "brand", "categories"):
            src = columns.get(k, k)
            if src in it.columns:
                items[k] = it[src].to_numpy()
    return RawData(inter, items, source_files=[str(q) for q in inputs])


def read_online_retail(inputs: list[Path]) -> RawData:
    """UCI Online Retail: drops cancelled invoices (InvoiceNo 'C...') and rows without CustomerID."""
    frames = [_read_table(p) for p in inputs]
    df = pd.concat(frames, ignore_index=True)
    for c in ("InvoiceNo", "StockCode", "Description", "InvoiceDate", "CustomerID"):
        _col(df, c, inputs[0])
    filtered = {}
    cancelled = df["InvoiceNo"].astype(str).str.startswith("C")
    filtered["cancelled invoice rows"] = int(cancelled.sum())
    df = df[~cancelled]
    nocust = df["CustomerID"].isna() | (df["CustomerID"].astype(str).str.strip() == "")
    filtered["rows without CustomerID"] = int(nocust.sum())
    df = df[~nocust]
    cust = df["CustomerID"].astype(str).str.replace(r"\.0$", "", regex=True)
    inter = pd.DataFrame({"user": cust, "item": df["StockCode"].astype(str),
                          "time": _time(df["InvoiceDate"], inputs[0], "InvoiceDate").to_numpy(),
                          "basket": df["InvoiceNo"].astype(str)})
    before = len(inter)
    inter = inter.drop_duplicates(["user", "item", "basket"]).drop(columns="basket")
    filtered["repeated item lines within one invoice"] = before - len(inter)
    desc = df[["StockCode", "Description"]].dropna()
    desc = desc.assign(StockCode=desc["StockCode"].astype(str))
    items = (desc.groupby("StockCode")["Description"].agg(lambda s: s.value_counts().index[0])
             .reset_index().rename(columns={"StockCode": "item", "Description": "title"}))
    return RawData(inter, items, filtered=filtered, source_files=[str(p) for p in inputs])
