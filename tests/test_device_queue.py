"""bench/device_queue.py: the job queue that runs a device session's benchmarks (order, needs, failures, time)."""

from __future__ import annotations

import subprocess
import time
import sys
from pathlib import Path

import pytest

QUEUE = Path(__file__).resolve().parents[1] / "bench" / "device_queue.py"


def run_queue(tmp_path: Path, jobs: str, *args: str) -> dict[str, str]:
    f = tmp_path / "q.jobs"
    f.write_text(jobs)
    out = subprocess.run([sys.executable, str(QUEUE), "run", str(f), "--dir", str(tmp_path / "q"), "--gpus", "2",
                          "--poll", "0.05", *args], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    status = (tmp_path / "q" / "status.txt").read_text().splitlines()
    return {line.split()[0]: line.split()[1] for line in status}


def test_needs_failures_and_time(tmp_path):
    jobs = """# a comment
make   |                  | sleep 0.2 && touch made && echo "$CUDA_VISIBLE_DEVICES $MINUTES" > env.txt
after  | @make, made      | test -f made && echo ok > after.txt
broken |                  | exit 3
child  | @broken          | touch never
greedy | ~1000            | touch never2
input  | brought-later    | touch never3
"""
    st = run_queue(tmp_path, jobs, "--slots", "1", "--deadline-min", "0.1", "--margin-min", "0", "--min-minutes", "0")
    assert st == {"make": "ok", "after": "ok", "broken": "failed", "child": "blocked", "greedy": "expired",
                  "input": "expired"}  # still waiting for its input when the time ran out
    assert (tmp_path / "after.txt").read_text() == "ok\n"
    card, minutes = (tmp_path / "env.txt").read_text().split()
    assert card in ("0", "1") and 0 < float(minutes) <= 0.1
    assert not any((tmp_path / n).exists() for n in ("never", "never2", "never3"))


def test_slots_spread_jobs_over_cards(tmp_path):
    jobs = "".join(f"j{i} | | echo $CUDA_VISIBLE_DEVICES > card{i}.txt && sleep 0.5\n" for i in range(4))
    st = run_queue(tmp_path, jobs, "--slots", "2", "--deadline-min", "1", "--margin-min", "0", "--min-minutes", "0")
    assert set(st.values()) == {"ok"}
    cards = sorted((tmp_path / f"card{i}.txt").read_text().strip() for i in range(4))
    assert cards == ["0", "0", "1", "1"]  # 4 jobs, 2 cards x 2 slots: all at once, two per card


def test_a_later_job_waits_behind_one_that_has_not_started(tmp_path):
    """`late` is ready at once and a slot is free, but it waits (^first) until `first`, whose input appears only
    when `maker` ends, has started; without the need it would start at once."""
    jobs = """maker | | sleep 0.5 && touch input
first | input | sleep 0.2
late  | ^first | python3 -c 'import time; print(time.time())' > late.txt
"""
    st = run_queue(tmp_path, jobs, "--slots", "2", "--gpus", "1", "--deadline-min", "1", "--margin-min", "0",
                   "--min-minutes", "0")
    assert set(st.values()) == {"ok"}
    assert float((tmp_path / "late.txt").read_text()) >= (tmp_path / "input").stat().st_mtime


@pytest.mark.parametrize("line, message", [("no separators", "expected 'name | needs | command'"),
                                           ("a | @ghost | true", "needs unknown job @ghost"),
                                           ("a | ^ghost | true", "needs unknown job ^ghost"),
                                           ("a | ~soon | true", "is not ~MINUTES")])
def test_bad_job_file_is_one_line(tmp_path, line, message):
    f = tmp_path / "bad.jobs"
    f.write_text(line + "\n")
    out = subprocess.run([sys.executable, str(QUEUE), "run", str(f), "--dir", str(tmp_path / "q")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_status_shows_the_log_a_job_points_to(tmp_path):
    f = tmp_path / "q.jobs"
    f.write_text(f"train | | echo 'log: {tmp_path}/train.log' && echo 'epoch 7: loss 1.23' > {tmp_path}/train.log "
                 f"&& touch {tmp_path}/ready && sleep 3\n")
    q = subprocess.Popen([sys.executable, str(QUEUE), "run", str(f), "--dir", str(tmp_path / "q"), "--gpus", "1",
                          "--poll", "0.05", "--deadline-min", "1", "--margin-min", "0", "--min-minutes", "0"],
                         cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if (tmp_path / "ready").exists():
                break
            time.sleep(0.05)
        out = subprocess.run([sys.executable, str(QUEUE), "status", "--dir", str(tmp_path / "q")],
                             capture_output=True, text=True, timeout=60).stdout
        assert "train" in out and "running" in out and "epoch 7: loss 1.23" in out
    finally:
        q.wait(timeout=30)
