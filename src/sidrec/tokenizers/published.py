"""Semantic IDs published elsewhere: LETTER / LC-Rec ``*.index.json`` ({"item": ["<a_183>", "<b_70>", ...]}).

Items sharing a published ID get TIGER's collision position, so they are never counted as hits for
each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sidrec.data.io import read_json
from sidrec.errors import SidrecError
from sidrec.tokenizers.base import ItemTokenizer
from sidrec.utils.log import info as log_info

_TOKEN = re.compile(r"<([a-z])_(\d+)>")


@dataclass(frozen=True, kw_only=True)
class PublishedConfig:
    index: str = ""  # path of the *.index.json(.gz) file
    collision: Literal["append", "none"] = "append"


class PublishedTokenizer(ItemTokenizer):
    """IDs read from a released index file (LETTER / LC-Rec ``*.index.json``): nothing to learn, and no
    encoder for new items (``encode`` says so)."""

    method = "published"
    config_cls = PublishedConfig
    needs = ("item_ids",)

    def fit(self, emb: np.ndarray | None = None, *, cf: np.ndarray | None = None,
            train_mask: np.ndarray | None = None, item_ids: list[str] | None = None, log=log_info) -> PublishedTokenizer:
        if item_ids is None:
            raise SidrecError("published IDs are looked up by item id: pass item_ids")
        path = Path(self.cfg.index)
        data = read_json(path)
        if not isinstance(data, dict):
            raise SidrecError(f"{path}: expected an object {{item: [tokens]}}")
        missing = [i for i in item_ids if i not in data]
        if missing:
            raise SidrecError(f"{path}: {len(missing)} dataset items have no ID (first: {missing[0]!r}); "
                              f"was the dataset prepared from the same files?")
        rows = []
        for i in item_ids:
            toks = data[i]
            parsed = [_TOKEN.fullmatch(t) for t in toks] if isinstance(toks, list) else [None]
            if not all(parsed):
                raise SidrecError(f"{path}: item {i!r}: cannot parse tokens {toks!r} (expected like '<a_12>')")
            rows.append([int(m.group(2)) for m in parsed])
        if len({len(r) for r in rows}) != 1:
            raise SidrecError(f"{path}: IDs have different lengths; fixed-length IDs are needed")
        codes = np.array(rows, dtype=np.int64)
        self.sizes_ = [int(max(256, codes[:, j].max() + 1)) for j in range(codes.shape[1])]
        self.z_hat_ = None
        self.reconstruction_mse_ = None
        self.finalize(codes)
        log(f"published IDs: {len(rows)} items, {codes.shape[1]} levels, "
            f"{self.collisions_before_['items_colliding']} items share an ID")
        return self

    def encode(self, emb: np.ndarray) -> np.ndarray:
        raise SidrecError(f"published IDs ({self.cfg.index or 'a released index'}) cannot encode new items: "
                          f"tokenize with rqvae, letter, rqkmeans or opq for cold start")

    @property
    def base_sizes(self) -> list[int]:
        return self.sizes_

    def _load_weights(self, path: Path, meta: dict) -> None:
        self.sizes_ = list(meta["level_sizes"][: int(meta["levels"])])
