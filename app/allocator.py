"""Which C allocator the server's processes run on: jemalloc when the system has it, else glibc.

Under a long mixed load (bench/soak.py: predicts on five models, catalogs, teach jobs, bad
requests from three clients) a server on glibc's malloc kept growing: the memory in use stayed
flat while the free memory held in glibc's per-thread arenas grew, about 2.3 MB a minute, and
still about 1.3 MB a minute with a `malloc_trim(0)` once a minute (app/heap.py). The same soak
on jemalloc (Debian `libjemalloc2`, preloaded) held flat at a lower level: +0.08 MB a minute
over 12 minutes, 465 MB against 488 after warm-up (docs/operations.md, "Soak").

An allocator can only be chosen before the process starts, so `python -m app` re-executes
itself once with `LD_PRELOAD` naming the library (same pid, same arguments; its workers
inherit the environment). `IMGCLASS_ALLOCATOR`: `auto` (the default: jemalloc when found,
else glibc), `jemalloc` (refuse to start without it), `glibc` (never preload).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal

from app.errors import ConfigurationError

Allocator = Literal["auto", "jemalloc", "glibc"]

LIBRARY: Final = "libjemalloc.so.2"
# Where Debian, Ubuntu, Fedora and Alpine-like systems put it (multiarch folders first).
SEARCH_DIRS: Final = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib",
)
# jemalloc hands freed pages back only as it allocates or frees again, so an idle worker kept
# what its start-up had freed (bundle loading, warm-up): about 40 MiB per worker. A background
# thread returns pages unused for a second: the five shipped bundles settled at 93 MiB of a
# worker's RSS instead of 132 (measured 2026-12-06, docs/hardening.md "Measured: peak memory").
MALLOC_CONF: Final = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
# ... and one arena per core of the worker's share (jemalloc's default is 4 per core): pages a
# request freed in one arena were not reused by the next request's thread, which took another,
# so a worker held several requests' freed pages for their second at once. One arena on this
# 2-core host (2 workers): bench.peak_memory 629 -> 593-601 MiB at the same corpus time, and no
# throughput lost beyond run-to-run noise (bench.load, round 37, docs/hardening.md).


def malloc_conf(arenas: int) -> str:
    return f"{MALLOC_CONF},narenas:{max(1, arenas)}"


# Set on the re-executed process, so a preload that did not take cannot loop.
REEXEC_MARK: Final = "IMGCLASS_ALLOCATOR_REEXEC"


def find_jemalloc(dirs: Iterable[str] = SEARCH_DIRS) -> Path | None:
    for d in dirs:
        path = Path(d) / LIBRARY
        if path.is_file():
            return path
    return None


def loaded_allocator(maps: Path = Path("/proc/self/maps")) -> str:
    """'jemalloc' when the library is mapped into this process, else 'glibc'."""
    try:
        text = maps.read_text()
    except OSError:
        return "glibc"
    return "jemalloc" if "libjemalloc" in text else "glibc"


def preload_env(
    choice: Allocator, env: Mapping[str, str], found: Path | None, arenas: int = 1
) -> dict[str, str] | None:
    """The environment to re-execute with so that jemalloc is preloaded, or None to go on as
    is (glibc chosen, already preloaded, already re-executed, or auto without the library).
    `arenas`: a worker's share of the cores."""
    if choice == "glibc":
        return None
    if found is None:
        if choice == "jemalloc":
            raise ConfigurationError(
                f"IMGCLASS_ALLOCATOR=jemalloc but {LIBRARY} was not found in "
                f"{', '.join(SEARCH_DIRS)}; install it (Debian: apt-get install libjemalloc2) "
                "or use IMGCLASS_ALLOCATOR=auto or glibc"
            )
        return None
    preload = env.get("LD_PRELOAD", "")
    if LIBRARY in preload or env.get(REEXEC_MARK):
        return None
    new = dict(env)
    new["LD_PRELOAD"] = f"{found} {preload}".strip()
    new[REEXEC_MARK] = "1"
    new.setdefault("MALLOC_CONF", malloc_conf(arenas))  # an operator's own settings win
    return new


def reexec_with_jemalloc(choice: Allocator, arenas: int = 1) -> None:
    """Replace this process by itself with jemalloc preloaded, when `choice` asks for it and
    the library is there; returns only when nothing is to be done."""
    env = preload_env(choice, os.environ, find_jemalloc(), arenas)
    if env is None:
        return
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when started with the stream closed (`>&-`)
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
    # the interpreter's own flags (-O, -X dev, ...) kept, as the workers get them (round 40)
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
    try:
        os.execve(sys.executable, [sys.executable, *flags, "-m", "app", *sys.argv[1:]], env)
    except OSError as exc:  # e.g. E2BIG: an environment near the kernel's limit
        if choice == "jemalloc":
            raise ConfigurationError(f"cannot start again with jemalloc preloaded: {exc}") from exc
        print(
            f"imgclass: jemalloc not preloaded ({exc.strerror or exc}); glibc's malloc is used",
            file=sys.stderr,
        )


def check_loaded(choice: Allocator) -> str:
    """After start-up: the allocator in use; `jemalloc` asked for and not loaded is an error."""
    used = loaded_allocator()
    if choice == "jemalloc" and used != "jemalloc":
        raise ConfigurationError(
            "IMGCLASS_ALLOCATOR=jemalloc but the library is not loaded in this process "
            "(LD_PRELOAD ignored, e.g. a setuid interpreter)"
        )
    return used
