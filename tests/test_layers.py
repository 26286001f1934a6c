"""The package's import direction: data -> embeddings -> tokenizers -> models -> decoding -> eval -> train ->
pipeline/report/recipes/results -> cli/serving. A module may import its own layer and lower ones, never a higher one."""

import ast
from pathlib import Path

import sidrec

ROOT = Path(sidrec.__file__).parent
ORDER = [("utils", "errors", "config"), ("data",), ("embeddings",), ("tokenizers",), ("models",), ("decoding",),
         ("eval",), ("train",), ("pipeline", "report", "recipes", "results"), ("cli", "serving", "__main__")]
LEVEL = {name: i for i, names in enumerate(ORDER) for name in names}


def top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "sidrec" and len(parts) > 1 else None


def test_lower_layers_never_import_higher_ones():
    bad = []
    for f in ROOT.rglob("*.py"):
        rel = f.relative_to(ROOT).parts
        own = rel[0].removesuffix(".py")
        if own not in LEVEL:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for n in names:
                t = top(n)
                if t in LEVEL and LEVEL[t] > LEVEL[own]:
                    bad.append(f"{'/'.join(rel)} imports {n}")
    assert not bad, "\n".join(bad)


def test_every_top_level_module_has_a_layer():
    tops = {p.name.removesuffix(".py") for p in ROOT.iterdir() if (p.suffix == ".py" or p.is_dir())
            and not p.name.startswith("__py")}
    assert tops - {"__init__", "configs"} <= set(LEVEL), tops - set(LEVEL)


def test_thread_policy(monkeypatch):
    import torch

    from sidrec.utils.threads import configure_threads, default_threads

    assert default_threads(cores=2, load=0.0) == 2
    assert default_threads(cores=2, load=1.2) == 1  # another heavy process: take the free core only
    assert default_threads(cores=2, load=5.0) == 1
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads(None) == torch.get_num_threads()  # the user's setting is respected
    finally:
        torch.set_num_threads(before)


def test_library_logs_through_logging_not_stdout(caplog, capsys):
    """Stages report through the "sidrec" logger by default; nothing is printed to stdout by the library."""
    import logging

    import numpy as np

    from sidrec.tokenizers.rqkmeans import RQKMeansConfig, RQKMeansTokenizer

    with caplog.at_level(logging.INFO, logger="sidrec"):
        RQKMeansTokenizer(RQKMeansConfig(n_levels=2, codebook_size=4)).fit(
            np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32))
    assert any(r.name == "sidrec" and r.getMessage().startswith("rqkmeans:") for r in caplog.records)
    assert capsys.readouterr().out == ""


OPTIONAL_EXTRAS = ("fastapi", "uvicorn", "httpx", "prometheus_client", "transformers", "peft", "faiss",
                   "k_means_constrained", "sentence_transformers", "tensorboard", "openpyxl")


def test_base_install_imports_without_optional_extras():
    """The CLI, the pipeline and the library load with none of the optional extras installed (they are imported
    where they are used, behind a "pip install 'sidrec[x]'" hint); every other import is at module top."""
    import subprocess
    import sys

    code = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {OPTIONAL_EXTRAS!r}:
            raise ImportError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Missing())
import sidrec.cli, sidrec.pipeline, sidrec.recipes, sidrec.serving.recommender, sidrec.tokenizers.registry
from sidrec.cli import main
sys.argv = ["sidrec", "--help"]
try:
    main()
except SystemExit as e:
    assert e.code in (0, None), e.code
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train" in r.stdout


def test_no_imports_inside_functions_except_optional_extras():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    root = mod.split(".")[0]
                    # FSDP and its state-dict helpers: part of torch, but 1.2 s to import, and only a sharded run
                    # (torchrun, full fine-tuning of an LLM) needs them
                    lazy_ok = root in OPTIONAL_EXTRAS or mod in {"torch.utils.tensorboard", "sidrec.serving.app",
                                                                 "torch.distributed.fsdp",
                                                                 "torch.distributed.checkpoint.state_dict"} \
                        or root in {"triton"}
                    if not lazy_ok:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} {mod}")
    assert not found, found
