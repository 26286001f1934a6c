"""Run a list of benchmark jobs on every card of the device, several side by side per card, until a deadline.

A device call lasts at most 10 minutes but a warm machine is held up to 30: start this with `setsid` in the
first call, and the jobs keep running between calls (later calls only look: `status`, then collect).

  setsid nohup python3 bench/device_queue.py run JOBS --dir Q --slots 4 --deadline-min 26 > Q.log 2>&1 &
  python3 bench/device_queue.py status --dir Q        # one line per job, the tail of each running log
  python3 bench/device_queue.py add --dir Q 'name | needs | command'   # more work for the running queue
  python3 bench/device_queue.py stop --dir Q NAME     # end a job and its process group (or keep it from starting)

A whole session (bench/README.md, "Device sessions"): `bench/pack_device.sh` packs the inputs into carry folders
here, `bench/stage_device.sh` moves each into the device's work tree /tmp/w, `bench/start_queue.sh` starts this
queue there, `bench/collect_device.sh` brings back rows, logs and token reports.

JOBS holds one job per line, `name | needs | command` (blank lines and `#` comments skipped):
- needs: comma-separated conditions, each a path that must exist (an input a later call brings), `@job`
  (that job finished with exit code 0), `^job` (that job has started, or can never start: lets a job of lower
  priority wait for a slot behind one whose inputs come later, since slots are not taken back), `!job` (that job
  has ended, however: ok, failed or stopped; for work that must not share the card with a job whose run may stop
  for time and be resumed, which exits 1) or `~M` (start only while at least M minutes are left: a run that cannot
  finish before the deadline would only take card time from those that can); empty for none;
- command: a bash command, run in the current directory with CUDA_VISIBLE_DEVICES set to the card with the
  fewest jobs, and MINUTES to the minutes left before the deadline less `--margin-min` (bench/reproduce.sh reads
  it as the training budget, so a run stops, resumably, before the machine goes back).
Jobs start in file order as soon as their needs hold. A job whose `@` need failed is never started (status:
`blocked`), nor one that would start with fewer minutes than `--min-minutes` or its `~M` (`expired`). The queue
ends when every job has ended or can never start, or at the deadline.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    name: str
    needs: list[str]
    command: str
    state: str = "waiting"  # waiting | running | ok | failed | blocked | expired | stopped
    gpu: int = -1
    proc: subprocess.Popen | None = field(default=None, repr=False)
    started: float = 0.0
    ended: float = 0.0


def parse(path: Path, known: set[str] | None = None) -> list[Job]:
    """The jobs of a file; ``known``: names defined before it (jobs added to a running queue may need them)."""
    return parse_lines(path.read_text().splitlines(), str(path), known)


def parse_lines(lines: list[str], path: str, known: set[str] | None = None) -> list[Job]:
    jobs, seen = [], set(known or ())
    for i, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or not parts[0] or not parts[2]:
            raise SystemExit(f"{path}:{i}: expected 'name | needs | command', got {line!r}")
        if parts[0] in seen:
            raise SystemExit(f"{path}:{i}: job {parts[0]!r} defined twice")
        seen.add(parts[0])
        jobs.append(Job(parts[0], [n.strip() for n in parts[1].split(",") if n.strip()], parts[2]))
    for j in jobs:
        for n in j.needs:
            if n[:1] in "@^!" and n[1:] not in seen:
                raise SystemExit(f"{path}: job {j.name!r} needs unknown job {n}")
            if n.startswith("~"):
                try:
                    float(n[1:])
                except ValueError:
                    raise SystemExit(f"{path}: job {j.name!r}: {n!r} is not ~MINUTES") from None
    return jobs


def gpus() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
        return max(1, sum(line.startswith("GPU ") for line in out.splitlines()))
    except (OSError, subprocess.SubprocessError):
        return 1


def write_status(jobs: list[Job], qdir: Path, t0: float) -> None:
    now = time.time()
    lines = []
    for j in jobs:
        dt = (j.ended or now) - j.started if j.started else 0.0
        lines.append(f"{j.name:40s} {j.state:8s} gpu={j.gpu:2d} {dt:7.0f}s  start+{j.started - t0 if j.started else 0:5.0f}s")
    tmp = qdir / "status.txt.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(qdir / "status.txt")


def run(args: argparse.Namespace) -> None:
    jobs = parse(Path(args.jobs))
    qdir = Path(args.dir)
    qdir.mkdir(parents=True, exist_ok=True)
    n_gpu = args.gpus or gpus()
    t0 = time.time()
    deadline = t0 + args.deadline_min * 60
    by_name = {j.name: j for j in jobs}
    print(f"{len(jobs)} jobs, {n_gpu} card(s) x {args.slots} slots, deadline in {args.deadline_min} min", flush=True)
    added_seen = 0  # lines of QDIR/added.jobs already taken (`add`)
    while True:
        now = time.time()
        added = qdir / "added.jobs"
        if added.exists():
            lines = added.read_text().splitlines(keepends=True)
            complete = [x for x in lines if x.endswith("\n")]  # a line being written is taken next tick
            for line in complete[added_seen:]:  # one at a time: a bad line is reported, the others are taken
                try:
                    new = parse_lines([line], str(added), known=set(by_name))
                except SystemExit as e:
                    print(f"+{now - t0:5.0f}s add refused: {e}", flush=True)
                    new = []
                for j in new:
                    jobs.append(j)
                    by_name[j.name] = j
                    print(f"+{now - t0:5.0f}s {j.name}: added", flush=True)
            added_seen = max(added_seen, len(complete))
        stops = qdir / "stop"
        for f in sorted(stops.iterdir()) if stops.is_dir() else []:
            j = by_name.get(f.name)
            f.unlink()
            if j is None or j.state not in ("waiting", "running"):
                print(f"+{now - t0:5.0f}s stop {f.name}: no such waiting or running job", flush=True)
                continue
            if j.state == "running":  # the job's whole process group: bash, the trainer, its workers
                try:
                    os.killpg(j.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                j.proc.wait()
            j.state, j.ended = "stopped", now
            print(f"+{now - t0:5.0f}s {j.name}: stopped", flush=True)
        for j in jobs:  # reap
            if j.state == "running" and j.proc.poll() is not None:
                j.state, j.ended = ("ok" if j.proc.returncode == 0 else "failed"), now
                print(f"+{now - t0:5.0f}s {j.name}: {j.state} (exit {j.proc.returncode}, {now - j.started:.0f}s)", flush=True)
        for j in jobs:  # a failed dependency blocks for good
            if j.state == "waiting" and any(n.startswith("@") and by_name[n[1:]].state in ("failed", "blocked", "expired",
                                                                                           "stopped")
                                            for n in j.needs):
                j.state = "blocked"
                print(f"+{now - t0:5.0f}s {j.name}: blocked", flush=True)
        minutes = (deadline - now) / 60 - args.margin_min
        for j in jobs:  # time only runs out: a job that wants more minutes than are left never starts
            if j.state == "waiting" and (minutes < args.min_minutes or any(
                    n.startswith("~") and float(n[1:]) > minutes for n in j.needs)):
                j.state = "expired"
                print(f"+{now - t0:5.0f}s {j.name}: expired ({minutes:.1f} minutes left)", flush=True)
        load = [sum(j.state == "running" and j.gpu == g for j in jobs) for g in range(n_gpu)]
        for j in jobs:  # start what is ready, in file order
            if j.state != "waiting":
                continue
            ready = all(by_name[n[1:]].state == "ok" if n.startswith("@") else
                        by_name[n[1:]].state != "waiting" if n.startswith("^") else
                        by_name[n[1:]].state not in ("waiting", "running") if n.startswith("!") else
                        n.startswith("~") or Path(n).exists() for n in j.needs)  # ~M: the expiry above holds it
            g = min(range(n_gpu), key=lambda k: load[k])
            if not ready or load[g] >= args.slots:
                continue
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(g), "MINUTES": f"{minutes:.1f}"}
            with open(qdir / f"{j.name}.log", "ab") as log:  # the child keeps its own descriptor
                log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} card {g}, MINUTES={minutes:.1f}: {j.command}\n"
                          .encode())
                log.flush()
                j.proc = subprocess.Popen(["bash", "-c", j.command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)  # its own process group: `stop` ends all of it
            j.state, j.gpu, j.started = "running", g, now
            load[g] += 1
            print(f"+{now - t0:5.0f}s {j.name}: started on card {g} (MINUTES={minutes:.1f})", flush=True)
        write_status(jobs, qdir, t0)
        running = any(j.state == "running" for j in jobs)
        if not running and (all(j.state != "waiting" for j in jobs) or now > deadline):
            break
        time.sleep(args.poll)
    print(f"queue ended after {time.time() - t0:.0f}s: " + ", ".join(
        f"{s} {sum(j.state == s for j in jobs)}" for s in ("ok", "failed", "blocked", "expired", "stopped", "waiting")),
        flush=True)
    (qdir / "done").write_text("")


def status(args: argparse.Namespace) -> None:
    qdir = Path(args.dir)
    st = qdir / "status.txt"
    text = st.read_text() if st.exists() else ""
    print(text or f"{qdir}: no status yet")
    if (qdir / "done").exists():
        print("queue: ended")
    for line in text.splitlines():
        name, state = line.split()[:2]
        if state in ("running", "failed") and args.tail:
            lines = (qdir / f"{name}.log").read_text(errors="replace").splitlines()
            # a job that logs elsewhere says so with a line "log: PATH" (bench/reproduce.sh): show that file's tail
            for other in [x[5:].strip() for x in lines if x.startswith("log: ")]:
                if Path(other).is_file():
                    lines += [f"[{other}]"] + Path(other).read_text(errors="replace").splitlines()[-args.tail:]
            print(f"--- {name} ({state})\n" + "\n".join(x[-200:] for x in lines[-args.tail:]))


def add(args: argparse.Namespace) -> None:
    """Append job lines to a running queue (taken at its next poll; names must be new, needs may name any job)."""
    qdir = Path(args.dir)
    if not (qdir / "status.txt").exists() or (qdir / "done").exists():
        raise SystemExit(f"{qdir}: no queue running there")
    names = {x.split()[0] for x in (qdir / "status.txt").read_text().splitlines() if x.strip()}
    for line in args.lines:  # the queue's checks (format, new names, known jobs) line by line, as it takes them
        names |= {j.name for j in parse_lines([line], "added job", known=names)}
    with open(qdir / "added.jobs", "a") as f:
        f.write("".join(line.strip() + "\n" for line in args.lines))
    print(f"{len(args.lines)} job(s) handed to the queue in {qdir}")


def stop(args: argparse.Namespace) -> None:
    """Ask a running queue to stop jobs by name: a running one is ended with its whole process group (never
    `pkill -f`, which matches the calling shell's own command line), a waiting one never starts."""
    qdir = Path(args.dir)
    (qdir / "stop").mkdir(parents=True, exist_ok=True)
    for name in args.names:
        (qdir / "stop" / name).write_text("")
    print(f"stop requested: {', '.join(args.names)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("jobs")
    r.add_argument("--dir", default="/tmp/queue")
    r.add_argument("--slots", type=int, default=4, help="jobs side by side per card")
    r.add_argument("--gpus", type=int, default=0, help="cards (default: nvidia-smi -L)")
    r.add_argument("--deadline-min", type=float, default=26.0)
    r.add_argument("--margin-min", type=float, default=1.5, help="left for the test split after training")
    r.add_argument("--min-minutes", type=float, default=2.0, help="start no job with less time than this")
    r.add_argument("--poll", type=float, default=5.0)
    s = sub.add_parser("status")
    s.add_argument("--dir", default="/tmp/queue")
    s.add_argument("--tail", type=int, default=2)
    ad = sub.add_parser("add", help="hand more jobs to a running queue")
    ad.add_argument("lines", nargs="+", help="'name | needs | command'")
    ad.add_argument("--dir", default="/tmp/queue")
    st = sub.add_parser("stop", help="stop jobs of a running queue by name")
    st.add_argument("names", nargs="+")
    st.add_argument("--dir", default="/tmp/queue")
    a = p.parse_args()
    try:
        {"run": run, "status": status, "add": add, "stop": stop}[a.cmd](a)
    except BrokenPipeError:  # `status | head`
        pass


if __name__ == "__main__":
    main()
