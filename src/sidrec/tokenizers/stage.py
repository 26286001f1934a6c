"""The tokenize stage: embeddings (+ CF run) -> fitted tokenizer -> tokens directory with report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from sidrec.config import merge, to_dict
from sidrec.data.dataset import Dataset
from sidrec.data.io import atomic_dir
from sidrec.embeddings.text import load_embeddings
from sidrec.errors import SidrecError
from sidrec.tokenizers.registry import TOKENIZERS, tokenizer_for, tokenizer_spec
from sidrec.tokenizers.report import write_report
from sidrec.utils import dist
from sidrec.utils.artifacts import write_manifest
from sidrec.utils.log import info as log_info


def train_item_mask(ds: Dataset) -> np.ndarray:
    """Items that occur in the training part of some user's sequence (n_items,) bool."""
    ends = ds.offsets[1:] - 2
    pos = np.arange(len(ds.seq))
    user = np.repeat(np.arange(ds.n_users), np.diff(ds.offsets))
    mask = np.zeros(ds.n_items + 1, dtype=bool)
    mask[ds.seq[pos < ends[user]]] = True
    return mask[1:]


def tokenize(ds: Dataset, out: str | Path, *, method: str, embeddings: str | Path, cf_run: str | Path | None = None,
             overrides: dict[str, Any] | None = None, log=log_info, check=None) -> dict:
    """Fit ``method`` on the item embeddings and write TOK (codes, model, report.json, plots).
    ``check(z_hat, cf_run, ds) -> dict | None``: an evaluation of the quantized embeddings against the CF run
    (the CLI and the pipeline pass ``sidrec.eval.checks.ranking_check``, LETTER's ranking experiment), stored
    as the report's ``ranking_check``; it is passed in because evaluation sits above this layer."""
    out = Path(out)
    tok_cls, default = tokenizer_for(method)
    cfg = merge(type(default), to_dict(default), overrides or {})
    tok = tok_cls(cfg)

    if dist.world() > 1 and not tokenizer_spec(method).distributed:
        raise SidrecError(f"--method {method} does not train under torchrun: run it once (distributed: "
                          f"{', '.join(t for t, s in TOKENIZERS.items() if s.distributed)})")
    emb = cf = None
    if "embeddings" in tok.needs:
        emb = load_embeddings(embeddings, ds.n_items)[1:]
    if cf_run is not None:
        cf_path = Path(cf_run)
        cf = load_embeddings(cf_path / "item_emb.npy" if cf_path.is_dir() else cf_path, ds.n_items)[1:]
    elif "cf" in tok.needs:
        raise SidrecError(f"--method {method} needs --cf SASREC_RUN (train one with `sidrec train sasrec DIR --dim 32`)")
    tok.fit(emb, cf=cf if "cf" in tok.needs else None, train_mask=train_item_mask(ds),
            item_ids=ds.items["item_id"].astype(str).tolist(), log=log)
    if "embeddings" not in tok.needs:
        embeddings = None
    if not dist.is_main():  # torchrun: rank 0 writes
        return {}
    return _write(tok, ds, out, embeddings=embeddings, cf_run=cf_run, cf=cf, check=check)


def _write(tok, ds: Dataset, out: Path, *, embeddings, cf_run, cf, check) -> dict:
    with atomic_dir(out) as tmp:
        tok.save(tmp, ds.items["item_id"].astype(str).tolist())
        meta = json.loads((tmp / "tokenizer.json").read_text())
        meta.update(dataset=str(ds.path), dataset_fingerprint=ds.fingerprint, embeddings=str(embeddings) if embeddings else None,
                    cf_run=str(cf_run) if cf_run else None)

        if dist.world() > 1:
            meta["world_size"] = dist.world()
        (tmp / "tokenizer.json").write_text(json.dumps(meta, indent=2))
        rep = write_report(tok, tmp, cf=cf)
        if check is not None and cf_run is not None and tok.z_hat_ is not None:
            rep["ranking_check"] = check(tok.z_hat_, cf_run, ds)
            (tmp / "report.json").write_text(json.dumps(rep, indent=2))
        write_manifest(tmp)
    return rep
