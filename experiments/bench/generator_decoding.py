"""Decoding speed of the generator families at Beauty's shapes, in one run on one device: TIGER (the `letter`
preset's T5, 3 levels of 256 codes + a collision level, trie-constrained beam search, beam 20) vs RPG (the
defaults, 32 OPQ digits of 256 + a collision level, the whole catalog ranked exactly). Untrained weights: decoding
costs the same whatever the weights hold. Top-20 lists for every user.

    python experiments/bench/generator_decoding.py --results experiments/results [--users 4096] [--batch 512]

Rows (bench `generator-decoding`): variant (tiger-beam20 | rpg-exact), items, users, batch, seconds,
users_per_second, speedup (against tiger-beam20 of the same run).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sidrec.decoding.beam import generate
from sidrec.decoding.trie import build_trie
from sidrec.models.rpg import RPG, RPGConfig
from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
from sidrec.results import write_bench
from sidrec.utils.seeding import pick_device


def codes_with_suffix(rng, n: int, levels: int, size: int) -> tuple[np.ndarray, list[int]]:
    """n distinct IDs: ``levels`` random codes of ``size`` and a collision suffix that tells duplicates apart."""
    base = rng.integers(0, size, (n, levels))
    _, inv = np.unique(base, axis=0, return_inverse=True)
    suffix = np.zeros(n, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, g in enumerate(inv.ravel()):  # set-up only: the count of earlier items with the same code tuple
        suffix[i] = seen.get(g, 0)
        seen[g] = suffix[i] + 1
    return np.hstack([base, suffix[:, None]]), [size] * levels + [int(suffix.max()) + 1]


def timed(fn, users, hist, batch: int, dev) -> float:
    fn(users[:batch], hist[:batch])  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for s in range(0, len(hist), batch):
        fn(users[s:s + batch], hist[s:s + batch])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=12101)  # Beauty's catalog
    p.add_argument("--users", type=int, default=4096)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--results")
    a = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    dev = pick_device(a.device)
    # Beauty-like histories: lengths 3..20 (5-core, leave-one-out), left-padded
    lengths = np.clip(rng.geometric(1 / 7, a.users) + 2, 3, a.history)
    hist = np.zeros((a.users, a.history), dtype=np.int64)
    for i, n in enumerate(lengths):  # set-up only
        hist[i, a.history - n:] = rng.integers(1, a.items + 1, n)
    order = np.argsort(lengths, kind="stable")  # as decode_split batches them: by history length
    hist = torch.as_tensor(hist[order], device=dev)
    users = torch.zeros(a.users, dtype=torch.long, device=dev)

    rows = []
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        tcodes, tsizes = codes_with_suffix(rng, a.items, 3, 256)
        tiger = TIGER(TIGERConfig(preset="letter", max_history=a.history), Vocab(tsizes), tcodes).to(dev).eval()
        ttrie = build_trie(tcodes, tsizes).to(dev)
        rcodes, rsizes = codes_with_suffix(rng, a.items, 32, 256)
        rpg = RPG(RPGConfig(max_history=a.history), Vocab(rsizes), rcodes).to(dev).eval()
        rtrie = build_trie(rcodes, rsizes).to(dev)
        for variant, model, trie in (("tiger-beam20", tiger, ttrie), ("rpg-exact", rpg, rtrie)):
            secs = timed(lambda u, h: generate(model, u, h, trie, beam=20, k=20), users, hist, a.batch, dev)
            rows.append({"variant": variant, "items": a.items, "users": a.users, "batch": a.batch,
                         "seconds": round(secs, 3), "users_per_second": round(a.users / secs, 1)})
    base = rows[0]["users_per_second"]
    for r in rows:
        r["speedup"] = round(r["users_per_second"] / base, 2)
        print(r)
    write_bench("generator-decoding", rows, a.results)


if __name__ == "__main__":
    main()
