"""How long a default tokenizer fit runs before its plateau stop ends it: `sidrec tokenize` with the method's
defaults (no --epochs), the epochs it ran and its fit time, with the tokens' collision rate and reconstruction.

    python experiments/bench/tokenizer_stop.py DATA EMB --method rqvae --results experiments/results
    python experiments/bench/tokenizer_stop.py DATA EMB --method letter --cf SASREC_RUN --results experiments/results

Rows (bench `tokenizer-stop`): variant (the method), dataset, epochs_run, max_epochs, fit_seconds,
collision_rate_before, reconstruction_mse, usage_per_level.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from sidrec.results import write_bench
from sidrec.tokenizers.registry import tokenizer_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("embeddings", type=Path)
    p.add_argument("--method", default="rqvae")
    p.add_argument("--cf", type=Path, help="SASRec run (LETTER)")
    p.add_argument("--dataset", help="name in the row (default: the data folder's name)")
    p.add_argument("--results", type=Path)
    a = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tokenizer-stop-"))
    cmd = [sys.executable, "-m", "sidrec", "tokenize", str(a.data), "--method", a.method, "--embeddings",
           str(a.embeddings), "--out", str(out)] + (["--cf", str(a.cf)] if a.cf else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"sidrec tokenize failed ({done.returncode}):\n{done.stderr[-3000:]}")
    rep = json.loads((out / "report.json").read_text())
    _, cfg = tokenizer_for(a.method)
    row = {"variant": a.method, "dataset": a.dataset or a.data.name, "epochs_run": rep["epochs_run"],
           "max_epochs": cfg.epochs, "fit_seconds": round(rep["fit_seconds"], 1),
           "collision_rate_before": rep["collision_rate_before"], "reconstruction_mse": rep["reconstruction_mse"],
           "usage_per_level": rep["usage_per_level"]}
    print(json.dumps(row))
    write_bench("tokenizer-stop", [row], a.results)


if __name__ == "__main__":
    main()
