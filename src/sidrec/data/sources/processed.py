"""Processed layouts the field passes around: S3Rec/P5 lines, LETTER/LC-Rec json, UniSRec/VQ-Rec atomic files."""

from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

from sidrec.data.io import column, iter_lines, read_json, read_table
from sidrec.data.schema import RawData
from sidrec.errors import SidrecError


def _sequences_to_frame(seqs: list[tuple[str, list[str]]]) -> pd.DataFrame:
    users = [u for u, s in seqs for _ in s]
    items = [i for _, s in seqs for i in s]
    pos = [float(k) for _, s in seqs for k in range(len(s))]
    return pd.DataFrame({"user": users, "item": items, "time": pos})


def read_s3rec(inputs: list[Path]) -> RawData:
    """``user item item ...`` per line, chronological (S3Rec ``Beauty.txt``, P5 ``user_sequence.txt``), with
    optional item text in ``*.item.json`` ({item: {title, categories, ...}}). S3Rec's item ids are 1-based;
    an item file keyed 0..n-1 (TransRec's derived files, LETTER's ids) is matched with a shift of one, which
    is reported; a file that matches neither way is an error naming it."""
    seqs, item_files = [], [p for p in inputs if ".item." in p.name]
    for p in inputs:
        if p.name.endswith((".json", ".json.gz")):
            continue  # item text is read below; item2attributes side files hold attribute ids only, no text
        for n, line in iter_lines(p):
            parts = line.split()
            if len(parts) < 2:
                raise SidrecError(f"{p}:{n}: expected 'user item [item ...]', got {line[:60]!r}")
            seqs.append((parts[0], parts[1:]))
    if not seqs:
        raise SidrecError(f"{inputs[0]}: no sequence lines found")
    inter = _sequences_to_frame(seqs)
    items, filtered = None, {}
    if item_files:
        items = pd.concat([_item_json(p) for p in item_files])
        used = set(inter["item"])
        keys = items["item"].astype(str)
        shifted = keys.map(lambda k: str(int(k) + 1) if k.isdigit() else k)
        hit, hit1 = keys.isin(used).mean(), shifted.isin(used).mean()
        if max(hit, hit1) < 0.99:
            raise SidrecError(f"{item_files[0]}: its item keys match {max(hit, hit1):.0%} of the sequence file's items "
                              f"(as they are or shifted by one); is it the item file of this dataset?")
        if hit1 > hit:
            items = items.assign(item=shifted)
            filtered["item-file keys shifted by +1 to S3Rec's 1-based ids (0 rows dropped)"] = 0
    return RawData(inter, items, filtered=filtered, source_files=[str(p) for p in inputs])


def _item_json(p: Path) -> pd.DataFrame:
    data = read_json(p)
    if not isinstance(data, dict):
        raise SidrecError(f"{p}: expected an object {{item_id: {{title: ...}}}}")
    rows = []
    for k, v in data.items():
        if not isinstance(v, dict):
            raise SidrecError(f"{p}: item {k!r}: expected an object of text fields, got {type(v).__name__}")
        rows.append({"item": str(k), **v})
    return pd.DataFrame(rows)


def read_letter(inputs: list[Path]) -> RawData:
    """LETTER / LC-Rec: ``*.inter.json`` ``{user: [items in time order]}`` + optional ``*.item.json``."""
    inter_files = [p for p in inputs if ".inter." in p.name]
    item_files = [p for p in inputs if ".item." in p.name]
    if not inter_files:
        raise SidrecError(f"{inputs[0]}: the letter source needs a '*.inter.json' file")
    seqs = []
    for p in inter_files:
        data = read_json(p)
        if not isinstance(data, dict):
            raise SidrecError(f"{p}: expected an object {{user: [items]}}")
        for u, items in data.items():
            if not isinstance(items, list):
                raise SidrecError(f"{p}: user {u!r}: expected a list of items")
            seqs.append((str(u), [str(i) for i in items]))
    items = pd.concat([_item_json(p) for p in item_files]) if item_files else None
    return RawData(_sequences_to_frame(seqs), items, source_files=[str(p) for p in inputs])


def read_unisrec(inputs: list[Path]) -> RawData:
    """UniSRec / VQ-Rec atomic files: ``.train/.valid/.test.inter`` (+ ``.text``, ``.item2index``).

    The train file holds augmented prefixes; each user's full sequence is rebuilt from the longest
    history seen for them plus its target (the test line when present).
    """
    inter = [p for p in inputs if ".inter" in p.name]
    text = [p for p in inputs if p.name.endswith((".text", ".text.gz"))]
    i2i = [p for p in inputs if ".item2index" in p.name]
    if not inter:
        raise SidrecError(f"{inputs[0]}: the unisrec source needs '*.inter' files")
    best: dict[str, list[str]] = {}
    for p in inter:
        lines = iter_lines(p)
        _, header = next(lines, (0, ""))
        if "item_id_list" not in header:
            raise SidrecError(f"{p}:1: header lacks 'item_id_list' (got {header[:60]!r})")
        for n, line in lines:
            parts = line.split("\t")
            if len(parts) != 3:
                raise SidrecError(f"{p}:{n}: expected 3 tab-separated columns, got {len(parts)}")
            seq = parts[1].split() + [parts[2]]
            if len(seq) > len(best.get(parts[0], [])):
                best[parts[0]] = seq
    items = None
    if text:
        index = {}
        for p in i2i:
            for n, line in iter_lines(p):
                parts = line.split()
                if len(parts) != 2:
                    raise SidrecError(f"{p}:{n}: expected 'raw_id index'")
                index[parts[0]] = parts[1]
        rows = []
        for p in text:
            lines = iter_lines(p)
            next(lines, None)  # header item_id:token text:token_seq
            for n, line in lines:
                key, _, t = line.partition("\t")
                rows.append({"item": index.get(key, key), "title": t})
        items = pd.DataFrame(rows)
    return RawData(_sequences_to_frame(list(best.items())), items, source_files=[str(p) for p in inputs])


def read_minionerec(inputs: list[Path]) -> RawData:
    """MiniOneRec ``{valid,test,train}_*.csv`` rows (``user_id, history_item_id, item_id``: a history of up
    to 10 items and its target) + ``*.item.json`` text.

    Each user's sequence is stitched back: the history of their first row (files in the order given,
    rows in file order), then the target of every row. With only the valid/test files (the train file
    is not in ../shared) this yields the last ~11 interactions per user: enough for a pre-training domain.
    """
    csvs = [p for p in inputs if p.name.endswith((".csv", ".csv.gz"))]
    item_files = [p for p in inputs if ".item." in p.name]
    if not csvs:
        raise SidrecError(f"{inputs[0]}: the minionerec source needs '*.csv' files (train/valid/test)")
    seqs: dict[str, list[str]] = {}
    for p in csvs:
        df = read_table(p).fillna("")
        cols = [column(df, c, p) for c in ("user_id", "history_item_id", "item_id")]
        for n, (u, h, t) in enumerate(zip(*cols), start=2):
            try:
                hist = [str(int(x)) for x in ast.literal_eval(h)] if h.strip() else []
            except (ValueError, SyntaxError, TypeError):
                raise SidrecError(f"{p}:{n}: history_item_id is not a list of item ids: {h[:60]!r}") from None
            if not t.strip():
                raise SidrecError(f"{p}:{n}: empty item_id")
            if u not in seqs:
                seqs[u] = hist
            seqs[u].append(str(int(float(t))))
    items = pd.concat([_item_json(p) for p in item_files]) if item_files else None
    return RawData(_sequences_to_frame(list(seqs.items())), items, source_files=[str(p) for p in inputs])
