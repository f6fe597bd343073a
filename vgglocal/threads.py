"""How many threads the networks get when the user has not said: the cores this process may
run on, not the machine's.

torch's default (OpenMP's, or the physical core count) ignores a container's CPU quota: in a
container limited to 2 CPUs on a 64-core host it starts 64 threads on 2 CPUs' worth of time,
and the convolutions slow down several times over. The usable cores are the process's CPU
affinity (``os.sched_getaffinity``, what ``taskset`` and Slurm set) capped by the cgroup's CPU
quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1: Docker's
``--cpus``, Kubernetes' CPU limits), shared among the processes torchrun starts on the node
(``LOCAL_WORLD_SIZE``). ``OMP_NUM_THREADS``, when set, is the user's word and is left alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["usable_cores", "default_threads", "apply_default_threads"]

CGROUP = Path("/sys/fs/cgroup")


def _quota(cgroup: Path) -> float | None:
    """The cgroup's CPU quota in CPUs, or None without one."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # cgroup v2: "max 100000" or "200000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())  # cgroup v1; -1: none
        period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(cgroup: Path = CGROUP) -> int:
    """The CPUs this process may use: its affinity, capped by the cgroup's CPU quota (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _quota(cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def default_threads(env: Mapping[str, str] = os.environ, cgroup: Path = CGROUP) -> int | None:
    """Intra-op threads for this process, or None when ``OMP_NUM_THREADS`` decides."""
    if env.get("OMP_NUM_THREADS", "").strip():
        return None
    try:
        local = max(1, int(env.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(1, usable_cores(cgroup) // local)


def apply_default_threads() -> None:
    """Set ``OMP_NUM_THREADS`` (read by OpenMP, MKL and torch when they start) to
    :func:`default_threads` unless the user set it. Called before torch is imported."""
    n = default_threads()
    if n is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)
