"""sidrec's cache folder, ``$SIDREC_CACHE`` (default ``~/.cache/sidrec``): downloaded datasets, converted model
weights and the compile caches (``compile/``), so a step compiled once is not compiled again on this machine,
nor on another one the folder is copied to.

torch.compile keeps its work (Inductor's generated code, Triton's kernels, autotuning choices) in a temporary
folder by default, so every fresh machine, container or cleaned ``/tmp`` compiles the step again (a TIGER step
with four batch widths: minutes on an H200). :func:`persistent_compile_caches` points those caches into
``$SIDREC_CACHE/compile``; :class:`CompileArtifacts` also keeps PyTorch's portable cache artifacts
(``torch.compiler.save_cache_artifacts``) in one file per compiled step, keyed by everything that makes a
compiled graph differ (torch, Triton and CUDA versions, the GPU, the model's class and config, the batch shapes,
the compile mode): copy ``$SIDREC_CACHE/compile/artifacts`` to a new machine with the same versions and GPU and
its first epoch starts warm. A key that does not match is never loaded."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

ARTIFACTS = "artifacts"


def cache_dir() -> Path:
    return Path(os.environ.get("SIDREC_CACHE", Path.home() / ".cache" / "sidrec"))


def compile_dir() -> Path:
    return cache_dir() / "compile"


def persistent_compile_caches() -> Path:
    """Inductor's and Triton's on-disk caches under ``$SIDREC_CACHE/compile`` unless the user set their own
    (``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``); call before the first compilation."""
    root = compile_dir()
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))
    return root


def _versions() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = list(torch.cuda.get_device_capability())
    return info


def artifact_key(model: Any, **shapes: Any) -> str:
    """What a compiled step depends on, hashed: versions, GPU, the model's class and config (or its parameter
    shapes), and the caller's shapes and modes."""
    cfg = getattr(model, "cfg", None)
    desc = {"versions": _versions(), "model": f"{type(model).__module__}.{type(model).__qualname__}",
            "config": repr(cfg) if cfg is not None else
            [(n, list(p.shape), str(p.dtype)) for n, p in model.named_parameters()],
            "shapes": shapes}
    return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


class CompileArtifacts:
    """One compiled step's portable cache file, ``$SIDREC_CACHE/compile/artifacts/KEY.bin``: loaded before the
    first compiled call, saved once the step's graphs are built (the trainer saves after its first epoch)."""

    def __init__(self, key: str, log: Callable[[str], None] = lambda s: None):
        self.key, self.log = key, log
        self.path = compile_dir() / ARTIFACTS / f"{key}.bin"
        self.loaded = False

    def load(self) -> bool:
        if not self.path.exists():
            return False
        quiet = logging.getLogger("torch.compiler._cache")  # it logs a traceback for a damaged file
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            info = torch.compiler.load_cache_artifacts(self.path.read_bytes())
            why = None if info is not None else "damaged or written by another PyTorch"
        except Exception as e:  # a damaged or foreign file costs a cold compile, never the run
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
        finally:
            quiet.setLevel(level)
        if why:
            self.log(f"compile cache {self.path} not used ({why}); compiling afresh")
            return False
        self.loaded = True
        self.log(f"compile cache: {self.path} ({_size(self.path.stat().st_size)})")
        return True

    def save(self) -> Path | None:
        try:
            saved = torch.compiler.save_cache_artifacts()
        except Exception as e:
            self.log(f"compile cache not saved ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
            return None
        if not saved:
            return None
        data = saved[0]
        if self.loaded and len(data) <= self.path.stat().st_size:  # nothing compiled beyond what the file held
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(self.path)  # atomic: a run beside this one reads a whole file or none
        self.log(f"compile cache saved: {self.path} ({_size(len(data))})")
        return self.path
