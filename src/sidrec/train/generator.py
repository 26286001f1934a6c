"""Generator specs: everything the CLI, the pipeline, cold start, serving and ``recommend`` need to know about a
semantic-ID generator, in one registry entry.

Adding a generator = its model module (the contract in ``sidrec.models.generator``), its trainer (usually
``sidrec.train.tiger.train_generator`` with a ``build`` function), and one ``register_generator(GeneratorSpec(...))``.
Its options are its config dataclass's fields: ``sidrec train NAME`` offers each as ``--field-name`` (commands
without a hand-written one are made from the spec), recipes and ``--set`` take them by name, and
``sidrec config show NAME`` prints them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from sidrec.errors import SidrecError
from sidrec.models.lcrec import LCRecConfig
from sidrec.models.rpg import RPGConfig
from sidrec.models.sasrec import SASRecConfig
from sidrec.models.tiger import TIGERConfig
from sidrec.models.vqrec import VQRecConfig
from sidrec.train.config import LCREC_TRAIN_DEFAULTS, SASREC_TRAIN_DEFAULTS, TRAIN_PRESETS, TrainConfig
from sidrec.train.lcrec import load_lcrec, train_lcrec
from sidrec.train.rpg import RPG_TRAIN_DEFAULTS, load_rpg, train_rpg
from sidrec.train.tiger import load_tiger, train_tiger
from sidrec.train.vqrec import VQREC_TRAIN_DEFAULTS, VQRecTrainConfig
from sidrec.utils.artifacts import read_json


@dataclass(frozen=True)
class GeneratorSpec:
    name: str  # the run kind in RUN/config.json, the pipeline section and the CLI command (`sidrec train NAME`)
    config: type  # the model config dataclass (its fields are the generator's options)
    train: Callable[..., dict]  # (ds, tokens, out, model_cfg, train_cfg, *, beam, valid_users, decode_batch, ks, log)
    load: Callable[..., tuple]  # (run, device) -> (model, trie, config dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # training defaults (deltas on TrainConfig)
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # named training presets (`preset` key)
    default_preset: str | None = None
    distributed: bool = True  # trains under torchrun
    cold_start: bool = True  # evaluate-coldstart / --new-items (IDs for new items through the tokenizer)
    sampling: bool = True  # --sample-temperature
    serving: bool = True  # sidrec serve / recommend
    about: str = ""  # one line for --help

    def train_defaults(self, preset: str | None = None) -> dict[str, Any]:
        """The training defaults of ``preset`` (generators with presets) or the generator's defaults."""
        if self.presets:
            name = preset or self.default_preset or next(iter(self.presets))
            if name not in self.presets:
                return dict(self.presets[self.default_preset or next(iter(self.presets))])
            return dict(self.presets[name])
        return dict(self.defaults)


GENERATORS: dict[str, GeneratorSpec] = {}


def register_generator(spec: GeneratorSpec) -> GeneratorSpec:
    """Add (or replace) a generator; everything that lists generators reads this registry."""
    GENERATORS[spec.name] = spec
    return spec


def generator_spec(name: str) -> GeneratorSpec:
    if name not in GENERATORS:
        raise SidrecError(f"unknown generator {name!r}; registered: {', '.join(GENERATORS)}")
    return GENERATORS[name]


def load_generator(run: str | Path, device: str = "cpu"):
    """(model, trie, config) of any generator run, by the run kind in RUN/config.json."""
    conf = Path(run) / "config.json"
    if not conf.is_file():
        raise SidrecError(f"{run}: not a run directory (missing config.json)")
    kind = read_json(conf).get("kind")
    if kind not in GENERATORS:
        raise SidrecError(f"{run}: is a {kind} run, not a generator run (generators: {', '.join(GENERATORS)})")
    return GENERATORS[kind].load(run, device)


@dataclass(frozen=True)
class TrainerSpec:
    """A trainer that is not a semantic-ID generator (SASRec, VQ-Rec): its option sections (``TrainConfig`` last)
    and training defaults, read by ``sidrec config show`` and the torchrun guard."""

    name: str
    sections: tuple[tuple[str, type], ...]  # (section name in `config show`, config dataclass)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    distributed: bool = True


TRAINERS: dict[str, TrainerSpec] = {}


def register_trainer(spec: TrainerSpec) -> TrainerSpec:
    TRAINERS[spec.name] = spec
    return spec


def trainer_sections(kind: str, preset: str | None = None) -> tuple[tuple[tuple[str, type], ...], dict[str, Any]]:
    """((section, config class), ...) and training defaults of any trainer: a generator or a registered trainer."""
    if kind in GENERATORS:
        spec = GENERATORS[kind]
        return (("model", spec.config), ("train", TrainConfig)), spec.train_defaults(preset)
    if kind in TRAINERS:
        return TRAINERS[kind].sections, dict(TRAINERS[kind].defaults)
    raise SidrecError(f"unknown trainer {kind!r}; registered: {', '.join([*GENERATORS, *TRAINERS])}")


def distributed_trainers() -> set[str]:
    """Trainers that split batches over torchrun processes (their specs say so)."""
    return {g for g, s in GENERATORS.items() if s.distributed} | {t for t, s in TRAINERS.items() if s.distributed}


def _builtin() -> None:
    register_generator(GeneratorSpec("tiger", TIGERConfig, train_tiger, load_tiger, presets=TRAIN_PRESETS,
                                     default_preset="tiger", about="TIGER: a T5 encoder-decoder over semantic IDs"))
    register_generator(GeneratorSpec("lcrec", LCRecConfig, train_lcrec, load_lcrec, defaults=LCREC_TRAIN_DEFAULTS,
                                     about="LC-Rec: a Hugging Face causal LM over semantic-ID tokens"))
    register_generator(GeneratorSpec("rpg", RPGConfig, train_rpg, load_rpg, defaults=RPG_TRAIN_DEFAULTS,
                                     about="RPG: every ID token of the next item in parallel, the catalog ranked "
                                           "exactly"))
    register_trainer(TrainerSpec("sasrec", (("model", SASRecConfig), ("train", TrainConfig)), SASREC_TRAIN_DEFAULTS))
    register_trainer(TrainerSpec("vqrec", (("model", VQRecConfig), ("vqrec", VQRecTrainConfig), ("train", TrainConfig)),
                                 VQREC_TRAIN_DEFAULTS))


_builtin()
