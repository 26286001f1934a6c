"""`sidrec data prepare` on a large synthetic csv: wall seconds and peak memory of the reading + k-core + split.

  python experiments/bench/prepare_scale.py --rows 10000000 --users 500000 --items 1000000

Writes the csv with make_big_csv.py (user_id,item_id,ts; zipf items) unless it exists, then runs the CLI's
`data prepare csv` in a child process and reads its peak resident memory (ru_maxrss of the child).
Rows: bench-data-prepare.jsonl {variant: "<rows> rows", rows, users_raw, items_raw, seconds, peak_rss_mb,
users, items, interactions}.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from sidrec.results import write_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--work", type=Path, default=Path("runs/bench/prepare"))
    ap.add_argument("--results", type=Path, default=Path("experiments/results"),
                    help="results folder: rows are appended to RESULTS/bench-data-prepare.jsonl")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    csv = a.work / f"{a.rows}.csv"
    if not csv.is_file():
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_big_csv.py")), "--rows", str(a.rows),
                        "--users", str(a.users), "--items", str(a.items), "--out", str(csv)], check=True)
    out = a.work / f"prepared-{a.rows}"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "sidrec", "data", "prepare", "csv", "--input", str(csv), "--columns",
                    "user=user_id,item=item_id,time=ts", "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    secs = time.time() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    stats = json.loads((out / "stats.json").read_text())
    row = {"variant": f"{a.rows:,} rows", "rows": a.rows, "users_raw": a.users, "items_raw": a.items,
           "seconds": round(secs, 1), "peak_rss_mb": round(peak, 1), "users": stats["users"], "items": stats["items"],
           "interactions": stats["interactions"]}
    print(json.dumps(row))
    write_bench("data-prepare", row, a.results)


if __name__ == "__main__":
    main()
