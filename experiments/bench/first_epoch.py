"""Time to the first epoch of a compiled TIGER run: a cold compile cache, the same cache again (warm), and a
cache folder that holds only the portable artifacts copied from another run (carried, as on a fresh machine).

Each variant is a real `sidrec train tiger` process (2 epochs: epoch 1 pays the compilation, epoch 2 is the
steady state), with its own `$SIDREC_CACHE`; the variants run one after another, alone on the card.

    python experiments/bench/first_epoch.py DATA TOKENS --results experiments/results
    python experiments/bench/first_epoch.py DATA TOKENS --variants carried --carried-from DIR   # on a new machine
    python experiments/bench/first_epoch.py DATA TOKENS --set compile_dynamic=true           # one graph for all widths

Rows (bench `first-epoch`): variant, epoch1_seconds, epoch2_seconds, samples, compile_dynamic, preset, cache_mb.
`--keep DIR` copies the cold run's portable artifacts to DIR (to carry them to another machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sidrec.results import write_bench


def run_once(a, cache: Path, name: str) -> dict:
    run = Path(tempfile.mkdtemp(prefix=f"first-epoch-{name}-"))
    env = {**os.environ, "SIDREC_CACHE": str(cache)}
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):  # the caches live in this variant's folder
        env.pop(var, None)
    cmd = [sys.executable, "-m", "sidrec", "train", "tiger", str(a.data), "--tokens", str(a.tokens), "--out", str(run),
           "--preset", a.preset, "--epochs", "2", "--eval-every", "2", "--valid-users", "512", "--compile"]
    for kv in a.set:
        cmd += ["--set", kv]
    t = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name}: sidrec train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    size = sum(f.stat().st_size for f in (cache / "compile").rglob("*") if f.is_file()) / 2**20
    row = {"variant": name, "epoch1_seconds": round(log[0]["seconds"], 2), "epoch2_seconds": round(log[1]["seconds"], 2),
           "process_seconds": round(time.time() - t, 1), "preset": a.preset, "settings": a.set,
           "cache_mb": round(size, 1),
           "loaded": "compile cache:" in done.stdout + done.stderr}
    print(json.dumps(row), flush=True)
    shutil.rmtree(run, ignore_errors=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("tokens", type=Path)
    p.add_argument("--preset", default="letter")
    p.add_argument("--variants", default="cold,warm,carried")
    p.add_argument("--carried-from", type=Path, help="a folder of portable artifacts (another machine's "
                   "$SIDREC_CACHE/compile/artifacts) for the carried variant")
    p.add_argument("--keep", type=Path, help="copy the cold run's portable artifacts here")
    p.add_argument("--set", action="append", default=[], help="KEY=VALUE passed to sidrec train (repeatable)")
    p.add_argument("--results", type=Path)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="first-epoch-cache-"))
    rows = []
    for name in a.variants.split(","):
        if name == "cold":
            cache = root / "cold"
        elif name == "warm":  # the cold variant's folder, now filled
            cache = root / "cold"
            if not cache.exists():
                sys.exit("warm needs cold before it (--variants cold,warm)")
        elif name == "carried":  # a new folder with the portable artifacts alone
            src = a.carried_from or root / "cold" / "compile" / "artifacts"
            if not src.exists():
                sys.exit(f"carried needs artifacts: {src} does not exist")
            cache = root / "carried"
            shutil.copytree(src, cache / "compile" / "artifacts")
        else:
            sys.exit(f"unknown variant {name!r} (cold, warm, carried)")
        rows.append(run_once(a, cache, name))
        write_bench("first-epoch", [rows[-1]], a.results)  # each row as it comes (a run cut short keeps its rows)
        if name == "cold" and a.keep:
            shutil.copytree(root / "cold" / "compile" / "artifacts", a.keep, dirs_exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
