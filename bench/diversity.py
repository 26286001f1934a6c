"""Diversity on a dial (issue 13): Entropy@K of item categories and Recall@K for beam search and for
sampling at several decoding temperatures, on the test split of a trained TIGER run.

  python bench/diversity.py RUN --data DIR [--temperatures 1.0 1.5 2.0] [--depth 2] [--json rows.jsonl]

Categories: the items table's ``categories`` column ("Beauty, Makeup, Nails, ..." or comma-separated without spaces), cut to its first
``depth`` levels (Amazon, Yelp); without one, the first word of the title. Rows: {"dataset", "decoding":
"beam" | "sample", "temperature", "entropy@10", "recall@10", "ndcg@10", "users", "seconds", "command"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sidrec.data.dataset import load_dataset
from sidrec.eval.metrics import category_entropy, metrics_from_ranks, ranks_from_lists
from sidrec.train.tiger import decode_users, load_tiger


def item_categories(ds, depth: int) -> np.ndarray:
    """(n_items + 1,) integer category per item index (-1 for the padding row and unknown categories)."""
    items = ds.items
    if "categories" in items.columns:
        # "Beauty, Makeup, Nails" (TransRec) and "Industrial & Scientific,Industrial Electrical" (LC-Rec) alike
        label = items["categories"].fillna("").astype(str).map(
            lambda c: ", ".join(x.strip() for x in c.split(",")[:depth]))
    else:
        label = items["title"].fillna("").astype(str).str.split().str[0].fillna("")
    codes, _ = label.factorize()
    codes = np.where(label.to_numpy() == "", -1, codes)
    return np.concatenate([[-1], codes]).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--data", required=True)
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.5, 2.0])
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append rows to this jsonl file")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    ds = load_dataset(a.data)
    model, trie, _ = load_tiger(a.run, dev)
    cats = item_categories(ds, a.depth)
    _, _, target = ds.eval_inputs("test", 1)
    rows = []
    for T in [0.0, *a.temperatures]:
        t0 = time.time()
        lists = decode_users(model, trie, ds, "test", beam=a.beam, k=a.k, batch_size=a.batch, device=dev,
                             sample_temperature=T, seed=a.seed)
        m = metrics_from_ranks(ranks_from_lists(lists, target), (a.k,))
        rows.append({"dataset": Path(a.data).name, "decoding": "sample" if T else "beam", "temperature": T or None,
                     f"entropy@{a.k}": round(category_entropy(lists, cats, a.k), 4),
                     f"recall@{a.k}": round(m[f"recall@{a.k}"], 5), f"ndcg@{a.k}": round(m[f"ndcg@{a.k}"], 5),
                     "users": ds.n_users, "category_depth": a.depth, "seconds": round(time.time() - t0, 1),
                     "command": "python bench/diversity.py " + " ".join(sys.argv[1:])})
        print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
