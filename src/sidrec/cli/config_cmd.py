"""`sidrec config show`: the resolved config of a trainer or tokenizer (defaults < preset < file < --set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import layered, out_console, toml_lines
from sidrec.errors import SidrecError

app = typer.Typer(help="Show resolved configs.", no_args_is_help=True)
KINDS = ("tiger", "lcrec", "sasrec", "vqrec", "rqvae", "letter", "rqkmeans", "opq")


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
    from sidrec.train.config import LCREC_TRAIN_DEFAULTS, SASREC_TRAIN_DEFAULTS, TRAIN_PRESETS, TrainConfig

    if kind not in KINDS:
        raise SidrecError(f"config show {kind!r}: choose one of {', '.join(KINDS)}")
    if preset is not None and kind != "tiger":
        raise SidrecError("--preset is TIGER's (tiger | letter | strong | small)")
    if kind == "tiger":
        from sidrec.models.tiger import TIGERConfig

        p = preset or "tiger"
        if p not in TRAIN_PRESETS:
            raise SidrecError(f"--preset {p!r}: choose one of {', '.join(TRAIN_PRESETS)}")
        cfgs = layered([TIGERConfig, TrainConfig], config, set_, {"preset": p}, defaults=TRAIN_PRESETS[p])
        names = ("model", "train")
    elif kind in ("lcrec", "sasrec"):
        if kind == "lcrec":
            from sidrec.models.lcrec import LCRecConfig as M
        else:
            from sidrec.models.sasrec import SASRecConfig as M
        defaults = LCREC_TRAIN_DEFAULTS if kind == "lcrec" else SASREC_TRAIN_DEFAULTS
        cfgs, names = layered([M, TrainConfig], config, set_, {}, defaults=defaults), ("model", "train")
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
