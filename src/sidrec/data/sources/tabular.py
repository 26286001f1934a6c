"""Tables: generic CSV/Parquet with a column mapping, and the UCI Online Retail set (xlsx or csv)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import column as _col
from sidrec.data.io import read_table as _read_table
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError


def _time(series: pd.Series, p: Path, name: str, first: int = 0, kind: dict | None = None) -> pd.Series:
    """Numbers or dates; missing values stay missing (prepare counts and drops those rows). ``first``: the
    0-based data row of ``series[0]`` in the file (a chunk's offset), for the error's line number; ``kind``:
    shared by the chunks of one file, so that all of them read the column the same way (numbers or dates)."""
    kind = {} if kind is None else kind
    present = series.notna()
    num = pd.to_numeric(series, errors="coerce")
    numeric = bool(num[present].notna().all())
    if kind.setdefault("numeric", numeric) != numeric:
        # a chunk read the other way than the file's first rows: name the first row of the other kind
        row = int((num.isna() & present).to_numpy().argmax()) if kind["numeric"] else int(num.notna().to_numpy().argmax())
        raise SidrecError(f"{p}:{first + row + 2}: {name}={series.iloc[row]!r} is not "
                          f"{'a number' if kind['numeric'] else 'a date'} like the rows before it")
    if numeric:
        return num.astype(float)
    dt = pd.to_datetime(series, errors="coerce")
    bad = dt.isna() & present
    if bad.any():
        neither = bad & num.isna()  # a value that is no number either is the culprit, else the first non-date
        row = int((neither if neither.any() else bad).to_numpy().argmax())
        raise SidrecError(f"{p}:{first + row + 2}: {name}={series.iloc[row]!r} is neither numeric nor a date")
    return (dt.astype("int64") / 1e9).astype(float).where(present)  # NaT stays missing, not 1677-09-21


def read_table(inputs: list[Path], columns: dict[str, str], fmt: str) -> RawData:
    """Interactions table (first input) and optional items table (second input).

    ``columns`` maps canonical names to the file's: user, item, time (optional), and for the items
    table item plus any text fields (title=..., description=...).
    """
    p = inputs[0]
    uname, iname, tname = columns.get("user", "user"), columns.get("item", "item"), columns.get("time", "time")
    # a csv is read in chunks: ids dictionary-encoded, times parsed to floats chunk by chunk (bounded memory)
    kind: dict = {}
    df = _read_table(p, [uname, iname, tname], categorical=(uname, iname),
                     convert={tname: lambda s, first: _time(s, p, tname, first, kind)})
    u, i = _col(df, uname, p), _col(df, iname, p)
    if "time" not in columns and tname not in df.columns:
        tname = ""
    t = _col(df, tname, p).astype(float) if tname else pd.Series(range(len(df)), dtype=float)
    inter = pd.DataFrame({"user": u, "item": i, "time": t.to_numpy()})
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
