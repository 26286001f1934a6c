"""Give a generator run directory untrained weights (for speed benchmarks: decoding cost does not depend on
the weights). RUN must hold what `sidrec train tiger|lcrec` writes before its first epoch ends (config.json,
tokens/, items.parquet): start the training, stop it once config.json exists, then

    python experiments/bench/untrained_run.py RUN          # writes RUN/model.safetensors (seeded initial weights)
"""

import json
import sys
from pathlib import Path

import torch

from sidrec.config import from_dict
from sidrec.tokenizers.base import SemanticIDs
from sidrec.train.loop import save_weights

run = Path(sys.argv[1])
conf = json.loads((run / "config.json").read_text())
ids = SemanticIDs(run / "tokens")
torch.manual_seed(conf["train"]["seed"])
if conf["kind"] == "tiger":
    from sidrec.models.tiger import TIGERConfig
    from sidrec.train.tiger import build_model

    model, _ = build_model(from_dict(TIGERConfig, conf["model"]), ids)
else:
    from sidrec.models.lcrec import LCRecConfig
    from sidrec.train.lcrec import build_lcrec

    model, _ = build_lcrec(from_dict(LCRecConfig, conf["model"]), ids)
save_weights(model, run / "model.safetensors")
print(f"{run}/model.safetensors: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, untrained")
