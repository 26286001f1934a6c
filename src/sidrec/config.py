"""Typed configs: frozen dataclasses that round-trip through dicts, TOML/YAML files and overrides."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sidrec.errors import SidrecError

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-serialisable dict of a config dataclass (nested configs included)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise SidrecError(f"config: {name}={value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (tuple, list) and isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if origin in (tuple, list):
        args = typing.get_args(tp)
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, name) for v in value)
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "none":
            return None
        return _coerce(value, args[0], name)
    try:
        if tp is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp in (int, float, str, bool):
            return tp(value)
    except (TypeError, ValueError):
        raise SidrecError(f"config: {name}={value!r} is not a valid {tp.__name__}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build config ``cls`` from a dict; unknown keys are an error naming the key."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    renamed = getattr(cls, "RENAMED", {})  # old key -> new key: configs saved by earlier versions still load
    data = {renamed.get(k, k) if renamed.get(k) in names else k: v for k, v in data.items()}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SidrecError(f"config: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], k) for k, v in data.items()}
    return cls(**kwargs)


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise SidrecError(f"{p}: config file not found")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            return tomllib.loads(text)
        if p.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text) or {}
        return json.loads(text)
    except Exception as e:  # parser errors carry line numbers in their message
        raise SidrecError(f"{p}: cannot parse config: {str(e).splitlines()[0]}") from None


def merge(cls: type[T], *layers: dict[str, Any] | None) -> T:
    """Defaults < file < command-line: later layers override earlier ones; None values are skipped."""
    data: dict[str, Any] = {}
    for layer in layers:
        for k, v in (layer or {}).items():
            if v is not None:
                data[k] = v
    return from_dict(cls, data)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["epochs=3", "dim=32"]`` -> dict (values coerced by the config's field types later)."""
    out: dict[str, Any] = {}
    for it in items or []:
        if "=" not in it:
            raise SidrecError(f"--set {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def route(classes, flat: dict[str, Any], extra: tuple[str, ...] = (), where: str = "", noun: str = "key") -> list:
    """A flat dict of settings -> one config per class (each key goes to the classes that have it) + the dict of
    the ``extra`` keys; a key no class has is one error naming it (the CLI's options and the pipeline's sections)."""
    names = set().union(*({f.name for f in dataclasses.fields(c)} for c in classes))
    unknown = sorted(set(flat) - names - set(extra))
    if unknown:
        raise SidrecError(f"{where + ': ' if where else ''}unknown {noun}(s) {unknown}")
    out = [from_dict(c, {k: v for k, v in flat.items() if k in {f.name for f in dataclasses.fields(c)}}) for c in classes]
    return out + [{k: flat[k] for k in extra if k in flat}]
