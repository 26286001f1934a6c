"""Pipelines from declared stages: data -> embed -> sasrec -> tokenize -> generators (tiger, lcrec) -> ensemble
(several seeds of the generator decoded as one), VQ-Rec, cold start and diversity, each stage cached by a
fingerprint of its config and its inputs' fingerprints.

A config (TOML/YAML/JSON; a *recipe* when it has a ``[recipe]`` section) holds one section per stage. A stage
runs when its section is there or a later stage needs it. Two layouts:

- ``out`` given (``sidrec run CONFIG --out DIR``, the demo): each stage writes ``DIR/<stage>``;
- otherwise a shared, content-addressed work folder: ``WORK/<stage>/<fingerprint>``, so recipes that share a
  prepared dataset, an embedding, a CF run or a token set compute it once (e.g. every Beauty row).

Each stage folder holds ``stage.json`` (fingerprint, config, seconds, done). A stage whose folder has the same
fingerprint and is done is skipped; one that is not done resumes (the trainers continue from their last
checkpoint); one with another fingerprint (``--out`` layout) is started afresh.

Seeds: the run seed (``--seed``) goes to the stages listed in ``[recipe] vary`` (default: the model the row
reports, e.g. ``tiger``); the other stages take their section's ``seed`` (default 0), so a table's seeds differ
only in the model, as in the papers' tables. ``vary = ["tokenize", "tiger"]`` re-fits the tokens per seed too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sidrec.config import from_dict, load_file, route, to_dict
from sidrec.data.dataset import Dataset, load_dataset
from sidrec.data.prepare import PrepareConfig, prepare
from sidrec.data.sources import read_source
from sidrec.embeddings.text import EmbedConfig, embed_dataset
from sidrec.errors import SidrecError
from sidrec.eval.checks import ranking_check
from sidrec.eval.coldstart import ColdStartConfig, evaluate_coldstart
from sidrec.eval.evaluate import EvalConfig
from sidrec.eval.metrics import category_entropy, item_categories, metrics_from_ranks, ranks_from_lists
from sidrec.models.sasrec import SASRecConfig
from sidrec.models.vqrec import VQRecConfig
from sidrec.report import write_run_report
from sidrec.tokenizers.registry import tokenizer_for, tokenizer_spec
from sidrec.tokenizers.stage import tokenize
from sidrec.train.coldstart import coldstart_models, coldstart_spec
from sidrec.train.ensemble import evaluate_ensemble
from sidrec.train.generator import GENERATORS, generator_spec, load_generator
from sidrec.train.loop import TrainConfig
from sidrec.train.sasrec import SASREC_TRAIN_DEFAULTS, train_sasrec
from sidrec.train.trainer import decode_users
from sidrec.train.vqrec import (
    VQREC_TRAIN_DEFAULTS,
    VQRecTrainConfig,
    finetune_vqrec,
    init_model_config,
    pretrain_vqrec,
)
from sidrec.utils.artifacts import read_json, sha256_file
from sidrec.utils.log import info as log_info
from sidrec.utils.seeding import pick_device

DEMO_FILE = Path(__file__).parent / "configs" / "demo.toml"  # the one demo config


def demo_config(quick: bool = False) -> dict[str, Any]:
    """The demo pipeline (``configs/demo.toml``); ``quick``: a smaller catalog and fewer epochs on top of it."""
    cfg = tomllib.loads(DEMO_FILE.read_text())
    if quick:
        cfg["data"] = {"source": "synthetic", "synthetic": {"n_users": 300, "n_items": 120}}
        cfg["sasrec"] = {"dim": 32, "epochs": 10}
        cfg["tokenize"].update(codebook_size=16, epochs=100)
        cfg["tiger"] = {"preset": "small", "epochs": 4, "eval_every": 2}
    return cfg


# keys a generator section may hold besides its model and training config
GEN_EXTRA = ("beam", "valid_users", "decode_batch")
# what a smoke run (``--smoke``) does to each section: a tiny sub-sample, one or two epochs, the CPU
SMOKE = {"data": {"smoke_users": 200, "min_count": 2},
         "embed": {"device": "cpu", "batch_size": 64},
         "sasrec": {"epochs": 2, "device": "cpu", "max_minutes": None},
         "tokenize": {"epochs": 2, "device": "cpu", "codebook_size": 16},
         "tiger": {"epochs": 2, "eval_every": 1, "device": "cpu", "compile": False, "max_minutes": None,
                   "batch_size": 64},
         "lcrec": {"epochs": 1, "device": "cpu", "max_minutes": None, "batch_size": 32},
         "vqrec": {"epochs": 1, "device": "cpu", "max_minutes": None, "pretrain_epochs": 1},
         "coldstart": {"epochs": 1, "device": "cpu", "holdout": 0.2, "codebook_size": 16},
         "diversity": {"device": "cpu"}}
SMOKE_GENERATOR = SMOKE["tiger"]  # a generator without smoke settings of its own


class StageUnfinished(SidrecError):
    """A stage stopped at its time budget: not done; the same command resumes it."""


def _fp(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_fp(path: Path) -> list:
    """A file's name and content hash: the same input on another machine has the same fingerprint."""
    return [path.name, sha256_file(path)[:16]]


