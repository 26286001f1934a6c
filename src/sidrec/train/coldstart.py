"""Cold start for every model that can add items by text: one :class:`ColdStartSpec` per model kind, read by
``sidrec evaluate-coldstart`` and the pipeline's ``coldstart`` stage (the protocol itself is
``sidrec.eval.coldstart``).

Every registered generator whose spec says ``cold_start`` gets one from its generator spec (fit the tokenizer on the
seen items, train the generator, give new items IDs through the tokenizer and score them by ID prefix or by their
text neighbours); VQ-Rec registers its own (OPQ codes from the seen items' text, fine-tuned from a pre-trained run).
A new kind = its :class:`ColdStartSpec` in ``register_coldstart``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from sidrec.data.dataset import Dataset
from sidrec.decoding.beam import generate, prefix_scores
from sidrec.decoding.newitems import collision_suffix, grown, neighbour_scores, new_item_ids, unit_rows
from sidrec.errors import SidrecError
from sidrec.eval.coldstart import ColdStartConfig, ColdStartModel, Scorer
from sidrec.models.vqrec import VQRecConfig
from sidrec.tokenizers.opq import OPQTokenizer
from sidrec.tokenizers.registry import load_tokenizer, tokenizer_for
from sidrec.tokenizers.stage import tokenize
from sidrec.train.config import TrainConfig
from sidrec.train.generator import GENERATORS, GeneratorSpec, load_generator
from sidrec.train.loop import CKPT
from sidrec.train.vqrec import VQREC_TRAIN_DEFAULTS, VQRecTrainConfig, finetune_vqrec, init_model_config, load_vqrec
from sidrec.utils.artifacts import load_npy, read_json


@dataclass(frozen=True)
class ColdStartSpec:
    """A model kind under the cold-start protocol: its option dataclasses (``TrainConfig`` last), its training
    defaults for a preset / pre-trained run, and ``build(configs, *, method, tok_overrides, embed_cfg, init)``
    making the :class:`ColdStartModel`. ``tokenizer``: fits a tokenizer on the seen items (``--method``,
    ``--levels``, ``--codebook-size`` apply)."""

    name: str
    configs: tuple[type, ...]
    build: Callable[..., ColdStartModel]
    defaults: Callable[[str | None, Path | None], Mapping[str, Any]] = lambda preset, init: {}
    tokenizer: bool = True
    init_config: Callable[[Path], Mapping[str, Any]] | None = None  # the model options a pre-trained run fixes;
    # set: the kind can start from a pre-trained run (--init, a recipe's pre-training domains)
    presets: tuple[str, ...] = field(default=())

    @property
    def pretrain(self) -> bool:
        return self.init_config is not None


COLDSTART: dict[str, ColdStartSpec] = {}


def register_coldstart(spec: ColdStartSpec) -> ColdStartSpec:
    COLDSTART[spec.name] = spec
    return spec


def coldstart_models() -> dict[str, ColdStartSpec]:
    """Every kind the protocol can run: the registered generators that support cold start, then the others."""
    return {**{g: _from_generator(s) for g, s in GENERATORS.items() if s.cold_start}, **COLDSTART}


def coldstart_spec(name: str) -> ColdStartSpec:
    models = coldstart_models()
    if name not in models:
        raise SidrecError(f"cold start for {name!r}: choose one of {', '.join(models)}")
    return models[name]


def _from_generator(g: GeneratorSpec) -> ColdStartSpec:
    def build(configs, *, method: str, tok_overrides: dict, embed_cfg=None, init=None, cfg: ColdStartConfig):
        model_cfg, train_cfg = configs
        if "dense" in cfg.rules and not (getattr(model_cfg, "dense_weight", 0) > 0 and model_cfg.dense_fusion > 0):
            raise SidrecError(_NO_DENSE)  # before anything is trained

        def train(seen: Dataset, out: Path, log) -> None:
            _tokenize_and_train(g, seen, out, method=method, tok_overrides=tok_overrides, model_cfg=model_cfg,
                                train_cfg=train_cfg, cfg=cfg, log=log)
        return ColdStartModel(g.name, train, _generator_scorer)

    return ColdStartSpec(g.name, (g.config, TrainConfig), build, lambda preset, init: g.train_defaults(preset),
                         presets=tuple(g.presets))


_NO_DENSE = ("--rule dense: this generator has no dense head; train it with --set dense_weight=W (W > 0; "
             "dense_fusion > 0)")


def _tokenize_and_train(g: GeneratorSpec, seen: Dataset, out: Path, *, method, tok_overrides, model_cfg, train_cfg,
                        cfg: ColdStartConfig, log) -> None:
    """Fit the tokenizer on the seen items and train the generator (OUT/tok, OUT/run)."""
    tok_meta = out / "tok" / "tokenizer.json"
    fitted = read_json(tok_meta).get("n_items") if tok_meta.is_file() else None
    if train_cfg.resume and (out / "run" / CKPT).is_file() and fitted == seen.n_items:
        # an interrupted run resumes on the tokens it was trained on (a refit on a GPU need not give the same codes)
        log(f"cold start: resuming the run in {out / 'run'} on its tokens in {out / 'tok'}")
    else:
        _, tcfg = tokenizer_for(method)
        if getattr(tcfg, "collision", None) == "none" and "collision" not in tok_overrides:
            tok_overrides = {**tok_overrides, "collision": "append"}  # new items need the appended position (OPQ)
        tokenize(seen, out / "tok", method=method, embeddings=out / "emb", overrides=tok_overrides, log=log)
        if tok_meta.is_file() and read_json(tok_meta)["n_items"] != seen.n_items:
            raise SidrecError("internal: tokenizer fitted on another catalog than the seen items")
    g.train(seen, out / "tok", out / "run", model_cfg, train_cfg, beam=cfg.beam, ks=(cfg.k,), log=log)


def _vqrec() -> ColdStartSpec:
    def build(configs, *, method=None, tok_overrides=None, embed_cfg=None, init=None, cfg: ColdStartConfig):
        model_cfg, vq_cfg, train_cfg = configs
        if vq_cfg.codes != "opq":  # checked before any data is written
            raise SidrecError("cold start needs codes from text: VQ-Rec with --codes random cannot encode new items")

        def train(seen: Dataset, out: Path, log) -> None:
            finetune_vqrec(seen, out / "run", init=init, model_cfg=model_cfg, vq_cfg=vq_cfg, train_cfg=train_cfg,
                           embed_cfg=embed_cfg, embeddings=out / "emb", log=log)
        return ColdStartModel("vqrec", train, _vqrec_scorer, prefix_levels=False, kernel_baseline=False)

    def defaults(preset, init):
        return dict(VQREC_TRAIN_DEFAULTS) | (init_model_config(init) if init is not None else {})

    return ColdStartSpec("vqrec", (VQRecConfig, VQRecTrainConfig, TrainConfig), build, defaults, tokenizer=False,
                         init_config=init_model_config)


def _generator_scorer(out: Path, dev, new_names: list[str], new_texts: list[str], new_emb: np.ndarray,
                      cfg: ColdStartConfig):
    """A generator's ``Scorer`` (TIGER or LC-Rec, through the generator contract): beam search over the seen items; new items get IDs from the run's tokenizer (collision
    suffix as in training), join the trie, and are scored by log P of their first ``levels`` codes."""
    model, trie, _ = load_generator(out / "run", dev)
    tok = load_tokenizer(out / "run" / "tokens")
    base, sids = new_item_ids(out / "run", tok, new_texts, model.vocab.level_sizes, new_names, emb=new_emb)
    _, trie, model.item_tok = grown(model, tok, base, sids, trie.level_sizes, dev)
    if hasattr(model, "add_item_texts"):  # a dense head scores the new items by their text too
        model.add_item_texts(new_emb)
    if "dense" in cfg.rules and not getattr(model, "reranks", False):
        raise SidrecError(_NO_DENSE)
    levels = model.id_length - (1 if collision_suffix(out / "run") else 0)
    level_set = sorted(set(cfg.prefix_levels or (levels,)))
    if any(not 1 <= lv <= levels for lv in level_set):
        raise SidrecError(f"--prefix-levels {level_set}: each must lie in 1..{levels} (the ID's code levels)")
    # the seen items' text embeddings (rows = the run's item indices) and the new items', for "neighbours"
    # (the new items follow the seen ones in the served catalog, and the beam may decode them too)
    new_vecs = unit_rows(new_emb).to(dev)
    vecs = torch.cat([unit_rows(load_npy(out / "emb" / "item_emb.npy")).to(dev), new_vecs])

    def score(h: torch.Tensor, new: torch.Tensor):
        u = torch.zeros(len(h), dtype=torch.long, device=h.device)
        # the whole beam: its items pass their probabilities to the new ones ("neighbours"); lists use the top k
        it, sc = generate(model, u, h, trie, beam=max(cfg.beam, cfg.k), k=max(cfg.beam, cfg.k))
        ns = {}
        if "prefix" in cfg.rules:
            full_ns = prefix_scores(model, u, h, new, levels)
            # a coarser prefix: its log-probability, ties (new items sharing it) broken by the full prefix
            ns |= {("prefix", lv, None): full_ns if lv == levels else
                   prefix_scores(model, u, h, new, lv) + 1e-3 * full_ns for lv in level_set}
        if "dense" in cfg.rules:  # on the scale of the decoded items' fused scores: ID prefix + dense
            prefix = full_ns if "prefix" in cfg.rules else prefix_scores(model, u, h, new, levels)
            ns[("dense", None, None)] = model.fused_scores(u, h, new, prefix)
        if "neighbours" in cfg.rules:
            ns |= {("neighbours", None, t): neighbour_scores(it, sc, vecs, new_vecs, tau=t) for t in cfg.taus}
        if "blend" in cfg.rules:  # the history's items as anchors too, a share blend_weight of the mass
            ns |= {("blend", None, t): neighbour_scores(it, sc, vecs, new_vecs, tau=t, hist=h, history_weight=cfg.blend_weight)
                   for t in cfg.taus}
        return it, sc, ns

    return Scorer(score, model.cfg.max_history)


def _vqrec_scorer(out: Path, dev, new_names: list[str], new_texts: list[str], new_emb: np.ndarray,
                  cfg: ColdStartConfig):
    """VQ-Rec: new items get OPQ codes from the run's own quantiser (fitted on the seen items) and are scored by
    the same full ranking as the seen ones (no training, no prefix: every code is known)."""
    model, _ = load_vqrec(out / "run", dev)
    n_seen = len(model.codes) - 1
    model.set_codes(np.concatenate([model.codes.cpu().numpy(), OPQTokenizer.load(out / "run" / "opq").encode(new_emb)]))
    model.to(dev)
    model.eval()

    def score(h: torch.Tensor, new: torch.Tensor):
        s = model.score(h).float()
        seen_s = s[:, : n_seen + 1].clone()
        seen_s[:, 0] = -torch.inf
        top = seen_s.topk(cfg.k, dim=1)
        return top.indices, top.values, {("model", None, None): s[:, new]}

    return Scorer(score, model.cfg.max_history)


register_coldstart(_vqrec())
