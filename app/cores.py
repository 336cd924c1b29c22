"""How many cores this server may use, how they are shared among its worker processes, and
how a worker's threads share them.

Kept free of heavy imports: `python -m app`'s supervising parent reads it before any worker
starts.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path
from typing import Final

MAX_AUTO_WORKERS: Final = 4  # each worker loads every model; past 4, add pipelines instead
CGROUP_CPU_MAX: Final = Path("/sys/fs/cgroup/cpu.max")
# cgroup v1 (older hosts; Docker mounts the container's own cgroup here): the CPU controller's
# folder, under either name distributions give it.
CGROUP_V1_CPU_DIRS: Final = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))


def _cgroup_quota_cores(path: Path = CGROUP_CPU_MAX) -> int | None:
    """Cores allowed by a cgroup v2 CPU quota (`docker run --cpus 2`), rounded up; None if none."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def _cgroup_v1_quota_cores(dirs: tuple[Path, ...] | None = None) -> int | None:
    """Cores allowed by a cgroup v1 CFS quota (`docker run --cpus 2` on a v1 host: quota
    200000 over period 100000), rounded up; None if there is none (-1) or no v1 controller.
    `dirs`: the controller folders to look in (default CGROUP_V1_CPU_DIRS)."""
    for folder in CGROUP_V1_CPU_DIRS if dirs is None else dirs:
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None
    return None


def cpu_count() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (v2, else
    v1)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cores = max(1, os.cpu_count() or 1)
    quota = _cgroup_quota_cores() or _cgroup_v1_quota_cores()
    return min(cores, quota) if quota else cores


def resolve_workers(setting: int, gpu: bool) -> int:
    """0 = auto: one worker process per core (at most 4) on CPU; one on a GPU, whose memory
    every worker would fill with its own copy of each model (docs/performance.md)."""
    if setting > 0:
        return setting
    return 1 if gpu else min(cpu_count(), MAX_AUTO_WORKERS)


def cores_per_worker(workers: int) -> int:
    """This worker's share of the cores. `workers` is the resolved count `python -m app`
    exports to its workers; 0 (an app made some other way, e.g. `uvicorn --factory` or a test
    client) means one process with every core."""
    return max(1, cpu_count() // workers) if workers > 0 else cpu_count()


def lower_thread_priority(steps: int) -> bool:
    """Lower the calling thread's scheduling priority by `steps` nice levels (at most to 19).

    Linux keeps a nice value per thread, so a worker can run its CPU-bound pipelines below its
    event loop: when every core is busy, the kernel gives a waking loop the core at once and
    probes and light requests are answered while the forward passes wait a moment. Returns
    whether the priority changed; elsewhere (where the call would address a process, not a
    thread) and on any error it does nothing."""
    if steps <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        target = min(19, current + steps)
        if target == current:
            return False
        os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError:
        return False
    return True
