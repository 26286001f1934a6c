"""Catalog scale for decoding: dense vs sparse trie at 10^5-10^6 items (4 levels x 256 codes +
an appended collision level, LETTER's layout), memory and beam-search time with random logits (the trie is
what scales; the model is left out), same lists checked.

  python experiments/bench/trie_memory.py --items 100000 1000000 
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import time

import numpy as np
import torch

from sidrec.decoding.beam import beam_search
from sidrec.decoding.trie import SparseTrie, Trie
from sidrec.tokenizers.collisions import append_position
from sidrec.results import write_bench


def catalog(n: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 4))
    base[:, 0] = rng.zipf(1.3, n) % 256  # skewed first level, as real codebooks are
    codes = append_position(base)
    return codes, [256, 256, 256, 256, int(codes[:, -1].max()) + 1]


def run(n: int, users: int, beam: int, kinds) -> dict:
    codes, sizes = catalog(n)
    offsets = list(np.cumsum([0] + sizes[:-1]))
    V = sum(sizes)
    g = torch.Generator().manual_seed(0)
    logits_by_level = torch.randn(len(sizes), users * beam, V, generator=g)
    out, lists = {"items": n, "levels": sizes, "users": users, "beam": beam}, {}
    for name, cls in kinds:
        t0 = time.time()
        trie = cls(codes, sizes)
        out[f"{name}_build_seconds"] = round(time.time() - t0, 2)
        out[f"{name}_mb"] = round(trie.nbytes() / 2**20, 1)
        step = {"j": 0}

        def step_fn(tokens, state):
            j = step["j"]
            step["j"] += 1
            return logits_by_level[j][: len(tokens)], state

        t0 = time.time()
        items, _ = beam_search(step_fn, None, batch=users, trie=trie, offsets=offsets, beam=beam, k=beam,
                               reorder_fn=lambda s, i: s)
        out[f"{name}_decode_seconds"] = round(time.time() - t0, 3)
        lists[name] = items
        del trie
    if len(lists) == 2:
        out["same_lists"] = bool(torch.equal(*lists.values()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-trie-memory.jsonl")
    a = ap.parse_args()
    rows = []
    for n in a.items:
        rows.append(run(n, a.users, a.beam, [("dense", Trie), ("sparse", SparseTrie)]))
        print(json.dumps(rows[-1]), flush=True)
    write_bench('trie-memory', {"device": "cpu", "torch": torch.__version__, "rows": rows}, a.results, variant="sparse vs dense trie")


if __name__ == "__main__":
    main()
