"""Source readers: each turns raw files into the canonical :class:`~sidrec.data.schema.RawData`."""

from __future__ import annotations

from pathlib import Path

from sidrec.config import from_dict
from sidrec.data.schema import RawData
from sidrec.data.sources import amazon, movielens, processed, recbole
from sidrec.data.sources import synthetic as syn
from sidrec.data.sources import tabular, yelp
from sidrec.errors import SidrecError

SOURCES = ("amazon2014", "amazon2018", "amazon2023", "s3rec", "letter", "unisrec", "recbole", "movielens",
           "yelp", "online-retail", "minionerec", "csv", "parquet", "synthetic")


def read_source(source: str, inputs: list[str | Path], *, columns: dict[str, str] | None = None,
                synthetic: dict | None = None) -> RawData:
    """Dispatch to the reader of ``source`` (an explicit registry, no string magic)."""
    if source not in SOURCES:
        raise SidrecError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    paths = [Path(p) for p in inputs]
    if source == "synthetic":
        return syn.generate(from_dict(syn.SyntheticConfig, synthetic or {}))
    if not paths:
        raise SidrecError(f"source {source!r} needs at least one --input file")
    for p in paths:
        if not p.exists():
            raise SidrecError(f"{p}: file not found")
    if source.startswith("amazon"):
        return amazon.read_amazon(paths, source)
    readers = {"s3rec": processed.read_s3rec, "letter": processed.read_letter, "unisrec": processed.read_unisrec,
               "minionerec": processed.read_minionerec,
               "recbole": recbole.read_recbole, "movielens": movielens.read_movielens, "yelp": yelp.read_yelp,
               "online-retail": tabular.read_online_retail}
    if source in readers:
        return readers[source](paths)
    return tabular.read_table(paths, columns or {}, source)
