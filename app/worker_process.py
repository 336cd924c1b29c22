"""Worker processes of the dealing parent (app.serve.Supervisor): how one is started and
watched, and how it follows its parent.

A worker is a fresh interpreter started with the parent's module path, told its end of the
socket pair, the log level and the parent's pid on its command line (WORKER_FLAG marks it,
app.procmem). Not multiprocessing's spawn: that starts a resource tracker process beside the
workers (15 MiB resident for nothing the server uses) and re-imports the parent's __main__ in
each worker. Its side of the server is app.dealt_server.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Final

WORKER_FLAG: Final = "--imgclass-worker"
READY: Final = b"r"  # worker -> parent: loaded, deal me connections
_SYS_PATH_ENV: Final = "IMGCLASS_WORKER_SYS_PATH"
# SIGINT and SIGHUP ignored before anything else: a terminal's Ctrl-C, or its closing, reaches
# the whole process group, and the parent answers it (SIGTERM to each worker, which finishes
# what it holds); a Ctrl-C that arrived while a worker still imported printed a
# KeyboardInterrupt traceback (round 40).
BOOT: Final = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGHUP, signal.SIG_IGN); "
    f"import json, os, sys; sys.path[:] = json.loads(os.environ.pop('{_SYS_PATH_ENV}')); "
    "from app.dealt_server import worker_main; worker_main()"
)
_PR_SET_PDEATHSIG: Final = 1


def start_worker(channel: socket.socket, log_level: str) -> subprocess.Popen[bytes]:
    """Start a worker holding `channel` (its end of the pair) and nothing else of ours. Raises
    OSError when the system cannot (no file descriptors or processes left, an environment
    over the kernel's limit)."""
    fd = channel.fileno()
    env = {**os.environ, _SYS_PATH_ENV: json.dumps(sys.path)}
    # -O, -X ... as multiprocessing passes them (a private helper of CPython's subprocess)
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
    cmd = [sys.executable, *flags, "-c", BOOT, WORKER_FLAG, str(fd), log_level, str(os.getpid())]
    return subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)


def follow_parent(parent: int) -> None:  # pragma: no cover - child
    """In a worker: be sent SIGTERM when the parent dies (Linux), and exit now if it already
    has. Without it a worker whose parent was killed while it loaded its models went on loading,
    then failed with tracebacks; a worker that serves sees the parent go by its channel too."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # gone before the signal was asked for
        sys.exit(0)


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
