"""A synthetic interaction csv for the `data prepare` scale figures:
`python experiments/bench/make_big_csv.py --rows 10000000 --users 500000 --items 1000000 --out /tmp/10m.csv`
(columns user_id,item_id,ts; zipf-distributed items, times increasing per file row)."""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    with open(a.out, "w") as f:
        f.write("user_id,item_id,ts\n")
        step = 1_000_000
        for lo in range(0, a.rows, step):
            n = min(step, a.rows - lo)
            u = rng.integers(0, a.users, n)
            i = (rng.zipf(1.2, n) - 1) % a.items
            t = np.arange(lo, lo + n)
            f.write("\n".join(f"U{x},I{y},{z}" for x, y, z in zip(u.tolist(), i.tolist(), t.tolist())) + "\n")


if __name__ == "__main__":
    main()
