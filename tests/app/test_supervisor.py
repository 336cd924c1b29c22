"""The dealing parent's supervision (app.serve.Supervisor) with stand-in workers: small Python
processes that say ready (or do not) over their real socket pair, so each rule is checked in a
second or two. The whole server with real workers: tests/app/test_serve.py."""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import app.serve as serve
import app.worker_slots as worker_slots
from app.serve import Supervisor, raise_fd_limit
from app.worker_slots import Slot, unread_bytes


def _stand_in(code: str) -> Callable[[socket.socket, str], subprocess.Popen[bytes]]:
    """A start_worker whose worker runs `code` with FD bound to its end of the pair."""

    def start(channel: socket.socket, _log_level: str) -> subprocess.Popen[bytes]:
        fd = channel.fileno()
        return subprocess.Popen(
            [sys.executable, "-c", f"import os, time; FD = {fd}; {code}"], pass_fds=(fd,)
        )

    return start


READY_AND_WAIT = "os.write(FD, b'r'); time.sleep(60)"


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor("127.0.0.1", 0, workers=2, poll_s=0.05, stop_grace_s=5)
    yield sup
    sup.stop()  # never leave a stand-in behind


def _run_for(sup: Supervisor, seconds: float) -> int:
    """Supervisor.run() (it must be the main thread: it sets signal handlers), told to stop
    after `seconds` unless it ends by itself first."""
    timer = threading.Timer(seconds, sup.stopping.set)
    timer.start()
    try:
        return sup.run()
    finally:
        timer.cancel()


