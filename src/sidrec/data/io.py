"""File reading helpers that turn every malformed input into one clear SidrecError line."""

from __future__ import annotations

import ast
import contextlib
import csv
import gzip
import io
import json
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sidrec.errors import SidrecError


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise SidrecError(f"{p}: file not found")
    if p.is_dir():
        raise SidrecError(f"{p}: is a directory, expected a file")
    if p.stat().st_size == 0:
        raise SidrecError(f"{p}: file is empty")
    return p


def read_text(path: str | Path) -> str:
    """Whole file as text; gzip is detected by magic bytes; a truncated gzip is a clear error."""
    p = check_file(path)
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise SidrecError(f"{p}: truncated or corrupt gzip file ({e})") from None
    if not raw.strip():
        raise SidrecError(f"{p}: file is empty")
    for enc in ("utf-8", "latin-1"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    raise SidrecError(f"{p}: cannot decode as text")  # pragma: no cover (latin-1 decodes anything)


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line."""
    for i, line in enumerate(io.StringIO(read_text(path)), start=1):
        line = line.strip()
        if line:
            yield i, line


def iter_records(path: str | Path, kind: str = "json") -> Iterator[tuple[int, Any]]:
    """Parse each line as JSON (``kind='json'``) or as a Python literal (``kind='literal'``)."""
    for n, line in iter_lines(path):
        try:
            rec = json.loads(line) if kind == "json" else ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            what = "JSON" if kind == "json" else "a Python literal"
            raise SidrecError(f"{path}:{n}: line is not {what} ({str(e).splitlines()[0][:80]})") from None
        if not isinstance(rec, dict):
            raise SidrecError(f"{path}:{n}: expected an object per line, got {type(rec).__name__}")
        yield n, rec


def read_json(path: str | Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SidrecError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def require(rec: dict, keys: tuple[str, ...] | list[str], path: str | Path, line: int) -> None:
    missing = [k for k in keys if k not in rec]
    if missing:
        raise SidrecError(f"{path}:{line}: record lacks field(s) {missing}")


def to_float_time(value: Any, path: str | Path, line: int, field: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SidrecError(f"{path}:{line}: {field}={value!r} is not a numeric timestamp") from None


@contextlib.contextmanager
def atomic_dir(out: str | Path):
    """Yield a temp dir beside ``out``; on success it replaces ``out``, on error nothing is left behind."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _delimiter(p: Path) -> str:
    """The csv delimiter (',' / tab / ';' / '|'), sniffed from the first 64 KB (gzip ok)."""
    opener = gzip.open if p.name.endswith(".gz") else open
    with opener(p, "rt", errors="replace") as f:
        head = f.read(1 << 16)
    lines = head.splitlines()
    head = "\n".join(lines[:-1] if len(lines) > 1 else lines)  # drop a line cut by the 64 KB boundary
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;|").delimiter
    except csv.Error:
        return ","


CSV_CHUNK_ROWS = 1_000_000  # rows per csv chunk when only some columns are kept (bounded parsing memory)


def read_table(p: Path, columns: list[str] | None = None, *, categorical: tuple[str, ...] = (),
               convert: dict | None = None) -> pd.DataFrame:
    """A csv (delimiter sniffed, gzip ok), parquet or Excel file as a DataFrame; one-line error if unreadable.
    ``columns``: keep only these (the ones missing from the file are left out; ``column`` names them);
    csv files are parsed by pandas' C reader (a 10^7-row file in seconds). With ``columns``, a csv is read in
    chunks of ``CSV_CHUNK_ROWS`` rows and only the kept columns of each chunk stay in memory: ``categorical``
    ones dictionary-encoded (ids: 4 bytes a row instead of a Python string), ``convert[name](series,
    first_row)`` applied per chunk (e.g. times to floats; ``first_row`` = the chunk's 0-based data row)."""
    p = check_file(p)
    try:
        if p.suffix == ".parquet":
            if columns:
                have = set(pq.read_schema(p).names)
                return _finish(pd.read_parquet(p, columns=[c for c in columns if c in have]), categorical, convert)
            return pd.read_parquet(p)
        if p.suffix in (".xlsx", ".xls"):
            return _finish(pd.read_excel(p), categorical, convert)
        # every column is parsed (pandas skips the field-count check of a row under ``usecols``: a ragged row
        # must be an error, not silently cut), then only the wanted ones are kept
        kw = dict(sep=_delimiter(p), dtype=str, engine="c", keep_default_na=False, na_values=[""])
        if not columns:
            return pd.read_csv(p, **kw)
        parts, first = [], 0
        codes: dict[str, list] = {}
        cats: dict[str, pd.Index] = {}
        with pd.read_csv(p, chunksize=CSV_CHUNK_ROWS, **kw) as reader:
            for chunk in reader:
                keep = [c for c in columns if c in chunk.columns] or list(chunk.columns)
                for c in keep:  # ids: codes into one growing dictionary per column (4 bytes a row)
                    if c in categorical:
                        code, cats[c] = _encode(chunk[c], cats.get(c))
                        codes.setdefault(c, []).append(code)
                rest = [c for c in keep if c not in categorical]
                parts.append(_finish(chunk[rest], (), convert, first))
                first += len(chunk)
        if not parts:
            return pd.read_csv(p, **kw)
        df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)
        for c in codes:
            df[c] = pd.Categorical.from_codes(np.concatenate(codes[c]), categories=cats[c])
        return df[keep]
    except (ValueError, OSError, EOFError, pd.errors.ParserError, ImportError) as e:
        raise SidrecError(f"{p}: cannot read table ({str(e).splitlines()[0][:100]})") from None


def _finish(df: pd.DataFrame, categorical, convert, first: int = 0) -> pd.DataFrame:
    """``convert`` and dictionary encoding (``_encode``) applied to the columns of one table or chunk."""
    df = df.copy()
    for c in df.columns:
        if convert and c in convert:
            df[c] = convert[c](df[c].reset_index(drop=True), first).to_numpy()
        elif c in categorical:
            code, cats = _encode(df[c], None)
            df[c] = pd.Categorical.from_codes(code, categories=cats)
    return df


def _encode(col: pd.Series, cats: pd.Index | None) -> tuple[np.ndarray, pd.Index]:
    """int32 codes of ``col`` into ``cats`` (grown by the values not seen before; missing = -1)."""
    code, uniq = pd.factorize(col)
    uniq = pd.Index(uniq.astype(str), dtype=object)
    if cats is None:
        cats = uniq[:0]
    where = cats.get_indexer(uniq)
    new = where < 0
    where[new] = np.arange(len(cats), len(cats) + int(new.sum()))
    cats = cats.append(uniq[new])
    return np.where(code >= 0, where[code], -1).astype(np.int32), cats


def column(df: pd.DataFrame, name: str, p: Path) -> pd.Series:
    """``df[name]``, or a one-line error naming the file and the columns it has."""
    if name not in df.columns:
        raise SidrecError(f"{p}: missing column {name!r} (columns: {list(df.columns)[:12]})")
    return df[name]
