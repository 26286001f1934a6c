"""Catalog scale end to end: for catalogs of 10^4 .. 10^6 (10^7 where memory allows) items,
the costs that grow with the catalog, in one process:

- trie: build seconds and memory (``build_trie``: dense tables or the sparse trie, whichever it picks);
- decoding: users/s of TIGER (`small` shape, untrained: cost does not depend on the weights) at beam 20;
- tokenizer: seconds per RQ-VAE epoch on n x 768 random text embeddings (mini-batches of 512; the k-means
  initialisation and the whole-catalog checks run in chunks) and its peak memory;
- serving: p50 / p99 latency of one in-process ``Recommender.recommend`` request (k 10, beam 20).

Catalogs: LETTER's layout (4 levels x 256 codes, skewed first level, + collision level; experiments/bench/trie_memory.py).

    python experiments/bench/catalog_scale.py --items 10000 100000 1000000 10000000 --tokenizer-max-items 1000000 \
        --device cpu 
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sidrec.results import write_bench


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one(n: int, users: int, tok_items: int | None, dev: torch.device) -> dict:
    from trie_scale import catalog

    from sidrec.decoding.beam import generate
    from sidrec.decoding.trie import build_trie
    from sidrec.models.tiger import TIGER, TIGERConfig, Vocab
    from sidrec.serving.recommender import Recommender
    from sidrec.tokenizers.rqvae import RQVAEConfig, RQVAETokenizer

    row: dict = {"items": n, "device": str(dev)}
    codes, sizes = catalog(n)
    t0 = time.perf_counter()
    trie = build_trie(codes, sizes).to(dev)
    row["trie_build_s"] = round(time.perf_counter() - t0, 3)
    row["trie_kind"] = type(trie).__name__
    row["trie_mb"] = round(trie.nbytes() / 2**20, 1)
    torch.manual_seed(0)
    model = TIGER(TIGERConfig(preset="small", max_history=20, dropout=0.0), Vocab(sizes), codes).to(dev).eval()
    rng = np.random.default_rng(0)
    hist = torch.as_tensor(rng.integers(1, n + 1, (users, 20)), device=dev)
    u = torch.arange(users, device=dev)
    with torch.no_grad():
        generate(model, u[:8], hist[:8], trie, beam=20, k=10)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for s in range(0, users, 256):
            generate(model, u[s:s + 256], hist[s:s + 256], trie, beam=20, k=10)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    row["decode_users_per_s"] = round(users / (time.perf_counter() - t0), 1)
    # one request at a time through the serving path (in process: the HTTP layer is experiments/bench/serve_load.py)
    ids = np.array([f"i{j}" for j in range(n)], dtype=object)
    rec = Recommender(model, trie, None, str(dev), items=pd.DataFrame({"item_id": ids, "title": ids}),
                      name=f"{n} items")
    lat = []
    for r in range(60):
        h = list(ids[rng.integers(0, n, 10)])
        t0 = time.perf_counter()
        rec.recommend(h, k=10)
        lat.append(time.perf_counter() - t0)
    lat = np.array(lat[10:]) * 1e3
    row["serve_p50_ms"], row["serve_p99_ms"] = round(float(np.percentile(lat, 50)), 1), round(float(np.percentile(lat, 99)), 1)
    if tok_items is None or n <= tok_items:
        emb = np.random.default_rng(1).normal(size=(n, 768)).astype(np.float32)
        tok = RQVAETokenizer(RQVAEConfig(n_levels=3, codebook_size=256, epochs=1, batch_size=512, device=str(dev),
                                         check_every=1, log_every=1))
        t0 = time.perf_counter()
        tok.fit(emb, log=lambda s: None)
        row["tokenizer_fit_1_epoch_s"] = round(time.perf_counter() - t0, 2)
        row["tokenizer_epoch_s"] = tok.history_[-1]["seconds"]
        del emb, tok
    row["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if dev.type == "cuda":
        row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--tokenizer-max-items", type=int, default=None,
                    help="skip the tokenizer above this many items (memory: n x 768 floats)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=Path("experiments/results"), help="results folder: rows are appended to RESULTS/bench-scale.jsonl")
    a = ap.parse_args()
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from sidrec.utils.seeding import pick_device

    dev = pick_device(a.device)
    rows = []
    for n in a.items:
        rows.append(one(n, a.users, a.tokenizer_max_items, dev))
        print(json.dumps(rows[-1]), flush=True)
    res = {"gpu": torch.cuda.get_device_name() if dev.type == "cuda" else None, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "rows": rows}
    write_bench('scale', res, a.results, variant=None)


if __name__ == "__main__":
    main()
