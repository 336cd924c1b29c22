"""Worker processes of the dealing parent (app.serve.Supervisor): how one is started and
watched.

A worker is a fresh interpreter started with the parent's module path, told its end of the
socket pair and the log level on its command line (WORKER_FLAG marks it, app.procmem). Not
multiprocessing's spawn: that starts a resource tracker process beside the workers (15 MiB
resident for nothing the server uses) and re-imports the parent's __main__ in each worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from typing import Final

WORKER_FLAG: Final = "--imgclass-worker"
_SYS_PATH_ENV: Final = "IMGCLASS_WORKER_SYS_PATH"
_BOOT: Final = (
    f"import json, os, sys; sys.path[:] = json.loads(os.environ.pop('{_SYS_PATH_ENV}')); "
    "from app.serve import worker_main; worker_main()"
)


def start_worker(channel: socket.socket, log_level: str) -> subprocess.Popen[bytes]:
    """Start a worker holding `channel` (its end of the pair) and nothing else of ours."""
    fd = channel.fileno()
    env = {**os.environ, _SYS_PATH_ENV: json.dumps(sys.path)}
    # -O, -X ... as multiprocessing passes them (a private helper of CPython's subprocess)
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()
    cmd = [sys.executable, *flags, "-c", _BOOT, WORKER_FLAG, str(fd), log_level]
    return subprocess.Popen(cmd, pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)


def alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def wait(proc: subprocess.Popen[bytes], timeout: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
