"""Resident memory of the server's processes, read from /proc at scrape time.

With one process, prometheus-client's own `process_resident_memory_bytes` covers it. With
several workers (`python -m app`, app.serve) metrics go through prometheus-client's
multiprocess files, which carry no process metrics, and a worker only knows its own numbers.
So each scrape reads the supervising parent and every worker (the parent's children, found in
/proc) directly: the answer is current whichever worker serves the scrape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC: Final = Path("/proc")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str  # "server" (one process), "supervisor" or "worker"
    rss_bytes: int


def rss_bytes(pid: int, proc: Path = PROC) -> int | None:
    """Resident set size of `pid` (bytes), or None when it cannot be read."""
    try:
        fields = (proc / str(pid) / "statm").read_text().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int, proc: Path) -> list[int]:
    try:
        text = (proc / str(pid) / "task" / str(pid) / "children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split() if p.isdigit()]


def _is_worker(pid: int, proc: Path) -> bool:
    """A server worker (app.serve.start_worker's flag; uvicorn's own workers, started by
    multiprocessing's spawn, where sockets cannot be passed), not a helper process."""
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"\0--imgclass-worker\0" in cmdline or b"spawn_main" in cmdline


def server_memory(workers: int, proc: Path = PROC) -> list[ProcessMemory]:
    """This server's processes and their resident memory. `workers` > 1: this process is one
    of the supervisor's workers, so the parent and all its workers are reported."""
    me = os.getpid()
    if workers <= 1:
        rss = rss_bytes(me, proc)
        return [] if rss is None else [ProcessMemory(me, "server", rss)]
    parent = os.getppid()
    found = [(parent, "supervisor")]
    found += [(p, "worker") for p in _children(parent, proc) if _is_worker(p, proc)]
    if me not in {p for p, _ in found}:  # /proc without children lists: at least this one
        found.append((me, "worker"))
    out = []
    for pid, role in found:
        rss = rss_bytes(pid, proc)
        if rss is not None:
            out.append(ProcessMemory(pid, role, rss))
    return out
