"""Fault injection: every artifact kind of a real run, truncated or corrupted, read by every command that reads it:
one line on stderr naming the damaged file, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def artifacts(tiger_run, syn_dir, tmp_path):
    """Private copies of a prepared dataset, its embeddings, tokens and a trained TIGER run (with a checkpoint)."""
    src = tiger_run["tmp"]
    d = tmp_path / "a"
    shutil.copytree(syn_dir, d / "ds")
    for name in ("emb", "tok", "run"):
        shutil.copytree(src / name, d / name)
    assert (d / "run" / "manifest.json").is_file() and (d / "tok" / "manifest.json").is_file()
    assert (d / "ds" / "manifest.json").is_file() and (d / "emb" / "manifest.json").is_file()
    return d


def truncate(p: Path, keep: int | None = None) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: keep if keep is not None else len(data) // 2])


def flip(p: Path) -> None:
    """Same size, a few bytes changed in the middle (a silent corruption the format may not notice)."""
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 8] = bytes((b ^ 0xFF) for b in data[mid: mid + 8])
    p.write_bytes(bytes(data))


def broken_json(p: Path) -> None:
    p.write_text('{"broken')


def _one_line(cli, args, file: str):
    code, out, err = cli(*args)
    lines = [x for x in err.strip().splitlines() if x.startswith("error:")]  # progress lines may come before it
    assert code == 2, (args, err[-1500:])
    assert "Traceback" not in err and len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err[-1500:]
    assert file in lines[0] and ("damaged" in lines[0] or "not found" in lines[0]), lines[0]
    return lines[0]


CASES = [
    # (artifact file, damage, command (A = the artifacts folder), what the line must say)
    ("ds/interactions.parquet", lambda p: truncate(p, 500), ["data", "stats", "A/ds"], "prepared dataset"),
    ("ds/items.parquet", flip, ["data", "stats", "A/ds"], "checksum"),
    ("ds/stats.json", broken_json, ["data", "stats", "A/ds"], "prepared dataset"),
    ("ds/users.parquet", truncate, ["evaluate", "--data", "A/ds", "--predictions", "A/p.jsonl"], "users.parquet"),
    ("tok/codes.npy", lambda p: truncate(p, 100), ["train", "tiger", "A/ds", "--tokens", "A/tok", "--out", "A/new",
                                                    "--preset", "small", "--epochs", "1"], "tokens"),
    ("tok/tokenizer.json", broken_json, ["train", "tiger", "A/ds", "--tokens", "A/tok", "--out", "A/new",
                                         "--preset", "small", "--epochs", "1"], "tokens"),
    ("emb/item_emb.npy", flip, ["tokenize", "A/ds", "--method", "rqkmeans", "--embeddings", "A/emb", "--out",
                                "A/new", "--codebook-size", "8", "--levels", "2"], "embeddings"),
    ("emb/item_emb.npy", lambda p: truncate(p, 60), ["tokenize", "A/ds", "--method", "rqkmeans", "--embeddings",
                                                     "A/emb", "--out", "A/new"], "embeddings"),
    ("run/model.safetensors", lambda p: truncate(p, 1000), ["recommend", "A/run", "--history", "i1"], "tiger run"),
    ("run/model.safetensors", flip, ["recommend", "A/run", "--history", "i1"], "checksum"),
    ("run/config.json", broken_json, ["recommend", "A/run", "--history", "i1"], "run"),
    ("run/tokens/codes.npy", lambda p: truncate(p, 100), ["recommend", "A/run", "--history", "i1"], "tokens"),
    ("run/items.parquet", lambda p: truncate(p, 300), ["recommend", "A/run", "--history", "i1"], "run"),
]


@pytest.mark.parametrize("file,damage,args,says", CASES, ids=[f"{c[0]}-{c[2][0]}-{i}" for i, c in enumerate(CASES)])
def test_damaged_artifact_is_one_line(cli, artifacts, file, damage, args, says):
    (artifacts / "p.jsonl").write_text('{"user": "u1", "items": ["i1"]}\n')
    p = artifacts / file
    assert p.is_file(), file
    damage(p)
    line = _one_line(cli, [a.replace("A/", f"{artifacts}/") for a in args], Path(file).name)
    assert says in line, line
    assert not (artifacts / "new").exists() and not list(artifacts.glob(".new.*"))  # nothing half-written


def test_damaged_checkpoint_on_resume_is_one_line(cli, artifacts):
    """A run stopped mid-way resumes from checkpoint.pt; a damaged one says so and how to start afresh."""
    import torch

    run = artifacts / "run"
    ck = run / "checkpoint.pt"
    if not ck.is_file():  # the run finished: put a checkpoint of it in place, as an interrupted run has
        torch.save({"epoch": 1}, ck)
    truncate(ck, 200)
    line = _one_line(cli, ["train", "tiger", str(artifacts / "ds"), "--tokens", str(artifacts / "tok"), "--out", str(run),
                           "--preset", "custom", "--set", "n_layers=1", "--set", "d_model=32", "--set", "n_heads=2",
                           "--set", "d_kv=16", "--set", "d_ff=64", "--set", "dropout=0.0", "--epochs", "5",
                           "--batch-size", "128", "--lr", "3e-3", "--select", "loss", "--seed", "0"],
                     "checkpoint.pt")
    assert "checkpoint" in line and "delete it" in line
