"""bench/run_state.sh: unfinished runs travel from one lease to the next in parts, byte for byte, checked."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_state.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("split") is None, reason="needs bash")


def sh(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def make_run(runs: Path, name: str, size: int, seed: int, finished: bool = False) -> None:
    r = runs / name
    r.mkdir(parents=True)
    (r / "checkpoint.pt").write_bytes(np.random.default_rng(seed).bytes(size))
    (r / "log.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    (runs / f"{name}.log").write_text(f"log of {name}\n")
    if finished:
        (r / ".row").write_text("{}\n")


def test_save_keep_restore_round_trip(tmp_path):
    runs, out, here, there = tmp_path / "runs", tmp_path / "out", tmp_path / "here", tmp_path / "next"
    make_run(runs, "beauty-a-s0", 2_500_000, 0)
    make_run(runs, "beauty-a-s1", 1_200_000, 1)
    make_run(runs, "done-s0", 10, 2, finished=True)  # has its row: not carried
    here.mkdir()
    r = sh(tmp_path, "save", RUNS=str(runs), OUT=str(out), PART_MB="1")
    assert r.returncode == 0, r.stderr
    parts = sorted(p.name for p in out.glob("state.tar.part-*"))
    assert len(parts) == 4 and (out / "state.sha256").exists()  # 3.7 MB + tar headers in 1 MiB parts
    r = sh(here, "keep", str(out), ".gpu/state/pair")
    assert r.returncode == 0, r.stderr
    assert "beauty-a-s0: 2 epoch(s) logged" in r.stdout and "done-s0" not in r.stdout
    # the next lease: the parts arrive in /tmp/state (here: STATE), the runs come back byte for byte
    r = sh(here, "restore", RUNS=str(there), STATE=str(here / ".gpu" / "state" / "pair"))
    assert r.returncode == 0, r.stderr
    for name in ("beauty-a-s0", "beauty-a-s1"):
        assert (there / name / "checkpoint.pt").read_bytes() == (runs / name / "checkpoint.pt").read_bytes()
        assert (there / f"{name}.log").read_text() == f"log of {name}\n"
    assert not (there / "done-s0").exists()


def test_a_corrupt_or_missing_part_is_one_line_exit_2(tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "out"
    make_run(runs, "x-s0", 2_200_000, 0)
    assert sh(tmp_path, "save", RUNS=str(runs), OUT=str(out), PART_MB="1").returncode == 0
    part = out / "state.tar.part-ab"
    data = bytearray(part.read_bytes())
    data[100] ^= 1
    part.write_bytes(bytes(data))
    r = sh(tmp_path, "restore", RUNS=str(tmp_path / "next"), STATE=str(out))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr and not (tmp_path / "next" / "x-s0").exists()
    part.unlink()
    r = sh(tmp_path, "restore", RUNS=str(tmp_path / "next"), STATE=str(out))
    assert r.returncode == 2 and "checksum mismatch" in r.stderr


def test_save_refuses_what_cannot_come_back(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    r = sh(tmp_path, "save", RUNS=str(runs), OUT=str(tmp_path / "out"))
    assert r.returncode == 2 and "no unfinished run" in r.stderr
    make_run(runs, "big-s0", 9 * 1024 * 1024, 0)
    r = sh(tmp_path, "save", RUNS=str(runs), OUT=str(tmp_path / "out"), PART_MB="1")
    assert r.returncode == 2 and "needs 10 parts" in r.stderr


def test_a_named_folder_with_its_run_one_level_down(tmp_path):
    """evaluate-coldstart keeps its generator run in OUT/run: the folder is named and travels whole."""
    runs, out = tmp_path / "cold", tmp_path / "out"
    make_run(runs / "yelp-s0", "run", 1000, 0)
    (runs / "yelp-s0" / "coldstart.json").write_text("{}")
    (runs / "yelp-s0" / "emb").mkdir()
    (runs / "yelp-s0" / "emb" / "item_emb.npy").write_bytes(b"x" * 1000)  # rewritten by the rerun: left behind
    r = sh(tmp_path, "save", "yelp-s0", RUNS=str(runs), OUT=str(out), EXCLUDE="emb data")
    assert r.returncode == 0, r.stderr
    r = sh(tmp_path, "restore", RUNS=str(tmp_path / "back"), STATE=str(out))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back" / "yelp-s0" / "run" / "checkpoint.pt").read_bytes() == \
        (runs / "yelp-s0" / "run" / "checkpoint.pt").read_bytes()
    back = tmp_path / "back" / "yelp-s0"
    assert (back / "coldstart.json").exists() and not (back / "emb").exists()
    assert sh(tmp_path, "save", "nope", RUNS=str(runs), OUT=str(out)).returncode == 2
