"""Run the server as N worker processes on one port; the parent accepts and deals connections.

Why not uvicorn's `workers=N`: its workers share one listening socket, and with keep-alive
clients the first worker to wake accepts every connection a client opens at once, so one
process (one GIL) may serve all of them while the other idles (measured: `imagenet` at 8
clients 81 req/s in one run of three, against ~150). Until 2026-12-02 the parent bound one
SO_REUSEPORT socket per worker and the kernel spread new connections by a hash of their
addresses: at random, so a client's 8 connections all landed on one worker 2 times in 256
(measured: 561 req/s instead of ~850 for `products`; with 2 connections, both share a worker
half the time). Now the parent listens, accepts, and hands each connection's file descriptor
to the next ready worker in turn over a Unix socket pair (SCM_RIGHTS): a client's connections
are dealt out evenly, and a worker still loading or restarting gets none until it says it is
ready. The parent only accepts; the requests never pass through it.

Each worker loads its models before it takes connections (IMGCLASS_LOAD_IN_BACKGROUND is off
in workers), so no request reaches a worker that would answer "still loading".

The parent supervises: it starts the workers (fresh interpreters, app.worker_process: nothing is
inherited but their end of the socket pair and the environment; their side is
app.dealt_server), replaces one that exits while the server is not stopping (a crash, the OOM
killer, a signal sent to that worker alone), and on SIGTERM, SIGINT or SIGHUP stops accepting
and asks every worker to finish its requests and exit (a second Ctrl-C kills them). A worker
that exits before it is ready, or within its first seconds, three times in a row stops the
whole server (a broken configuration would fail the same way forever); a start the system
refuses (no descriptors or processes left) is tried again, backing off, while another worker
serves. A worker that has stopped taking its connections is passed over while another can.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from app.multiproc import forget_dead_worker
from app.worker_process import READY, alive, start_worker, wait
from app.worker_slots import BACKED_UP_BYTES, Slot, behind, unread

logger = logging.getLogger("app.serve")

BACKLOG: Final = 2048
STOP_GRACE_S: Final = 30.0  # at least; or the body timeout and STOP_AFTER_BODY_S (__main__)
STOP_AFTER_BODY_S: Final = 10.0  # a worker's 408 to a late upload, then its shutdown
# A worker that exits before it says it is ready, or this soon after its start, failed to start
EARLY_EXIT_S: Final = 10.0
MAX_EARLY_EXITS: Final = 3  # failed starts in a row that stop the server
RETRY_MAX_S: Final = 30.0  # a start the system refused (no descriptors left) is tried again
# A worker stuck (app.worker_slots) for this long is killed and started again: its event loop
# has served nothing for that long.
HUNG_S: Final = 30.0
# At start-up no connection is dealt until every worker is ready (or this long has passed):
# a client that starts as soon as /readyz answers would otherwise keep every connection it
# opened on the first worker to finish loading.
START_HOLD_S: Final = 120.0


def dealing_supported() -> bool:
    """Passing sockets between processes (SCM_RIGHTS) needs a Unix; elsewhere uvicorn's own
    workers serve (app.__main__)."""
    return sys.platform != "win32" and hasattr(socket, "send_fds")


def bind_listener(host: str, port: int) -> socket.socket:
    """The parent's listening TCP socket on (host, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class Supervisor:
    """Start `workers` processes, deal the listening socket's connections to them in turn, and
    keep them running."""

    host: str
    port: int
    workers: int
    log_level: str = "info"
    poll_s: float = 0.5
    stop_grace_s: float = STOP_GRACE_S  # workers left to finish their requests at a stop
    slots: list[Slot] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    listener: socket.socket | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # slots' channels: the dealer vs restarts
        self._next = 0
        self._all_ready_once = False  # every worker has been ready since the start
        self._began = time.monotonic()
        self.force = threading.Event()  # a second Ctrl-C: kill the workers, wait no more

    def bind(self) -> None:
        """Listen before any worker starts: a port in use fails here, once."""
        self.adopt(bind_listener(self.host, self.port))

    def adopt(self, listener: socket.socket) -> None:
        """Deal the connections of `listener` (bound by `python -m app` before it handed over
        to app.dealer)."""
        raise_fd_limit()
        self._began = time.monotonic()
        self.listener = listener
        self.slots = [Slot() for _ in range(self.workers)]

    def _start(self, slot: Slot) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            proc = start_worker(child_end, self.log_level)
        finally:
            child_end.close()
        parent_end.setblocking(False)
        with self._lock:
            old, slot.channel, slot.ready = slot.channel, parent_end, False
            slot.process, slot.started_at = proc, time.monotonic()
            slot.queued, slot.moved_at = 0, slot.started_at
        if old is not None:
            old.close()
        slot.refusals = 0
        logger.info("started worker process %s", proc.pid)

    # -- dealing (one thread) ---------------------------------------------------------------

    def _ready(self, slot: Slot) -> bool:
        """Whether the worker has said it is ready (read at most once, without blocking)."""
        if slot.ready or slot.channel is None:
            return slot.ready
        with contextlib.suppress(OSError):  # nothing yet (BlockingIOError), or the worker is gone
            slot.ready = slot.channel.recv(1) == READY
        return slot.ready

    def _deal(self, conn: socket.socket) -> bool:
        """Hand `conn` to the next ready worker; False when none could take it now (or, at
        start-up, until every worker is ready: see START_HOLD_S). A worker restarted later
        gets connections again once it is ready; the others serve meanwhile."""
        with self._lock:
            if not self._all_ready_once:
                if all(self._ready(slot) for slot in self.slots):
                    self._all_ready_once = True
                elif time.monotonic() - self._began < START_HOLD_S:
                    return False
            n, now = len(self.slots), time.monotonic()
            turns = [(i, self.slots[(self._next + i) % n]) for i in range(n)]
            ready = [(i, s) for i, s in turns if s.channel is not None and self._ready(s)]
            moving = [(i, s) for i, s in ready if not behind(s, now)[1]]
            ready = moving or ready  # stuck ones only when every ready worker is
            if len(ready) > 1 and ready[0][1].queued > BACKED_UP_BYTES:
                ready.sort(key=lambda turn: turn[1].queued)  # the least behind first
            for i, slot in ready:
                assert slot.channel is not None
                try:
                    socket.send_fds(slot.channel, [b"c"], [conn.fileno()])
                except (BlockingIOError, InterruptedError):
                    continue  # its queue is full: it is not reading, try the next
                except OSError:
                    slot.ready = False  # it died; the supervisor restarts it
                    continue
                self._next = (self._next + i + 1) % n
                slot.queued = unread(slot)
                return True
        return False

    def _dealer(self) -> None:
        """Accept connections and deal them out; hold them (in arrival order) while no worker is
        ready, as a backlog would."""
        assert self.listener is not None
        self.listener.settimeout(0.05)
        held: deque[socket.socket] = deque()
        while not self.stopping.is_set():
            while held and self._deal(held[0]):
                held.popleft().close()
            try:
                conn, _addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self.stopping.is_set():
                    break
                time.sleep(0.05)  # e.g. out of file descriptors: the kernel keeps the backlog
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not held and self._deal(conn):
                conn.close()  # the worker holds its own copy
            elif len(held) < BACKLOG:
                held.append(conn)
            else:
                conn.close()
        for conn in held:
            conn.close()

    # -- supervising ------------------------------------------------------------------------

    def _check(self, slot: Slot) -> bool:
        """Restart a worker that died abnormally; False when the server must stop."""
        proc = slot.process
        if self.stopping.is_set():
            return True
        if proc is not None and alive(proc):
            with self._lock:
                waited, stuck = behind(slot, time.monotonic()) if slot.ready else (0.0, False)
            if stuck and waited > HUNG_S:
                logger.error(
                    "worker process %s has taken no connection for %.0f s; killing it",
                    proc.pid,
                    waited,
                )
                proc.kill()
            return True
        if proc is not None and not self._ended(slot, proc):
            return False
        if time.monotonic() < slot.retry_at:
            return True
        return self._try_start(slot)

    def _ended(self, slot: Slot, proc: subprocess.Popen[bytes]) -> bool:
        """Count a worker's exit; False after MAX_EARLY_EXITS failed starts in a row. A worker
        that never said it was ready failed to start however long it took (round 40: 16
        workers that each failed after 30 s of loading were started again for ever)."""
        code = proc.returncode  # -N: ended by signal N
        with self._lock:
            was_ready = self._ready(slot)  # its READY outlives it in the channel
            slot.ready, slot.process = False, None
        forget_dead_worker(proc.pid)
        failed = not was_ready or time.monotonic() - slot.started_at < EARLY_EXIT_S
        slot.early_exits = slot.early_exits + 1 if failed else 0
        if slot.early_exits >= MAX_EARLY_EXITS:
            logger.error(
                "worker process %s exited with %s; %d starts in a row failed (exited before it "
                "was ready, or within %.0f s); stopping (the log above says why)",
                proc.pid,
                code,
                slot.early_exits,
                EARLY_EXIT_S,
            )
            return False
        logger.warning("worker process %s exited with %s; starting another", proc.pid, code)
        return True

    def _try_start(self, slot: Slot) -> bool:
        """Start the slot's worker. A start the system refuses (no file descriptors or
        processes left, an environment over its limit) is tried again later, backing off;
        False when it keeps failing and no other worker serves (round 40: the exception ended
        the server, healthy workers included)."""
        try:
            self._start(slot)
        except OSError as exc:
            slot.refusals += 1
            delay = min(RETRY_MAX_S, 0.5 * 2 ** (slot.refusals - 1))
            slot.retry_at = time.monotonic() + delay
            serving = any(s.process is not None and alive(s.process) for s in self.slots)
            if slot.refusals >= MAX_EARLY_EXITS and not serving:
                logger.error("cannot start a worker process: %s; stopping", exc.strerror or exc)
                return False
            logger.error(
                "cannot start a worker process: %s; trying again in %.1f s",
                exc.strerror or exc,
                delay,
            )
        return True

    def _terminate(self) -> list[subprocess.Popen[bytes]]:
        """SIGTERM every worker: each says `stopping` at once, then finishes what it holds."""
        procs = [s.process for s in self.slots if s.process is not None]
        for proc in procs:
            if alive(proc):
                proc.terminate()
        return procs

    def stop(self) -> None:
        """Stop accepting, SIGTERM every worker (uvicorn finishes the requests in flight), wait."""
        self.stopping.set()
        if self.listener is not None:
            self.listener.close()
        procs = self._terminate()
        deadline = time.monotonic() + self.stop_grace_s
        for proc in procs:
            while alive(proc) and not self.force.is_set() and time.monotonic() < deadline:
                wait(proc, 0.2)
            if alive(proc):
                why = "Ctrl-C again" if self.force.is_set() else "did not stop in time"
                logger.warning("worker process %s: %s; killing it", proc.pid, why)
                proc.kill()
                wait(proc, 5)
        for slot in self.slots:
            if slot.channel is not None:
                slot.channel.close()

    def run(self) -> int:
        """Serve until a signal or an unrecoverable worker failure; the exit status."""
        if not self.slots:
            self.bind()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if signum == signal.SIGINT and self.stopping.is_set():  # uvicorn's "force quit"
                logger.warning("received SIGINT again; killing the workers")
                self.force.set()
                return
            logger.info("received %s; stopping the workers", signal.Signals(signum).name)
            self.stopping.set()

        # SIGHUP (the terminal closed) stops as SIGTERM does; it killed the parent alone, and
        # its metrics folder was left behind (round 40)
        stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {s: signal.signal(s, on_signal) for s in stops}
        dealer = threading.Thread(target=self._dealer, name="imgclass-dealer", daemon=True)
        failed = False
        try:
            logger.info(
                "serving on %s:%d with %d worker process%s (connections dealt in turn); "
                "page: /, API docs: /docs",
                self.host,
                self.port,
                self.workers,
                "" if self.workers == 1 else "es",
            )
            for slot in self.slots:
                self._try_start(slot)
            dealer.start()
            while not failed and not self.stopping.wait(self.poll_s):
                failed = not all(self._check(slot) for slot in self.slots)
        finally:
            self.stopping.set()
            self._terminate()  # before the dealer's last accept: /readyz said 200 for 50 ms
            if dealer.is_alive():
                dealer.join(2)
            self.stop()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 1 if failed else 0


def raise_fd_limit() -> None:
    """Raise the soft limit on open files to the hard one (as Go's runtime does): the dealer
    holds up to BACKLOG connections while no worker is ready, over a usual soft limit of
    1,024 (round 40: a worker's restart then failed for want of a descriptor)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 1 << 16 if hard == resource.RLIM_INFINITY else hard
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass  # not on this system, or not allowed: the soft limit stays
