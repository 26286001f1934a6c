"""`sidrec config show`: the resolved config of a trainer or tokenizer (defaults < preset < file < --set)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sidrec.cli.common import layered, out_console, toml_lines
from sidrec.config import merge, to_dict
from sidrec.errors import SidrecError
from sidrec.tokenizers.registry import TOKENIZERS, tokenizer_for
from sidrec.train.generator import GENERATORS, TRAINERS, trainer_sections

app = typer.Typer(help="Show resolved configs.", no_args_is_help=True)


def kinds() -> list[str]:
    return [*GENERATORS, *TRAINERS, *(t for t in TOKENIZERS if t != "published")]


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
    if kind not in kinds():
        raise SidrecError(f"config show {kind!r}: choose one of {', '.join(kinds())}")
    spec = GENERATORS.get(kind)
    if preset is not None and not (spec and spec.presets):
        raise SidrecError(f"--preset: {kind} has no presets")
    if kind in GENERATORS or kind in TRAINERS:
        given = {}
        if spec is not None and "preset" in spec.config.__dataclass_fields__:
            given = {"preset": preset or spec.default_preset}
        if spec is not None and spec.presets and (preset or spec.default_preset) not in spec.presets:
            raise SidrecError(f"--preset {preset!r}: choose one of {', '.join(spec.presets)}")
        sections, defaults = trainer_sections(kind, preset)
        cfgs = layered([c for _, c in sections], config, set_, given, defaults=defaults)
        names = tuple(n for n, _ in sections)
    else:
        _, default = tokenizer_for(kind)
        cfgs = layered([type(default)], config, set_, {}, defaults=to_dict(default))
        cfgs, names = [merge(type(default), to_dict(cfgs[0]))], ("tokenize",)
    lines = [f"# sidrec config show {kind}" + (f" --preset {preset}" if preset else "")]
    for name, c in zip(names, cfgs):
        lines += [""] + toml_lines(name, c)
    out_console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
