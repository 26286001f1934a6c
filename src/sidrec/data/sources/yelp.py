"""Yelp Open Dataset: ``business.json`` (name, categories) + ``review.json`` (user, business, date)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import iter_records, require
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError


def read_yelp(inputs: list[Path]) -> RawData:
    rows, items = [], []
    for p in inputs:
        is_business = "business" in p.name
        for n, rec in iter_records(p, "json"):
            if is_business:
                require(rec, ("business_id",), p, n)
                items.append({"item": rec["business_id"], "title": rec.get("name"),
                              "categories": rec.get("categories"), "city": rec.get("city")})
            else:
                require(rec, ("user_id", "business_id", "date"), p, n)
                t = pd.to_datetime(rec["date"], errors="coerce")
                if pd.isna(t):
                    raise SidrecError(f"{p}:{n}: date={rec['date']!r} is not a date")
                rows.append((rec["user_id"], rec["business_id"], t.timestamp()))
    if not rows:
        raise SidrecError(f"{inputs[0]}: no review records (a review file is needed besides business.json)")
    # repeat visits are kept, as in the S3Rec/LETTER Yelp version
    return RawData(pd.DataFrame(rows, columns=["user", "item", "time"]), pd.DataFrame(items) if items else None,
                   source_files=[str(p) for p in inputs])
