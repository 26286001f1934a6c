"""Load any trained generator run (TIGER, LC-Rec, ...) by the run kind recorded in RUN/config.json.

The registry of generator kinds lives with the model contract (``sidrec.models.generator.GENERATORS``: kind ->
"module:loader"); the loaders live with their trainers (``sidrec.train.tiger.load_tiger``,
``sidrec.train.lcrec.load_lcrec``), so this module is where the two meet: evaluation, cold start, serving and the
CLI load a run here without knowing its kind."""
from __future__ import annotations

import importlib
from pathlib import Path

from sidrec.errors import SidrecError
from sidrec.models.generator import GENERATORS
from sidrec.utils.artifacts import read_json


def load_generator(run: str | Path, device: str = "cpu"):
    """(model, trie, config) of any generator run, by the run kind in RUN/config.json (models/generator.py)."""
    conf = Path(run) / "config.json"
    if not conf.is_file():
        raise SidrecError(f"{run}: not a run directory (missing config.json)")
    kind = read_json(conf).get("kind")
    if kind not in GENERATORS:
        raise SidrecError(f"{run}: is a {kind} run, not a generator run (generators: {', '.join(GENERATORS)})")
    module, fn = GENERATORS[kind].split(":")
    return getattr(importlib.import_module(module), fn)(run, device)
