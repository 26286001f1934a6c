"""MovieLens: ml-100k (``u.data`` + ``u.item``) and ml-1m (``ratings.dat`` + ``movies.dat``) layouts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sidrec.data.io import iter_lines, to_float_time
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError

_GENRES_100K = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                "War", "Western"]


def read_movielens(inputs: list[Path]) -> RawData:
    rows, items = [], []
    for p in inputs:
        name = p.name.split(".")[0]
        if name in ("u", "ratings") and ("data" in p.name or "ratings" in p.name):
            sep = "::" if name == "ratings" else "\t"
            for n, line in iter_lines(p):
                parts = line.split(sep)
                if len(parts) < 4:
                    raise SidrecError(f"{p}:{n}: expected user{sep}item{sep}rating{sep}timestamp")
                rows.append((parts[0], parts[1], to_float_time(parts[3], p, n, "timestamp")))
        elif p.name.startswith("u.item"):
            for n, line in iter_lines(p):
                parts = line.split("|")
                if len(parts) < 5:
                    raise SidrecError(f"{p}:{n}: expected '|'-separated movie record")
                flags = parts[5:5 + len(_GENRES_100K)]
                genres = ", ".join(g for g, f in zip(_GENRES_100K, flags) if f == "1")
                items.append({"item": parts[0], "title": parts[1], "categories": genres})
        elif name == "movies":
            for n, line in iter_lines(p):
                parts = line.split("::")
                if len(parts) != 3:
                    raise SidrecError(f"{p}:{n}: expected MovieID::Title::Genres")
                items.append({"item": parts[0], "title": parts[1], "categories": parts[2].replace("|", ", ")})
        else:
            raise SidrecError(f"{p}: not a MovieLens file (expected u.data, u.item, ratings.dat or movies.dat)")
    if not rows:
        raise SidrecError(f"{inputs[0]}: no ratings file (u.data or ratings.dat) given")
    return RawData(pd.DataFrame(rows, columns=["user", "item", "time"]), pd.DataFrame(items) if items else None,
                   source_files=[str(p) for p in inputs])
