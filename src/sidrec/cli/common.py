"""Helpers shared by the commands: config layering, tables, the one place that maps options to configs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sidrec.config import load_file, parse_overrides, route, to_dict

console = Console(stderr=True)
out_console = Console()


def layered(classes: list[type], config_file: Path | None, sets: list[str] | None,
            cli: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[Any]:
    """Defaults < config file < --set < explicit options; keys are routed to the dataclass that has them."""
    flat: dict[str, Any] = dict(defaults or {})
    if config_file:
        data = load_file(config_file)
        for k, v in data.items():
            if isinstance(v, dict):  # sections ([model], [train]) are flattened
                flat.update(v)
            else:
                flat[k] = v
    flat.update(parse_overrides(sets))
    flat.update({k: v for k, v in cli.items() if v is not None})
    return route(classes, flat, noun="setting")[:-1]


def print_table(rows: list[list[str]], title: str = "") -> None:
    t = Table(title=title or None)
    for h in rows[0]:
        t.add_column(h)
    for r in rows[1:]:
        t.add_row(*r)
    out_console.print(t)


def toml_lines(section: str, cfg: Any) -> list[str]:
    """A resolved config as a TOML section (None values as comments): `--config FILE` reads it back."""
    lines = [f"[{section}]"]
    for k, v in to_dict(cfg).items():
        lines.append(f"# {k} = none" if v is None else f"{k} = {json.dumps(v)}")
    return lines


def announce(**cfgs: Any) -> None:
    """Print the resolved configs a run will use (the run records them in RUN/config.json too)."""
    parts = [f"{name}: " + ", ".join(f"{k}={v}" for k, v in to_dict(c).items()) for name, c in cfgs.items()]
    out_console.print("config " + " | ".join(parts), highlight=False, markup=False, soft_wrap=True)  # stdout:
    # stderr stays the log and, for a user mistake, its one error line
