"""Run the server as N worker processes on one port, each with its own listening socket.

Why not uvicorn's `workers=N`: its workers share one listening socket, and with keep-alive
clients the first worker to wake accepts every connection a client opens at once, so one
process (one GIL) may serve all of them while the other idles (measured: `imagenet` at 8
clients 81 req/s in one run of three, against ~150). Here the parent binds one socket per worker
with SO_REUSEPORT before starting them, so the kernel spreads new connections over the workers
by a hash of their addresses, and a connection that arrives while its worker restarts waits in
that socket's backlog instead of being refused.

Each worker loads its models before it accepts connections (IMGCLASS_LOAD_IN_BACKGROUND is
off in workers), so no request reaches a worker that would answer "still loading".

The parent only supervises: it starts the workers (spawned, so nothing is inherited but the
socket and the environment), replaces one that exits while the server is not stopping (a crash,
the OOM killer, a signal sent to that worker alone), and on SIGTERM/SIGINT asks every worker to
finish its requests and exit. A worker that fails within its first seconds three times in a row
stops the whole server (a broken configuration would fail the same way forever).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Final

import uvicorn

from app.http_guard import HeadGuardedProtocol
from app.multiproc import forget_dead_worker

logger = logging.getLogger("app.serve")

BACKLOG: Final = 2048
STOP_GRACE_S: Final = 30.0
EARLY_EXIT_S: Final = 10.0  # a worker dying this soon after its start counts as a failed start
MAX_EARLY_EXITS: Final = 3


def reuseport_supported() -> bool:
    """Linux spreads connections over SO_REUSEPORT sockets; other systems (macOS, the BSDs)
    accept the option but hand new connections to one socket, so they get uvicorn's workers."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) that other sockets with SO_REUSEPORT may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def uvicorn_config(log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        "app.main:create_app",
        factory=True,
        log_level=log_level.lower(),
        access_log=False,  # the app logs each request itself
        http=HeadGuardedProtocol,  # each request's head timed and capped (app/http_guard.py)
    )


def _worker_main(sock: socket.socket, log_level: str) -> None:  # pragma: no cover - child
    # Load every model before accepting: the kernel hands this worker its share of new
    # connections as soon as its socket listens, and a worker still loading would answer them
    # 503 while /readyz, served by a worker that is ready, says 200. Connections wait in the
    # backlog instead (measured: a third of one client's requests refused after start-up).
    os.environ["IMGCLASS_LOAD_IN_BACKGROUND"] = "false"
    config = uvicorn_config(log_level)
    config.configure_logging()  # spawned: logging is set up again in the child
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class _Slot:
    sock: socket.socket
    process: BaseProcess | None = None
    started_at: float = 0.0
    early_exits: int = 0


@dataclass
class Supervisor:
    """Start `workers` processes, one per SO_REUSEPORT socket, and keep them running."""

    host: str
    port: int
    workers: int
    log_level: str = "info"
    poll_s: float = 0.5
    slots: list[_Slot] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")

    def bind(self) -> None:
        """All sockets are bound before any worker starts: a port in use fails here, once."""
        self.slots = [_Slot(bind_reuseport(self.host, self.port)) for _ in range(self.workers)]

    def _start(self, slot: _Slot) -> None:
        proc = self._ctx.Process(
            target=_worker_main, args=(slot.sock, self.log_level), name="imgclass-worker"
        )
        proc.start()
        slot.process, slot.started_at = proc, time.monotonic()
        logger.info("started worker process %s", proc.pid)

    def _check(self, slot: _Slot) -> bool:
        """Restart a worker that died abnormally; False when the server must stop."""
        proc = slot.process
        if proc is None or proc.is_alive() or self.stopping.is_set():
            return True
        code = proc.exitcode
        proc.join()
        if proc.pid is not None:
            forget_dead_worker(proc.pid)
        early = time.monotonic() - slot.started_at < EARLY_EXIT_S
        slot.early_exits = slot.early_exits + 1 if early else 0
        if slot.early_exits >= MAX_EARLY_EXITS:
            logger.error(
                "worker process %s exited with %s %d times within %.0f s of its start; "
                "stopping (the log above says why)",
                proc.pid,
                code,
                slot.early_exits,
                EARLY_EXIT_S,
            )
            return False
        logger.warning("worker process %s exited with %s; starting another", proc.pid, code)
        self._start(slot)
        return True

    def stop(self) -> None:
        """SIGTERM every worker (uvicorn finishes the requests in flight), then wait."""
        self.stopping.set()
        procs = [s.process for s in self.slots if s.process is not None]
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                logger.warning("worker process %s did not stop in time; killing it", proc.pid)
                proc.kill()
                proc.join(5)
        for slot in self.slots:
            slot.sock.close()

    def run(self) -> int:
        """Serve until a signal or an unrecoverable worker failure; the exit status."""
        if not self.slots:
            self.bind()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s; stopping the workers", signal.Signals(signum).name)
            self.stopping.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        failed = False
        try:
            logger.info(
                "serving on %s:%d with %d worker processes (one SO_REUSEPORT socket each)",
                self.host,
                self.port,
                self.workers,
            )
            for slot in self.slots:
                self._start(slot)
            while not failed and not self.stopping.wait(self.poll_s):
                failed = not all(self._check(slot) for slot in self.slots)
        finally:
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 1 if failed else 0
