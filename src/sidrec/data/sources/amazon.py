"""Amazon review dumps (McAuley lab): 2014 (meta lines are Python literals), 2018 and 2023 (JSON lines)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import iter_records, require, to_float_time
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError

# per release: (review user key, review item key, review time key, meta item key, meta kind, meta field map)
_LAYOUT = {
    "amazon2014": ("reviewerID", "asin", "unixReviewTime", "asin", "literal",
                   {"title": "title", "brand": "brand", "categories": "categories",
                    "description": "description", "price": "price"}),
    "amazon2018": ("reviewerID", "asin", "unixReviewTime", "asin", "json",
                   {"title": "title", "brand": "brand", "categories": "category",
                    "description": "description", "price": "price", "features": "feature"}),
    "amazon2023": ("user_id", "parent_asin", "timestamp", "parent_asin", "json",
                   {"title": "title", "brand": "store", "categories": "categories",
                    "description": "description", "price": "price", "features": "features"}),
}


def _split_inputs(inputs: list[Path]) -> tuple[list[Path], list[Path]]:
    meta = [p for p in inputs if "meta" in p.name.lower()]
    reviews = [p for p in inputs if p not in meta]
    if not reviews:
        raise SidrecError(f"{inputs[0]}: no reviews file given (metadata files are recognised by 'meta' in the name)")
    return reviews, meta


def read_amazon(inputs: list[Path], release: str) -> RawData:
    """Read review file(s) and optional ``meta_*`` file(s) of one Amazon release."""
    ukey, ikey, tkey, mkey, mkind, fields = _LAYOUT[release]
    reviews, metas = _split_inputs(inputs)
    rows = []
    for p in reviews:
        for n, rec in iter_records(p, "json"):
            require(rec, (ukey, ikey, tkey), p, n)
            rows.append((str(rec[ukey]), str(rec[ikey]), to_float_time(rec[tkey], p, n, tkey)))
    inter = pd.DataFrame(rows, columns=["user", "item", "time"])
    items = None
    if metas:
        mrows = []
        for p in metas:
            # 2014 metadata is one Python literal per line (single quotes), not JSON
            for n, rec in iter_records(p, mkind):
                require(rec, (mkey,), p, n)
                mrows.append({"item": str(rec[mkey]), **{k: rec.get(src) for k, src in fields.items()}})
        items = pd.DataFrame(mrows).drop_duplicates("item", keep="first")
    return RawData(inter, items, dedup=True, source_files=[str(p) for p in inputs])
