"""What every run directory records next to its results: config, versions, data fingerprint, device."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas
import torch

from sidrec import __version__
from sidrec.errors import SidrecError
from sidrec.utils.artifacts import read_json
from sidrec.utils.dist import barrier, world


def versions() -> dict[str, str]:
    return {"sidrec": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pandas.__version__, "platform": platform.platform()}


def check_resumable(run_dir: str | Path, identity: dict[str, Any]) -> None:
    """A run folder holding a checkpoint resumes only onto what it was trained on: ``identity`` (config.json keys:
    model shape, backbone, token codes, dataset fingerprint...) must equal what the folder recorded; the training
    schedule may change (e.g. more epochs). Otherwise one line, before config.json is rewritten: a run carried to
    another machine or a rerun with other inputs must not continue silently on something else.
    A key an older run did not record is not checked. Under torchrun every rank checks, and none returns before
    all have read the folder (rank 0 rewrites config.json next)."""
    run_dir = Path(run_dir)
    conf = run_dir / "config.json"
    old = read_json(conf) if (run_dir / "checkpoint.pt").is_file() and conf.is_file() else None
    barrier()
    if old is None:
        return
    new = json.loads(json.dumps(identity, default=str))  # as config.json holds it (tuples as lists, ...)
    diff = [k for k in new if k in old and old[k] != new[k]]
    if diff:
        raise SidrecError(f"{run_dir}: holds a checkpoint trained with another {', '.join(diff)}; resume with the "
                          f"same inputs, or use a new --out (or delete {run_dir / 'checkpoint.pt'})")


def write_run_info(run_dir: str | Path, *, kind: str, config: dict[str, Any], data: dict[str, Any] | None = None,
                   device: str = "cpu") -> None:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_text(run_dir / "config.json", json.dumps({"kind": kind, **config}, indent=2, default=str))
    info = {"kind": kind, "versions": versions(), "data": data or {}, "device": device,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)

    info["world_size"] = world()  # processes under torchrun (1 = single process)
    _write_text(run_dir / "run.json", json.dumps(info, indent=2))


def _write_text(path: Path, text: str) -> None:
    """Whole or not at all: a reader (another rank, a crash mid-write) never sees half a file."""
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text(text)
    os.replace(part, path)


def data_info(ds) -> dict[str, Any]:
    return {"path": str(ds.path), "fingerprint": ds.fingerprint, "users": ds.n_users, "items": ds.n_items}
