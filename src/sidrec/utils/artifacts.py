"""Reading artifacts safely: a damaged file is one line naming it, what it belongs to and how to rebuild it.

Every stage writes ``manifest.json`` (size and sha256 of each file it wrote) next to its files
(``write_manifest``); readers check it (``verify``) and read each format through the helpers below, which turn
the format's own error (a truncated parquet, an npy without its header, a broken safetensors or JSON file, a
damaged checkpoint) into a ``DamagedArtifact`` (a ``SidrecError``: one line, exit code 2 in the CLI).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model

from sidrec.errors import SidrecError

MANIFEST = "manifest.json"
UNLISTED = {MANIFEST, "checkpoint.pt", "stage.json"}  # rewritten after a stage ends (resume state, pipeline bookkeeping)
HASH_LIMIT = 1 << 30  # files above 1 GiB are checked by size only


class DamagedArtifact(SidrecError):
    """A file of an artifact cannot be read or does not match what its stage wrote."""


def describe(path: Path) -> str:
    """What ``path`` belongs to and how to rebuild it, from the marker files of its folder (or the one above)."""
    for d in (path.parent, path.parent.parent):
        if (d / "stats.json").is_file() and (d / "interactions.parquet").exists():
            return f"it belongs to the prepared dataset {d}; rebuild it with `sidrec data prepare ... --out {d}`"
        if (d / "config.json").exists() or (d / "vqrec.json").exists():
            kind = _kind(d / "config.json")
            return (f"it belongs to the {kind} run {d}; train it again (`sidrec train {kind} ... --out {d}`; a "
                    f"damaged checkpoint.pt: delete it to start afresh)")
        if (d / "tokenizer.json").exists() or (d / "codes.npy").exists():
            return f"it belongs to the tokens {d}; rebuild them with `sidrec tokenize ... --out {d}`"
        if (d / "embeddings.json").exists() or (d / "item_emb.npy").exists():
            return f"it belongs to the embeddings {d}; rebuild them with `sidrec embed ... --out {d}`"
        if (d / "stage.json").exists():
            return f"it belongs to the pipeline stage {d}; delete that folder and rerun `sidrec run`"
    return "rebuild it with the command that wrote it"


def _kind(conf: Path) -> str:
    try:
        return json.loads(conf.read_text()).get("kind") or "model"
    except (OSError, ValueError):
        return "model"


def damaged(path: str | Path, kind: str, err: BaseException | str) -> DamagedArtifact:
    path = Path(path)
    first = (str(err).strip().splitlines() or [type(err).__name__])[0] if not isinstance(err, str) else err
    return DamagedArtifact(f"{path}: damaged {kind} file ({first[:160]}); {describe(path)}")


def _missing(path: Path) -> SidrecError:
    return SidrecError(f"{path}: file not found; {describe(path)}")


@contextmanager
def _reading(path: Path, kind: str, errors: tuple[type[BaseException], ...], must_exist: bool = True):
    """The one rule of every reader below: a missing file and a damaged one are each one line naming it."""
    if must_exist and not path.exists():
        raise _missing(path)
    try:
        yield
    except errors as e:
        raise damaged(path, kind, e) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    with _reading(path, "JSON", (ValueError, UnicodeDecodeError)):
        return json.loads(path.read_text())


def load_npy(path: str | Path, **kw):
    path = Path(path)
    with _reading(path, "npy", (ValueError, OSError, EOFError)):
        return np.load(path, **kw)


def read_parquet(path: str | Path, **kw):
    path = Path(path)
    with _reading(path, "parquet", (pa.ArrowException, OSError, ValueError)):
        return pd.read_parquet(path, **kw)


def load_safetensors(path: str | Path, device: str = "cpu") -> dict:
    path = Path(path)
    with _reading(path, "safetensors", (SafetensorError, OSError, ValueError, RuntimeError)):
        return load_file(str(path), device=str(device))


def load_model_weights(model, path: str | Path, device: str = "cpu", strict: bool = True):
    """``safetensors.torch.load_model`` with a damaged file as one line; returns (missing, unexpected)."""
    path = Path(path)
    with _reading(path, "safetensors", (SafetensorError, OSError)):
        return load_model(model, str(path), strict=strict, device=str(device))


def torch_load(path: str | Path, **kw):
    path = Path(path)
    with _reading(path, "checkpoint", (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError,
                                       ValueError), must_exist=False):
        return torch.load(path, **kw)


# -- manifests -------------------------------------------------------------------------------------------------
def sha256_file(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks (the one checksum helper: manifests, downloads, inputs)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str | Path, files: list[str] | None = None) -> dict:
    """Record size and sha256 of ``files`` (default: every file under ``folder`` but the manifest and
    the files rewritten after a stage ends: checkpoints, stage.json) in FOLDER/manifest.json."""
    folder = Path(folder)
    names = files if files is not None else sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in UNLISTED
        and not p.name.startswith(".") and "tensorboard" not in p.parts)
    entries = {}
    for n in names:
        p = folder / n
        size = p.stat().st_size
        entries[n] = {"bytes": size, **({"sha256": sha256_file(p)} if size <= HASH_LIMIT else {})}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))
    return entries


def verify(folder: str | Path, names: list[str] | None = None) -> None:
    """Check the files of ``folder`` (or just ``names``) against its manifest; folders written before
    manifests existed have none and pass."""
    folder = Path(folder)
    man = folder / MANIFEST
    if not man.is_file():
        return
    entries = read_json(man).get("files", {})
    for n, e in entries.items():
        if names is not None and n not in names:
            continue
        p = folder / n
        if not p.is_file():
            raise _missing(p)
        size = p.stat().st_size
        if size != e["bytes"]:
            raise damaged(p, p.suffix.lstrip(".") or "data", f"{size:,} bytes where its stage wrote {e['bytes']:,}")
        if "sha256" in e and sha256_file(p) != e["sha256"]:
            raise damaged(p, p.suffix.lstrip(".") or "data", "its checksum differs from the one its stage recorded")
