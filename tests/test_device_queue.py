"""bench/device_queue.py: the job queue that runs a device session's benchmarks (order, needs, failures, time)."""

from __future__ import annotations

import os
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
anyway | !broken          | touch anyway
greedy | ~1000            | touch never2
input  | brought-later    | touch never3
"""
    st = run_queue(tmp_path, jobs, "--slots", "1", "--deadline-min", "0.1", "--margin-min", "0", "--min-minutes", "0")
    assert st == {"make": "ok", "after": "ok", "broken": "failed", "child": "blocked", "anyway": "ok",
                  "greedy": "expired", "input": "expired"}  # still waiting for its input when the time ran out
    assert (tmp_path / "anyway").exists()  # `!broken`: runs once `broken` has ended, whatever its exit code
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


def _start(tmp_path: Path, jobs: str, *args: str) -> subprocess.Popen:
    f = tmp_path / "q.jobs"
    f.write_text(jobs)
    p = subprocess.Popen([sys.executable, str(QUEUE), "run", str(f), "--dir", str(tmp_path / "q"), "--gpus", "1",
                          "--poll", "0.05", "--margin-min", "0", "--min-minutes", "0", *args], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(200):  # until the queue has written its first status
        if (tmp_path / "q" / "status.txt").exists():
            break
        time.sleep(0.05)
    return p


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(QUEUE), *args, "--dir", str(tmp_path / "q")], capture_output=True,
                          text=True, timeout=30)


def _states(tmp_path: Path) -> dict[str, str]:
    return {x.split()[0]: x.split()[1] for x in (tmp_path / "q" / "status.txt").read_text().splitlines()}


def test_jobs_added_to_a_running_queue_run_and_may_need_earlier_ones(tmp_path):
    p = _start(tmp_path, "first | | sleep 1 && touch first.txt\n", "--deadline-min", "1")
    out = _cli(tmp_path, "add", "second | @first, first.txt | touch second.txt", "bad line without bars")
    assert out.returncode != 0 and "expected" in (out.stdout + out.stderr)  # the whole call refused: nothing added
    out = _cli(tmp_path, "add", "second | @first, first.txt | touch second.txt", "dup | @nosuch | true")
    assert out.returncode != 0 and "unknown job @nosuch" in out.stderr  # checked against the running queue's jobs
    out = _cli(tmp_path, "add", "first | | true")
    assert out.returncode != 0 and "defined twice" in out.stderr
    out = _cli(tmp_path, "add", "second | @first, first.txt | touch second.txt")
    assert out.returncode == 0, out.stderr
    log = p.communicate(timeout=30)[0]
    assert "second: added" in log
    assert _states(tmp_path) == {"first": "ok", "second": "ok"} and (tmp_path / "second.txt").exists()
    assert _cli(tmp_path, "add", "late | | true").returncode != 0  # the queue has ended


def test_stop_ends_a_running_job_with_its_children_and_blocks_what_needs_it(tmp_path):
    jobs = """long  |       | sleep 60 & echo $! > child.pid; wait
after | @long | touch after.txt
later | ~0.01 | sleep 60
"""
    p = _start(tmp_path, jobs, "--slots", "1", "--deadline-min", "2")
    for _ in range(200):
        if (tmp_path / "child.pid").exists() and (tmp_path / "child.pid").read_text().strip():
            break
        time.sleep(0.05)
    child = int((tmp_path / "child.pid").read_text())
    out = _cli(tmp_path, "stop", "long", "later")
    assert out.returncode == 0, out.stderr
    p.communicate(timeout=30)
    assert _states(tmp_path) == {"long": "stopped", "after": "blocked", "later": "stopped"}
    assert not (tmp_path / "after.txt").exists()
    for _ in range(100):  # the grandchild (sleep) went with the job's process group
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the job's child process outlived stop")
