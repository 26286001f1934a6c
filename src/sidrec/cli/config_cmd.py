"""`sidrec config show`: the resolved config of a trainer or tokenizer (defaults < preset < file < --set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import layered, out_console, toml_lines
from sidrec.errors import SidrecError

app = typer.Typer(help="Show resolved configs.", no_args_is_help=True)


def kinds() -> list[str]:
    from sidrec.tokenizers.registry import TOKENIZERS
    from sidrec.train.generator import GENERATORS

    return [*GENERATORS, "sasrec", "vqrec", *(t for t in TOKENIZERS if t != "published")]


@app.command()
def show(kind: Annotated[str, typer.Argument(help="tiger | lcrec | sasrec | vqrec (trainers) or rqvae | letter | "
                                                   "rqkmeans | opq (tokenizers)")],
         preset: Annotated[Optional[str], typer.Option(help="tiger: tiger | letter | strong | small (default tiger)")]
         = None,
         config: Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML/YAML/JSON config file")] = None,
         set_: Annotated[Optional[list[str]], typer.Option("--set", help="override KEY=VALUE (repeatable)")] = None):
    """Print the config a command would use, as TOML (`--config` reads it back).

    Examples:
      sidrec config show tiger --preset letter
      sidrec config show letter --set cf_weight=0.02
    """
    from sidrec.train.config import SASREC_TRAIN_DEFAULTS, TrainConfig
    from sidrec.train.generator import GENERATORS

    if kind not in kinds():
        raise SidrecError(f"config show {kind!r}: choose one of {', '.join(kinds())}")
    spec = GENERATORS.get(kind)
    if preset is not None and not (spec and spec.presets):
        raise SidrecError(f"--preset: {kind} has no presets")
    if spec is not None:
        given = {"preset": preset or spec.default_preset} if "preset" in spec.config.__dataclass_fields__ else {}
        if spec.presets and (preset or spec.default_preset) not in spec.presets:
            raise SidrecError(f"--preset {preset!r}: choose one of {', '.join(spec.presets)}")
        cfgs = layered([spec.config, TrainConfig], config, set_, given, defaults=spec.train_defaults(preset))
        names = ("model", "train")
    elif kind == "sasrec":
        from sidrec.models.sasrec import SASRecConfig

        cfgs, names = layered([SASRecConfig, TrainConfig], config, set_, {}, defaults=SASREC_TRAIN_DEFAULTS), ("model", "train")
    elif kind == "vqrec":
        from sidrec.models.vqrec import VQRecConfig
        from sidrec.train.vqrec import VQREC_TRAIN_DEFAULTS, VQRecTrainConfig

        cfgs = layered([VQRecConfig, VQRecTrainConfig, TrainConfig], config, set_, {}, defaults=VQREC_TRAIN_DEFAULTS)
        names = ("model", "vqrec", "train")
    else:
        from sidrec.config import merge, to_dict
        from sidrec.tokenizers.registry import tokenizer_for

        _, default = tokenizer_for(kind)
        cfgs = layered([type(default)], config, set_, {}, defaults=to_dict(default))
        cfgs, names = [merge(type(default), to_dict(cfgs[0]))], ("tokenize",)
    lines = [f"# sidrec config show {kind}" + (f" --preset {preset}" if preset else "")]
    for name, c in zip(names, cfgs):
        lines += [""] + toml_lines(name, c)
    out_console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
