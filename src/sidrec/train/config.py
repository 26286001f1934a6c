"""The trainers' typed config and each trainer's defaults: the one place they live (no torch import, so the
CLI can show them in --help).

``TrainConfig``'s field defaults apply to every trainer; a trainer's defaults (``SASREC_TRAIN_DEFAULTS``,
``VQREC_TRAIN_DEFAULTS``, ``LCREC_TRAIN_DEFAULTS``) and TIGER's presets (``TRAIN_PRESETS``) are typed, read-only
deltas on top of them (:func:`delta` checks every key and value against ``TrainConfig``). Precedence
everywhere: TrainConfig < trainer defaults / preset < config file < --set < explicit options."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # > 0: warm-up over this share of all optimizer steps (HF Trainer's rule), not warmup_steps
    grad_clip: float = 1.0
    accumulate: int = 1  # gradient accumulation: one optimizer step per this many batches
    patience: int = 10  # validations without improvement before stopping
    eval_every: int = 1  # epochs between validations
    select_metric: str = "ndcg@10"  # validation metric for early stopping / model selection
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast, CUDA only
    max_minutes: float = 0.0  # wall-clock budget for training (0 = none): no epoch starts that would, at the mean
    # epoch time so far (validation included), end past it; a resumed run gets the budget afresh
    resume: bool = True  # continue from RUN/checkpoint.pt when present
    tensorboard: bool = False  # also write the curves (loss, lr, validation) to RUN/tensorboard (pip install tensorboard)
    compile: bool | None = None  # torch.compile the forward; None = on CUDA where the trainer allows it
    compile_mode: str = "reduce-overhead"  # torch.compile mode: reduce-overhead (CUDA graphs: 2.1x the default
    # mode's samples/s for TIGER at batch 1024 on an H100, experiments/bench/compile_modes.py) | default | max-autotune
    compile_dynamic: bool = False  # False: one graph per batch shape; True: PyTorch's automatic dynamic shapes (a second
    # width compiles once more with the width symbolic, then no more graphs)
    compile_cache: bool = True  # keep the compiled step in $SIDREC_CACHE/compile (survives /tmp, copies to new machines)
    lr_scale: Literal["none", "sqrt", "linear"] = "none"  # learning_rate is the rate at base_batch_size
    base_batch_size: int = 256
    length_buckets: int = 4  # variable-length inputs (TIGER): batch similar lengths, this many widths; 1 = off


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` fits a field's type (int, float, str, bool, a Literal, an optional of those)."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def delta(**changes: Any) -> Mapping[str, Any]:
    """A typed, read-only delta on ``TrainConfig``'s defaults (a trainer's defaults or a preset): every key is a
    field and every value fits its type, checked when the module loads, so a misspelt or mistyped default fails
    at once instead of silently doing nothing."""
    hints = typing.get_type_hints(TrainConfig)
    names = {f.name for f in fields(TrainConfig)}
    for key, value in changes.items():
        if key not in names:
            raise TypeError(f"training default {key!r} is not a TrainConfig field")
        if not _accepts(hints[key], value):
            raise TypeError(f"training default {key}={value!r} does not fit TrainConfig.{key}: {hints[key]}")
    return types.MappingProxyType(dict(changes))


TRAIN_PRESETS: Mapping[str, Mapping[str, Any]] = types.MappingProxyType({  # TIGER's training presets
    "tiger": delta(epochs=200, batch_size=256, learning_rate=1e-3, schedule="cosine", warmup_steps=1000,
                  weight_decay=0.0, patience=10, eval_every=2, lr_scale="sqrt"),
    "small": delta(epochs=30, batch_size=256, learning_rate=3e-3, schedule="cosine", warmup_steps=100,
                  weight_decay=0.0, patience=5, eval_every=2, lr_scale="sqrt"),
    "strong": delta(epochs=200, batch_size=256, learning_rate=3e-4, schedule="cosine", warmup_steps=10_000,
                   weight_decay=0.035, patience=10, eval_every=2, lr_scale="sqrt"),
    # LETTER-TIGER's released recipe (LETTER-TIGER/run_train.sh + utils.py): 2 GPUs x 256 x 2 accumulation
    # = 1024 per step, lr 5e-4, weight decay 0.01, warm-up 1% of the steps, cosine, 200 epochs,
    # early stopping with patience 20 on the validation loss
    "letter": delta(epochs=200, batch_size=1024, learning_rate=5e-4, schedule="cosine", warmup_ratio=0.01,
                   weight_decay=0.01, patience=20, eval_every=1, select_metric="loss", lr_scale="none"),
})

SASREC_TRAIN_DEFAULTS = delta(epochs=200, batch_size=256, learning_rate=1e-3, patience=10)
VQREC_TRAIN_DEFAULTS = delta(epochs=100, batch_size=256, learning_rate=1e-3, patience=10)
LCREC_TRAIN_DEFAULTS = delta(epochs=200, batch_size=256, learning_rate=1e-3, schedule="cosine",
                             warmup_ratio=0.01, weight_decay=0.01, patience=20, eval_every=1,
                             select_metric="loss", lr_scale="none")


def default(key: str, defaults: Mapping[str, Any] | None = None) -> Any:
    """A training option's default: the trainer's / preset's value, else TrainConfig's."""
    if defaults and key in defaults:
        return defaults[key]
    return TrainConfig.__dataclass_fields__[key].default