@pytest.mark.slow  # 1-3 s of stand-in workers
def test_a_worker_that_never_says_ready_is_a_failed_start_however_long_it_took(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 40: 16 workers that each failed after 30 s of loading (over EARLY_EXIT_S) were
    started again for ever; a worker that exits before it is ready has failed to start."""
    monkeypatch.setattr(serve, "EARLY_EXIT_S", 0.05)
    monkeypatch.setattr(serve, "start_worker", _stand_in("time.sleep(0.3)"))
    t0 = time.monotonic()
    assert _run_for(supervisor, 20) == 1  # stopped by the rule, not by the timer
    assert time.monotonic() - t0 < 15


@pytest.mark.slow  # 1-3 s of stand-in workers
def test_a_start_the_system_refuses_is_tried_again_while_the_others_serve(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 40: a restart that failed for want of file descriptors raised out of the
    supervisor and ended the server, its healthy worker with it."""
    monkeypatch.setattr(serve, "RETRY_MAX_S", 0.2)
    real = _stand_in(READY_AND_WAIT)
    starts: list[str] = []

    def start(channel: socket.socket, level: str) -> subprocess.Popen[bytes]:
        starts.append("try")
        if len(starts) in (3, 4):  # the first restart and its first retry
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        proc = real(channel, level)
        if len(starts) == 1:
            threading.Timer(0.5, proc.kill).start()  # the first worker dies once serving
        return proc

    monkeypatch.setattr(serve, "start_worker", start)
    with caplog.at_level(logging.ERROR, logger="app.serve"):
        assert _run_for(supervisor, 2.5) == 0
    assert len(starts) == 5  # two, the refused restart, its refused retry, the one that took
    said = [r.getMessage() for r in caplog.records]
    assert said == ["cannot start a worker process: Too many open files; trying again in 0.2 s"] * 2


def test_starts_refused_with_no_worker_serving_stop_the_server(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An environment over the kernel's limit (E2BIG) refuses every start: one line, status 1."""
    monkeypatch.setattr(serve, "RETRY_MAX_S", 0.05)

    def start(channel: socket.socket, level: str) -> subprocess.Popen[bytes]:
        raise OSError(errno.E2BIG, os.strerror(errno.E2BIG))

    monkeypatch.setattr(serve, "start_worker", start)
    with caplog.at_level(logging.ERROR, logger="app.serve"):
        assert _run_for(supervisor, 10) == 1
    assert "cannot start a worker process: Argument list too long; stopping" in caplog.text


@pytest.fixture
def two_channels() -> Iterator[tuple[Supervisor, list[socket.socket]]]:
    """A supervisor with two ready slots whose channels are socket pairs the test holds the
    workers' ends of (no processes)."""
    sup = Supervisor("127.0.0.1", 0, workers=2)
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(2)]
    for ours, _theirs in pairs:
        ours.setblocking(False)
    sup.slots = [Slot(channel=ours, ready=True) for ours, _ in pairs]
    sup._all_ready_once = True
    yield sup, [theirs for _ours, theirs in pairs]
    for pair in pairs:
        for end in pair:
            end.close()


def _fill(sup: Supervisor, slot: int, over: int, fd: int) -> int:
    """Deal `fd` to one slot's channel directly until more than `over` bytes wait unread."""
    channel = sup.slots[slot].channel
    assert channel is not None
    while unread_bytes(channel) <= over:
        socket.send_fds(channel, [b"c"], [fd])
    return unread_bytes(channel)


def _take(worker_end: socket.socket, n: int) -> None:
    """The worker takes `n` of its dealt connections."""
    for _ in range(n):
        _data, fds, _flags, _addr = socket.recv_fds(worker_end, 16, 4)
        for fd in fds:
            os.close(fd)


def test_a_worker_that_does_not_take_its_connections_is_passed_over(
    two_channels: tuple[Supervisor, list[socket.socket]],
) -> None:
    """Round 40: a worker stopped by SIGSTOP kept being dealt every other connection (278 of
    600 went unanswered). One over BACKED_UP_BYTES that takes none is passed over while another
    worker can take the connection, and is dealt it only when none other can."""
    sup, ends = two_channels
    mark = worker_slots.BACKED_UP_BYTES
    conn, other = socket.socketpair()
    with conn, other:
        queued = _fill(sup, 0, mark, conn.fileno())
        sup._next = 0  # the stuck worker's turn
        assert sup._deal(conn)
        assert unread_bytes(sup.slots[0].channel) == queued  # type: ignore[arg-type]
        _take(ends[1], 1)
        sup.slots[1].ready = False  # no other worker can take it: the stuck one gets it
        assert sup._deal(conn)
        assert unread_bytes(sup.slots[0].channel) > queued  # type: ignore[arg-type]


def test_in_a_burst_the_worker_taking_its_connections_gets_them_though_further_behind(
    two_channels: tuple[Supervisor, list[socket.socket]],
) -> None:
    """A burst fills both queues: the least-behind rule alone dealt the stopped worker 104-118
    of 600 (round 40). A worker that took none for STUCK_S is passed over even when the
    other, taking its connections, has more waiting."""
    sup, ends = two_channels
    mark = worker_slots.BACKED_UP_BYTES
    conn, other = socket.socketpair()
    with conn, other:
        stuck = _fill(sup, 0, mark, conn.fileno())
        busy = _fill(sup, 1, 3 * mark, conn.fileno())
        sup._next = 0
        assert sup._deal(conn)  # first look: neither has been seen moving
        time.sleep(worker_slots.STUCK_S + 0.1)
        _take(ends[1], 3)  # the live one takes some; the stopped one none
        for _ in range(5):
            sup._next = 0
            assert sup._deal(conn)
        assert unread_bytes(sup.slots[1].channel) > busy - 3 * 800  # type: ignore[arg-type]
        assert unread_bytes(sup.slots[0].channel) <= stuck + 800  # at most the first look's


def test_a_worker_that_takes_no_connection_for_hung_s_is_killed(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An event loop that serves nothing (a worker stopped, or stuck in a call that never
    returns) is killed and started again, as gunicorn's worker timeout does."""
    monkeypatch.setattr(serve, "HUNG_S", 0.3)
    monkeypatch.setattr(serve, "start_worker", _stand_in(READY_AND_WAIT))
    supervisor.bind()
    slot = supervisor.slots[0]
    supervisor._start(slot)
    assert slot.process is not None
    deadline = time.monotonic() + 10
    while not supervisor._ready(slot):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    conn, other = socket.socketpair()
    with conn, other:
        _fill(supervisor, 0, worker_slots.BACKED_UP_BYTES, conn.fileno())  # never taken
    hung = slot.process
    with caplog.at_level(logging.ERROR, logger="app.serve"):
        assert supervisor._check(slot)  # seen behind
        time.sleep(worker_slots.STUCK_S + 0.2)
        assert supervisor._check(slot)  # still not taking them after HUNG_S: killed
        assert hung.wait(5) == -9
        assert supervisor._check(slot)  # and started again
    assert slot.process is not None and slot.process is not hung
    assert "has taken no connection for" in caplog.text and "; killing it" in caplog.text


@pytest.mark.slow  # 1-3 s of stand-in workers
def test_a_second_ctrl_c_kills_the_workers_without_waiting(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uvicorn says "CTRL+C to force quit" while a worker drains an upload; the parent only
    logged the second Ctrl-C and waited up to the body timeout (round 40)."""
    monkeypatch.setattr(
        serve,
        "start_worker",
        _stand_in(
            "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + READY_AND_WAIT
        ),
    )
    supervisor.stop_grace_s = 60
    supervisor.bind()
    for slot in supervisor.slots:
        supervisor._start(slot)
    time.sleep(0.3)
    threading.Timer(0.5, supervisor.force.set).start()
    t0 = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - t0 < 5
    assert all(s.process is not None and s.process.poll() is not None for s in supervisor.slots)


def test_the_open_files_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        raise_fd_limit()
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert now == (hard if hard != resource.RLIM_INFINITY else 1 << 16)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
