"""The whole pipeline as cached stages: data -> embed -> sasrec -> tokenize -> tiger -> report.

Each stage writes its artifact under OUT/<stage> and a ``stage.json`` holding the fingerprint of its
config and inputs; a rerun skips stages whose fingerprint is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from sidrec.config import from_dict
from sidrec.errors import SidrecError
from sidrec.utils.log import info as log_info

DEMO_FILE = Path(__file__).parent / "configs" / "demo.toml"  # the one demo config


def demo_config(quick: bool = False) -> dict[str, Any]:
    """The demo pipeline (``configs/demo.toml``); ``quick``: a smaller catalog and fewer epochs on top of it."""
    import tomllib

    cfg = tomllib.loads(DEMO_FILE.read_text())
    if quick:
        cfg["data"] = {"source": "synthetic", "synthetic": {"n_users": 300, "n_items": 120}}
        cfg["sasrec"] = {"dim": 32, "epochs": 10}
        cfg["tokenize"].update(codebook_size=16, epochs=100)
        cfg["tiger"] = {"preset": "small", "epochs": 4, "eval_every": 2}
    return cfg


STAGES = ("data", "embed", "sasrec", "tokenize", "tiger", "lcrec")  # lcrec: only when the config has [lcrec]


def _fp(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(d: Path, fp: str) -> bool:
    f = d / "stage.json"
    return f.is_file() and json.loads(f.read_text()).get("fingerprint") == fp


def _mark(d: Path, fp: str, cfg: dict) -> None:
    (d / "stage.json").write_text(json.dumps({"fingerprint": fp, "config": cfg}, indent=2, default=str))


def run_pipeline(cfg: dict[str, Any], out: str | Path, log=log_info) -> dict:
    from sidrec.data.dataset import load_dataset
    from sidrec.data.prepare import PrepareConfig, prepare
    from sidrec.data.sources import read_source
    from sidrec.embeddings.text import EmbedConfig, embed_dataset
    from sidrec.models.sasrec import SASRecConfig
    from sidrec.models.tiger import TIGERConfig
    from sidrec.train.loop import TrainConfig
    from sidrec.train.sasrec import SASREC_TRAIN_DEFAULTS, train_sasrec
    from sidrec.train.tiger import TRAIN_PRESETS, train_tiger
    from sidrec.tokenizers.stage import tokenize
    from sidrec.eval.checks import ranking_check

    unknown = set(cfg) - {"seed", *STAGES}
    if unknown:
        raise SidrecError(f"pipeline config: unknown section(s) {sorted(unknown)}; known: seed, {', '.join(STAGES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed", 0))
    fps: dict[str, str] = {}

    def split(section: dict, *classes):
        names = set().union(*({f for f in c.__dataclass_fields__} for c in classes))
        bad = set(section) - names - {"beam", "valid_users", "decode_batch"}
        if bad:
            raise SidrecError(f"pipeline config: unknown key(s) {sorted(bad)}")
        return [from_dict(c, {k: v for k, v in section.items() if k in c.__dataclass_fields__}) for c in classes]

    # data
    dc = dict(cfg.get("data", {}))
    fps["data"] = _fp(["data", dc, seed])
    ddir = out / "data"
    if not _cached(ddir, fps["data"]):
        log("stage data")
        syn = {"seed": seed, **dc.pop("synthetic", {})}
        raw = read_source(dc.pop("source", "synthetic"), dc.pop("inputs", []), columns=dc.pop("columns", None),
                          synthetic=syn)
        prepare(raw, ddir, from_dict(PrepareConfig, dc), source=cfg.get("data", {}).get("source", "synthetic"))
        _mark(ddir, fps["data"], cfg.get("data", {}))
    ds = load_dataset(ddir)

    # embeddings
    ec = {"seed": seed, **cfg.get("embed", {})}
    fps["embed"] = _fp(["embed", ec, fps["data"]])
    edir = out / "embed"
    if not _cached(edir, fps["embed"]):
        log("stage embed")
        embed_dataset(ds, edir, from_dict(EmbedConfig, ec), log=log)
        _mark(edir, fps["embed"], ec)

    # SASRec (CF embeddings + baseline)
    sc = {**SASREC_TRAIN_DEFAULTS, "seed": seed, "max_history": ds.stats["config"]["max_history"], **cfg.get("sasrec", {})}
    fps["sasrec"] = _fp(["sasrec", sc, fps["data"]])
    sdir = out / "sasrec"
    if not _cached(sdir, fps["sasrec"]):
        log("stage sasrec")
        shutil.rmtree(sdir, ignore_errors=True)
        mcfg, tcfg = split(sc, SASRecConfig, TrainConfig)
        train_sasrec(ds, sdir, mcfg, tcfg, log=log)
        _mark(sdir, fps["sasrec"], sc)

    # tokenizer
    tc = {"seed": seed, **cfg.get("tokenize", {})}
    method = tc.pop("method", "rqvae")
    fps["tokenize"] = _fp(["tokenize", method, tc, fps["embed"], fps["sasrec"]])
    tdir = out / "tokens"
    if not _cached(tdir, fps["tokenize"]):
        log(f"stage tokenize ({method})")
        tokenize(ds, tdir, method=method, embeddings=edir, cf_run=sdir if method != "published" else None,
                 overrides=tc, log=log, check=ranking_check)
        _mark(tdir, fps["tokenize"], {"method": method, **tc})

    def generator(name: str, conf: dict, model_cls, train_fn) -> Path:
        """One generator stage on the tokens: cached by its config and its inputs' fingerprints."""
        fps[name] = _fp([name, conf, fps["tokenize"], fps["data"]])
        gdir = out / name
        if not _cached(gdir, fps[name]):
            log(f"stage {name}")
            shutil.rmtree(gdir, ignore_errors=True)
            rest = dict(conf)
            extra = {k: rest.pop(k) for k in ("beam", "valid_users", "decode_batch") if k in rest}
            mcfg, tcfg = split(rest, model_cls, TrainConfig)
            train_fn(ds, tdir, gdir, mcfg, tcfg, log=log, **extra)
            _mark(gdir, fps[name], conf)
        return gdir

    gc = dict(cfg.get("tiger", {}))
    preset = gc.get("preset", "tiger")
    gc = {**TRAIN_PRESETS.get(preset, TRAIN_PRESETS["tiger"]), "seed": seed, **gc}
    runs = {"tiger": generator("tiger", gc, TIGERConfig, train_tiger), "sasrec": sdir}
    if "lcrec" in cfg:  # the LC-Rec generator on the same tokens (optional stage)
        from sidrec.models.lcrec import LCRecConfig
        from sidrec.train.lcrec import TRAIN_DEFAULTS as LCREC_DEFAULTS
        from sidrec.train.lcrec import train_lcrec

        runs["lcrec"] = generator("lcrec", {**LCREC_DEFAULTS, "seed": seed, **cfg["lcrec"]}, LCRecConfig, train_lcrec)

    from sidrec.report import write_run_report

    return write_run_report(out, runs, tdir, title=f"sidrec pipeline: {ds.path}")
