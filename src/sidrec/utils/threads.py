"""CPU thread policy. Two torch processes that each take every core thrash each other's OpenMP threads (a
TIGER epoch measured 85 s instead of 13 s beside a second run on 2 cores). Rule: an explicit ``--threads N``
wins, then ``OMP_NUM_THREADS``; otherwise the cores left over by the work already on the machine (the
processes running right now; elsewhere the 1-minute load average), at least one."""

from __future__ import annotations

import os

import torch


def default_threads(cores: int | None = None, load: float | None = None) -> int:
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = busy_cores()
    return max(1, min(cores, cores - int(load + 0.5)))


def busy_cores() -> float:
    """Other processes running right now (state R in /proc/PID/stat, this process excluded; Linux), else the
    1-minute load average."""
    if os.path.isdir("/proc"):
        me, n = os.getpid(), 0
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == me:
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):
                continue
        return float(n)
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return 0.0


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count by the rule above; returns it."""
    if threads is None and os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()  # the user's setting; torch already follows it
    n = threads if threads else default_threads()
    torch.set_num_threads(n)
    return n