def _split(section: dict, classes: tuple, extra: tuple = (), where: str = "") -> list:
    """A flat section -> one config per class (+ the extra keys' dict); an unknown key is an error naming it."""
    return route(classes, section, extra, where)


@dataclass
class Pipeline:
    """One pipeline run: the config, where stages live, which stages take the run seed, and what ran."""

    cfg: dict[str, Any]
    seed: int
    work: Path
    flat: bool  # True: stage folders are OUT/<stage> (``--out``); False: WORK/<stage>/<fingerprint>
    vary: tuple[str, ...]
    data_root: Path | None = None
    smoke: bool = False
    log: Callable[[str], None] = log_info
    fps: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def section(self, name: str) -> dict:
        """A stage's section; in a smoke run with the smoke settings and the recipe's own ``[smoke]`` on top."""
        sec = dict(self.cfg.get(name) or {})
        if self.smoke:
            sec.update(SMOKE.get(name, SMOKE_GENERATOR if name in GENERATORS else {}))
            sec.update((self.cfg.get("smoke") or {}).get(name, {}))
            sec = {k: v for k, v in sec.items() if v is not None}
        return sec

    def stage_seed(self, name: str, section: dict) -> int:
        return self.seed if name in self.vary else int(section.pop("seed", 0))

    def stage(self, name: str, key: Any, body: Callable[[Path], None], *, label: str | None = None) -> tuple[str, Path]:
        """Run ``body(dir)`` unless a finished folder with this fingerprint exists; returns (fingerprint, dir).
        A lock file next to the folder lets several runs share a work folder (side by side on one machine's
        GPUs): the second waits for the first and then finds the stage done."""
        fp = _fp([name, key])
        d = self.work / (label or name) if self.flat else self.work / name / fp
        d.parent.mkdir(parents=True, exist_ok=True)
        with open(d.parent / f".{d.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return self._stage_locked(name, key, body, label, fp, d)

    def _stage_locked(self, name, key, body, label, fp: str, d: Path) -> tuple[str, Path]:
        marker = d / "stage.json"
        state = read_json(marker) if marker.is_file() else None
        if state and state.get("fingerprint") == fp and state.get("done"):
            self.seconds.setdefault(label or name, state.get("seconds", 0.0))
            self.log(f"stage {label or name}: cached ({d})")
            return fp, d
        if state and state.get("fingerprint") != fp or (d.exists() and state is None and self.flat):
            shutil.rmtree(d, ignore_errors=True)  # another config in the same --out folder: start afresh
        d.mkdir(parents=True, exist_ok=True)
        resumed = state is not None and state.get("fingerprint") == fp
        self.log(f"stage {label or name}" + (" (resuming)" if resumed else "") + f": {d}")
        marker.write_text(json.dumps({"fingerprint": fp, "config": key, "done": False}, indent=2, default=str))
        t0 = time.time()
        body(d)
        secs = round(time.time() - t0 + (state or {}).get("seconds", 0.0), 1)
        metrics = d / "metrics.json"
        done = not (metrics.is_file() and read_json(metrics).get("stopped") == "time")
        marker.write_text(json.dumps({"fingerprint": fp, "config": key, "done": done, "seconds": secs},
                                     indent=2, default=str))
        self.seconds[label or name] = secs
        if not done:
            raise StageUnfinished(f"stage {label or name} stopped at its time budget ({d}); run the same command "
                                  f"again to resume it")
        return fp, d

    # -- the stages ------------------------------------------------------------------------------------------
    def inputs(self, sec: dict, where: str) -> list[Path]:
        files = []
        for f in sec.get("inputs", []):
            p = Path(f)
            if not p.is_absolute() and self.data_root is not None:
                p = self.data_root / p
            if not p.exists():
                hint = f" (data root {self.data_root})" if self.data_root is not None else ""
                raise SidrecError(f"{where}: input file {p} not found{hint}; give --data-root DIR, the folder the "
                                  f"recipe's input paths are relative to")
            files.append(p)
        return files

    def data(self, sec: dict | None = None, label: str = "data") -> tuple[str, Path]:
        sec = dict(self.section("data") if sec is None else sec)
        sec.pop("name", None)
        seed = int(sec.pop("seed", 0))
        source = sec.pop("source", "synthetic")
        files = self.inputs(sec, f"[{label}]")
        sec.pop("inputs", None)
        syn = {"seed": seed, **sec.pop("synthetic", {})}
        columns = sec.pop("columns", None)
        smoke_users = sec.pop("smoke_users", None)
        pcfg = from_dict(PrepareConfig, sec)
        key = {"source": source, "inputs": [_file_fp(f) for f in files if f.is_file()] or [str(f) for f in files],
               "prepare": to_dict(pcfg), "columns": columns, "smoke_users": smoke_users,
               **({"synthetic": syn} if source == "synthetic" else {})}

        def body(d: Path) -> None:
            raw = read_source(source, [str(f) for f in files], columns=columns, synthetic=syn)
            if smoke_users:
                users = raw.interactions["user"].unique()
                keep = np.random.default_rng(seed).permutation(users)[:smoke_users]
                before = len(raw.interactions)
                raw.interactions = raw.interactions[raw.interactions["user"].isin(set(keep))]
                raw.filtered[f"smoke run: users outside a sample of {smoke_users}"] = before - len(raw.interactions)
            prepare(raw, d, pcfg, source=source)
        return self.stage("data", key, body, label=label)

    def embed(self, data_fp: str, data_dir: Path, label: str = "embed") -> tuple[str, Path]:
        sec = self.section("embed")
        sec["seed"] = self.stage_seed("embed", sec)
        ecfg = from_dict(EmbedConfig, sec)
        return self.stage("embed", [to_dict(ecfg), data_fp],
                          lambda d: embed_dataset(load_dataset(data_dir), d, ecfg, log=self.log), label=label)

    def sasrec(self, ds: Dataset) -> tuple[str, Path]:
        sec = {**SASREC_TRAIN_DEFAULTS, "max_history": ds.stats["config"]["max_history"], **self.section("sasrec")}
        sec["seed"] = self.stage_seed("sasrec", sec)
        mcfg, tcfg, _ = _split(sec, (SASRecConfig, TrainConfig), where="[sasrec]")
        return self.stage("sasrec", [to_dict(mcfg), to_dict(tcfg), self.fps["data"]],
                          lambda d: train_sasrec(ds, d, mcfg, tcfg, log=self.log))

    def tokenize(self, ds: Dataset) -> tuple[str, Path]:
        sec = self.section("tokenize")
        method = sec.pop("method", "rqvae")
        spec = tokenizer_spec(method)
        if "seed" in spec.default.__dataclass_fields__:
            sec["seed"] = self.stage_seed("tokenize", sec)
        if "index" in spec.inputs:
            if "index" not in sec:
                raise SidrecError(f"[tokenize] method {method} needs index = FILE.index.json")
            sec["index"] = str(self.inputs({"inputs": [sec["index"]]}, "[tokenize]")[0])
        sec = spec.drop_inapplicable(sec)  # e.g. a smoke run's epochs for a method that does not train by epochs
        # the CF run: an input of LETTER; for the other methods (when the config trains one) the report's CF overlap
        needs_emb = "embeddings" in spec.inputs
        needs_cf = "cf" in spec.inputs or (needs_emb and "sasrec" in self.dirs)
        key = {"method": method, **{k: v for k, v in sec.items() if k != "index"},
               "index": _file_fp(Path(sec["index"])) if "index" in sec else None,
               "embed": self.fps.get("embed") if needs_emb else None,
               "cf": self.fps.get("sasrec") if needs_cf else None, "data": self.fps["data"]}
        return self.stage("tokenize", key, lambda d: tokenize(
            ds, d, method=method, embeddings=self.dirs.get("embed") if needs_emb else None,
            cf_run=self.dirs.get("sasrec") if needs_cf else None, overrides=sec, log=self.log, check=ranking_check),
            label="tokens" if self.flat else None)

    def generator(self, name: str, ds: Dataset, seed: int | None = None) -> tuple[str, Path]:
        spec = generator_spec(name)
        sec = self.section(name)
        sec = {**spec.train_defaults(sec.get("preset")), **sec}
        if "preset" not in spec.config.__dataclass_fields__:
            sec.pop("preset", None)
        sec["seed"] = self.stage_seed(name, sec) if seed is None else seed
        mcfg, tcfg, extra = _split(sec, (spec.config, TrainConfig), GEN_EXTRA, where=f"[{name}]")
        key = [to_dict(mcfg), to_dict(tcfg), extra, self.fps["tokenize"], self.fps["data"]]
        if getattr(mcfg, "dense_weight", 0) > 0 and not mcfg.dense_embeddings:  # the recipe's own text vectors
            key.append(self.fps["embed"])
            mcfg = replace(mcfg, dense_embeddings=str(self.dirs["embed"]))
        return self.stage(name, key, lambda d: spec.train(ds, self.dirs["tokenize"], d, mcfg, tcfg, log=self.log,
                                                          **extra))

    def ensemble(self, ds: Dataset, gen: str) -> tuple[str, Path]:
        """``members`` runs of the generator (this seed's, then seeds + i * ``seed_offset``, each its own cached
        stage: the first is the plain recipe's run), then the generator run of each recipe listed in ``with``
        (same seed, same WORK: their own cached stages, e.g. other tokens of the same data), decoded as one
        (``sidrec ensemble``; ``fuse`` auto: by ID level when all share the IDs, else by item)."""
        sec = self.section("ensemble")
        members, offset = int(sec.get("members", 2)), int(sec.get("seed_offset", 1000))
        others = [Path(x) for x in sec.get("with", [])]
        if members < 1 or members + len(others) < 2:
            raise SidrecError(f"[ensemble] members = {members}, with {len(others)} recipe(s): an ensemble takes 2 "
                              f"runs or more")
        if others and self.flat:
            raise SidrecError("[ensemble] with = [...]: other recipes' runs live in a shared WORK folder; run it as "
                              "a recipe (sidrec run RECIPE), not with --out")
        fps, runs = [self.fps[gen]], [self.dirs[gen]]
        for i in range(1, members):
            fp, d = self.generator(gen, ds, seed=self.seed + i * offset)
            fps.append(fp)
            runs.append(d)
        for path in others:
            cfg = _other_recipe(path)
            name = next(g for g in GENERATORS if g in cfg)
            res = run_pipeline(cfg, work=self.work, seed=self.seed, data_root=self.data_root, smoke=self.smoke,
                               until=name, log=self.log)
            if res["fingerprints"]["data"] != self.fps["data"]:
                raise SidrecError(f"[ensemble] with {path}: its data differ from this recipe's ([data] sections); "
                                  f"an ensemble ranks one catalog")
            fps.append(res["fingerprints"][name])
            runs.append(Path(res["dirs"][name]))
        weights, beam, fuse = sec.get("weights"), int(sec.get("beam", 20)), sec.get("fuse", "auto")
        key = [fps, weights, beam] + ([fuse] if fuse != "auto" else [])  # runs made before fuse existed stay cached
        return self.stage("ensemble", key, lambda d: evaluate_ensemble(
            runs, d, weights=weights, beam=beam, decode_batch=int(sec.get("decode_batch", 256)),
            device=sec.get("device", "auto"), fuse=fuse))

    def vqrec_pretrain(self, domains: list[dict], mcfg, vcfg, tcfg, ecfg, epochs, minutes) -> Path:
        """VQ-Rec pre-training on the ``domains`` (data sections; each prepared and embedded as its own cached
        stage); returns the run (shared by every recipe that pre-trains the same way)."""
        pre = []
        for i, dom in enumerate(domains):
            smoke = {**SMOKE["data"], **(self.cfg.get("smoke") or {}).get("data", {})} if self.smoke else {}
            dfp, ddir = self.data({**dom, **smoke},
                                  label=f"pretrain-data-{dom.get('name', i)}")
            efp, edir = self.embed(dfp, ddir, label=f"pretrain-embed-{dom.get('name', i)}")
            pre.append((dfp, ddir, efp, edir))
        ptcfg = from_dict(TrainConfig, {**to_dict(tcfg), **({"epochs": epochs} if epochs else {}),
                                        **({"max_minutes": minutes} if minutes else {})})
        key = [to_dict(mcfg), to_dict(vcfg), to_dict(ptcfg), [(p[0], p[2]) for p in pre]]
        fp, init = self.stage("vqrec-pretrain", key, lambda d: pretrain_vqrec(
            [load_dataset(p[1]) for p in pre], d, mcfg, vcfg, ptcfg, ecfg, [p[3] / "item_emb.npy" for p in pre],
            log=self.log))
        self.fps["vqrec-pretrain"] = fp
        return init

    def vqrec(self, ds: Dataset) -> tuple[str, Path]:
        sec = {**VQREC_TRAIN_DEFAULTS, **self.section("vqrec")}
        domains = sec.pop("pretrain", [])
        pre_epochs = sec.pop("pretrain_epochs", None)
        pre_minutes = sec.pop("pretrain_max_minutes", None)
        use_pretrain = bool(domains)
        sec["seed"] = self.stage_seed("vqrec", sec)
        mcfg, vcfg, tcfg, extra = _split(sec, (VQRecConfig, VQRecTrainConfig, TrainConfig), ("ks",), where="[vqrec]")
        ecfg = from_dict(EmbedConfig, {k: v for k, v in self.section("embed").items() if k != "seed"})
        init = None
        if use_pretrain:
            init = self.vqrec_pretrain(domains, mcfg, vcfg, tcfg, ecfg, pre_epochs, pre_minutes)
            mcfg = from_dict(VQRecConfig, {**to_dict(mcfg), **init_model_config(init)})

        ks = tuple(int(k) for k in str(extra.get("ks", "10,50")).split(","))
        key = [to_dict(mcfg), to_dict(vcfg), to_dict(tcfg), ks, self.fps["data"], self.fps.get("embed"),
               self.fps.get("vqrec-pretrain")]
        return self.stage("vqrec", key, lambda d: finetune_vqrec(
            ds, d, init=init, model_cfg=mcfg, vq_cfg=vcfg, train_cfg=tcfg, embed_cfg=ecfg,
            embeddings=self.dirs["embed"] / "item_emb.npy", eval_cfg=EvalConfig(ks=ks, max_history=mcfg.max_history),
            log=self.log))

    def coldstart(self, ds: Dataset) -> tuple[str, Path]:
        sec = self.section("coldstart")
        model = sec.pop("model", "tiger")
        spec = coldstart_spec(model)
        method = sec.pop("method", "rqvae")
        cs_keys = {f for f in ColdStartConfig.__dataclass_fields__} - {"seed", "reuse"}
        cs = {k: sec.pop(k) for k in list(sec) if k in cs_keys}
        tok = {k: sec.pop(k) for k in ("n_levels", "codebook_size") if k in sec} if spec.tokenizer else {}
        seed = self.stage_seed("coldstart", sec)
        init = None
        domains = sec.pop("pretrain", [])
        pre_epochs, pre_minutes = sec.pop("pretrain_epochs", None), sec.pop("pretrain_max_minutes", None)
        if domains and not spec.pretrain:
            raise SidrecError(f"[coldstart] pretrain: {model} has no pre-training (one with it: "
                              f"{', '.join(n for n, s in coldstart_models().items() if s.pretrain)})")
        preset = sec.get("preset")
        if not any("preset" in c.__dataclass_fields__ for c in spec.configs):
            sec.pop("preset", None)
        *cfgs, _ = _split({**spec.defaults(preset, None), **sec, "seed": seed}, spec.configs, where="[coldstart]")
        if domains:  # fine-tuned from a pre-trained run (pre-training seeded by its section, not the run seed)
            ecfg0 = from_dict(EmbedConfig, {k: v for k, v in self.section("embed").items() if k != "seed"})
            init = self.vqrec_pretrain(domains, cfgs[0], cfgs[1], from_dict(TrainConfig, {**to_dict(cfgs[-1]), "seed": 0}),
                                       ecfg0, pre_epochs, pre_minutes)
            cfgs[0] = from_dict(type(cfgs[0]), {**to_dict(cfgs[0]), **spec.init_config(init)})
        ccfg = from_dict(ColdStartConfig, {**cs, "seed": seed})
        ecfg = from_dict(EmbedConfig, {k: v for k, v in self.section("embed").items() if k != "seed"})
        key = [model, method if spec.tokenizer else None, tok, to_dict(ccfg), *(to_dict(c) for c in cfgs),
               self.fps["data"], self.fps["embed"], self.fps.get("vqrec-pretrain") if init else None]

        def body(d: Path) -> None:
            cold = spec.build(tuple(cfgs), method=method, tok_overrides={"seed": seed, **tok}, embed_cfg=ecfg,
                              init=init, cfg=ccfg)
            rows = evaluate_coldstart(ds, d, cold, embed_cfg=ecfg, cfg=ccfg, embeddings=self.dirs["embed"] / "item_emb.npy",
                                      device=cfgs[-1].device, log=self.log)
            (d / "rows.json").write_text(json.dumps(rows, indent=1))
        return self.stage("coldstart", key, body)

    def diversity(self, ds: Dataset, model: str) -> tuple[str, Path]:
        sec = self.section("diversity")
        temps = [float(t) for t in sec.pop("temperatures", [1.0, 1.5, 2.0])]
        depth, k, beam = int(sec.pop("depth", 2)), int(sec.pop("k", 10)), int(sec.pop("beam", 20))
        batch, device = int(sec.pop("decode_batch", 512)), sec.pop("device", "auto")
        seed = self.stage_seed("diversity", sec)
        if sec:
            raise SidrecError(f"[diversity]: unknown key(s) {sorted(sec)}")
        key = [temps, depth, k, beam, seed, self.fps[model]]

        def body(d: Path) -> None:
            dev = pick_device(device)
            net, trie, _ = load_generator(self.dirs[model], dev)
            cats = item_categories(ds, depth)
            _, _, target = ds.eval_inputs("test", 1)
            rows = []
            for T in [0.0, *temps]:
                t0 = time.time()
                lists = decode_users(net, trie, ds, "test", beam=beam, k=k, batch_size=batch, device=dev,
                                     sample_temperature=T, seed=seed)
                m = metrics_from_ranks(ranks_from_lists(lists, target), (k,))
                rows.append({"decoding": "sample" if T else "beam", "temperature": T or None,
                             f"entropy@{k}": round(category_entropy(lists, cats, k), 4),
                             f"recall@{k}": round(m[f"recall@{k}"], 5), f"ndcg@{k}": round(m[f"ndcg@{k}"], 5),
                             "users": ds.n_users, "category_depth": depth, "seconds": round(time.time() - t0, 1)})
                self.log(f"diversity: {rows[-1]}")
            (d / "rows.json").write_text(json.dumps(rows, indent=1))
        return self.stage("diversity", key, body)


def stages() -> tuple[str, ...]:
    """Every stage, in order; one per registered generator (read at call time: a generator registered later
    takes part)."""
    return ("data", "embed", "sasrec", "tokenize", *GENERATORS, "ensemble", "vqrec", "coldstart", "diversity")


def sections() -> set[str]:
    return {"seed", "recipe", "smoke", "out", *stages()}


def _fields(*classes) -> set[str]:
    return set().union(*({f for f in c.__dataclass_fields__} for c in classes))


DATA_KEYS = _fields(PrepareConfig) | {"name", "source", "inputs", "seed", "synthetic", "columns", "smoke_users"}


def validate(cfg: dict[str, Any], where: str = "pipeline config") -> None:
    """Check every section's keys against the configs its stage builds, before anything runs (a typo fails in a
    second, not after hours of training)."""

    def check(name: str, sec: dict, allowed: set[str]) -> None:
        bad = set(sec) - allowed
        if bad:
            raise SidrecError(f"{where}: [{name}] unknown key(s) {sorted(bad)}")

    unknown = set(cfg) - sections()
    if unknown:
        raise SidrecError(f"{where}: unknown section(s) {sorted(unknown)}; known: {', '.join(sorted(sections()))}")
    check("data", cfg.get("data", {}), DATA_KEYS)
    check("embed", cfg.get("embed", {}), _fields(EmbedConfig))
    check("sasrec", cfg.get("sasrec", {}), _fields(SASRecConfig, TrainConfig))
    tok = dict(cfg.get("tokenize", {}))
    if tok:
        _, default = tokenizer_for(tok.get("method", "rqvae"))
        check("tokenize", tok, _fields(type(default)) | {"method", "index", "seed", "epochs", "device", "n_levels",
                                                         "codebook_size"})
    for name, spec in GENERATORS.items():
        check(name, cfg.get(name, {}), _fields(spec.config, TrainConfig) | set(GEN_EXTRA) |
              ({"preset"} if spec.presets else set()))
    vq = cfg.get("vqrec", {})
    check("vqrec", vq, _fields(VQRecConfig, VQRecTrainConfig, TrainConfig) |
          {"pretrain", "pretrain_epochs", "pretrain_max_minutes", "ks"})
    for dom in [*vq.get("pretrain", []), *cfg.get("coldstart", {}).get("pretrain", [])]:
        check("pretrain", dom, DATA_KEYS)
    cs = cfg.get("coldstart", {})
    model = coldstart_models()
    if cs.get("model", "tiger") not in model:
        raise SidrecError(f"{where}: [coldstart] model = {cs['model']!r}: choose one of {', '.join(model)}")
    check("coldstart", cs, _fields(ColdStartConfig, *model[cs.get("model", "tiger")].configs) |
          {"model", "method", "n_levels", "codebook_size", "preset", "pretrain", "pretrain_epochs",
           "pretrain_max_minutes"})
    ens = cfg.get("ensemble", {})
    check("ensemble", ens, {"members", "seed_offset", "weights", "beam", "decode_batch", "device", "with", "fuse"})
    if not isinstance(ens.get("with", []), list):
        raise SidrecError(f"{where}: [ensemble] with = {ens['with']!r}: a list of recipe files")
    check("diversity", cfg.get("diversity", {}),
          {"temperatures", "depth", "k", "beam", "decode_batch", "device", "seed"})
    for name, sec in (cfg.get("smoke") or {}).items():
        if name not in stages():
            raise SidrecError(f"{where}: [smoke] names no stage: {name!r}")


def _other_recipe(path: Path) -> dict:
    """A recipe named by ``[ensemble] with``: checked, with a generator and no ``with`` of its own."""
    cfg = load_file(path)
    validate(cfg, str(path))
    if not any(g in cfg for g in GENERATORS):
        raise SidrecError(f"[ensemble] with {path}: it trains no generator ([tiger] or [lcrec])")
    if (cfg.get("ensemble") or {}).get("with"):
        raise SidrecError(f"[ensemble] with {path}: it has an [ensemble] with of its own; name its members here")
    return cfg


def needed(cfg: dict) -> list[str]:
    """The stages a config runs, in order: those with a section, and those a later one needs."""
    have = {s for s in stages() if s in cfg}
    tok = cfg.get("tokenize", {})
    if have & set(GENERATORS):
        have.add("tokenize")
    inputs = tokenizer_spec(tok.get("method", "rqvae")).inputs if "tokenize" in have else ()
    if "embeddings" in inputs:
        have.add("embed")
    if "cf" in inputs:
        have.add("sasrec")
    if have & {"vqrec", "coldstart"} or any((cfg.get(g) or {}).get("dense_weight", 0) > 0 and
                                            not (cfg.get(g) or {}).get("dense_embeddings") for g in GENERATORS):
        have.add("embed")  # a dense head reads the items' text vectors
    if "ensemble" in have and not have & set(GENERATORS):
        raise SidrecError("[ensemble] decodes several runs of a generator: add a [tiger] or [lcrec] section")
    if "diversity" in have and not have & set(GENERATORS):
        raise SidrecError("[diversity] decodes a generator: add a [tiger] or [lcrec] section")
    return ["data", *[s for s in stages()[1:] if s in have]]


def run_pipeline(cfg: dict[str, Any], out: str | Path | None = None, *, work: str | Path = "runs/work",
                 seed: int | None = None, data_root: str | Path | None = None, smoke: bool = False,
                 until: str | None = None, log=log_info) -> dict:
    """Run the stages of ``cfg``; returns {"dirs", "seconds", "fingerprints", "test", "report"}.
    ``out``: every stage under OUT/<stage> (the demo's layout); else the shared work folder ``work``.
    ``until``: stop after that stage (e.g. inputs made on a CPU machine, the generator trained on a GPU one:
    carry WORK over and the cached stages are found by their fingerprints); returns ``{"partial": True, ...}``."""
    validate(cfg)
    rec = cfg.get("recipe", {})
    plan = needed(cfg)
    models = {*GENERATORS, "ensemble", "vqrec", "sasrec"}
    model = rec.get("model") or next((s for s in reversed(plan) if s in models),
                                     "coldstart" if "coldstart" in plan else plan[-1])
    # a recipe's seeds vary its model (and cold-start / diversity runs); a plain config's seed is every stage's
    vary = tuple(rec.get("vary", [model, *GENERATORS, "coldstart", "diversity"] if model == "ensemble" else
                         [model, "coldstart", "diversity"])) if "recipe" in cfg else stages()
    p = Pipeline(cfg=cfg, seed=int(cfg.get("seed", 0) if seed is None else seed),
                 work=Path(out if out is not None else work), flat=out is not None, vary=vary,
                 data_root=Path(data_root) if data_root is not None else None, smoke=smoke, log=log)
    if until is not None and until not in plan:
        raise SidrecError(f"--until {until}: not a stage of this config ({', '.join(plan)})")
    p.fps["data"], p.dirs["data"] = p.data()
    ds = load_dataset(p.dirs["data"])
    for name in plan[1:] if until != "data" else ():
        if name == "embed":
            res = p.embed(p.fps["data"], p.dirs["data"])
        elif name in ("sasrec", "tokenize", "vqrec", "coldstart"):
            res = getattr(p, name)(ds)
        elif name in GENERATORS:
            res = p.generator(name, ds)
        elif name == "ensemble":
            res = p.ensemble(ds, next(g for g in GENERATORS if g in p.dirs))
        else:
            res = p.diversity(ds, next(g for g in GENERATORS if g in p.dirs))
        p.fps[name], p.dirs[name] = res
        if name == until:
            break
    if until is not None:
        return {"partial": True, "dirs": {k: str(v) for k, v in p.dirs.items()}, "seconds": dict(p.seconds),
                "fingerprints": dict(p.fps)}
    return _summary(p, plan, model)


def _summary(p: Pipeline, stages: list[str], model: str) -> dict:
    runs = {s: p.dirs[s] for s in (*GENERATORS, "sasrec", "vqrec") if s in p.dirs}
    res: dict[str, Any] = {"dirs": {k: str(v) for k, v in p.dirs.items()}, "seconds": dict(p.seconds),
                           "fingerprints": dict(p.fps), "model": model, "seed": p.seed}
    if p.flat and runs:
        res.update(write_run_report(p.work, runs, p.dirs.get("tokenize"), title=f"sidrec pipeline: {p.dirs['data']}"))
    else:
        if "ensemble" in p.dirs:
            runs["ensemble"] = p.dirs["ensemble"]
        res["test"] = {s: read_json(d / "metrics.json").get("test", {}) for s, d in runs.items()
                       if (d / "metrics.json").is_file()}
    return res


def device_name() -> str:
    """The accelerator a run used, in words ("NVIDIA H200"), or "cpu"."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
