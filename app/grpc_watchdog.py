"""The first message of a gRPC call, within a time limit, and a bound on the calls that may
wait for theirs.

grpcio's synchronous server runs each call on a pool thread from the moment its headers arrive,
and a unary call waits on that thread for its message. A client that sends headers and never
the message held a thread, and a place among the process's concurrent calls, for as long as it
liked: 48 such calls at 0 bytes/s kept every `grpc.health.v1` probe RESOURCE_EXHAUSTED for
150 s while /readyz said 200 (fuzz round 17). So every method is served as a stream whose first
message is read here: a call whose message has not arrived within `timeout_s` is cancelled
(`MessageWatchdog`), and the protocol's methods take a place (`CallGate`) before they wait for
it, so they never hold the threads kept for the health service.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import grpc

from app.telemetry import observe_request

TICK_S = 0.5  # how often overdue calls are looked for


class MessageWatchdog:
    """Cancels calls whose first message is overdue; one daemon thread per server process."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._due: dict[int, tuple[float, grpc.ServicerContext]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-watchdog", daemon=True)
        self._thread.start()

    def first(
        self,
        requests: Iterator[bytes],
        context: grpc.ServicerContext,
        timeout_s: float | None = None,
    ) -> bytes:
        """The call's first message; the call is cancelled if it does not come within
        `timeout_s` (the watchdog's by default), and INVALID_ARGUMENT if the client ends its
        stream without one."""
        key = id(context)
        wait = self.timeout_s if timeout_s is None else timeout_s
        with self._lock:
            self._due[key] = (time.monotonic() + wait, context)
        try:
            return next(requests)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "The call carried no message.")
            raise  # abort raises; this line is for the type checker
        finally:
            with self._lock:
                self._due.pop(key, None)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            with self._lock:
                late = [ctx for due, ctx in self._due.values() if due <= now]
            for context in late:
                context.cancel()  # the waiting read raises; the thread is free again

    def stop(self) -> None:
        self._stop.set()


def peer_address(context: grpc.ServicerContext) -> str:
    """The calling address without its port (`ipv4:10.0.0.7`, `ipv6:[::1]`, `unix:...`)."""
    peer = str(context.peer() or "")
    if peer.startswith(("ipv4:", "ipv6:")):
        return peer.rsplit(":", 1)[0]
    return peer


class CallGate:
    """At most `limit` calls of one kind at once in a process, their wait for a message
    included, and at most `per_peer` of them from one address; one more is refused at once
    (UNAVAILABLE when the process is full, RESOURCE_EXHAUSTED for the address). The
    per-address bound keeps one client from holding every place with calls that never send
    their message (round 18: a flood of such health checks, each re-opened as soon as it was
    cancelled, left other probes refused). `refusal` replaces both codes where a client
    must read a refusal otherwise (health watches: UNIMPLEMENTED, app/grpc_health.py), and
    `why` then ends its detail instead of the advice to retry. With `waiting`, up to that many
    more calls wait for a place, each at most `wait_s` (and its deadline), before they are
    refused: Triton queues calls beyond what it runs, and tritonclient retries none, so 8 of
    16 `async_infer` calls from one client failed when the ninth was refused at once (round
    43). A waiting call has not read its message (app/grpc_ports.py: fixed windows)."""

    def __init__(
        self,
        limit: int,
        what: str = "inference calls",
        per_peer: int = 0,
        refusal: grpc.StatusCode | None = None,
        why: str = "",
        waiting: int = 0,
        wait_s: float = 0.0,
    ) -> None:
        self.limit, self.what, self.per_peer = limit, what, per_peer or limit
        self.refusal, self.why = refusal, why
        self.waiting, self.wait_s = waiting, wait_s
        self._lock = threading.Condition()
        self._total = 0
        self._waiters = 0
        self._held: dict[str, int] = {}

    def enter(self, context: grpc.ServicerContext, route: str = "") -> str:
        """Take a place for `context`'s call; pass what it returns to `leave` once the call
        ends (its peer is read here once: a cancelled call's may read otherwise later). A
        refusal is counted in /metrics under `route` (as 503 when the process is full, 429
        when the address holds its share), like the HTTP doors' refusals."""
        peer = peer_address(context)
        left = context.time_remaining() if self.waiting else None
        until = time.monotonic() + min(self.wait_s, left if left is not None else self.wait_s)
        queued = False
        with self._lock:
            while True:
                mine = self._held.get(peer, 0)
                if self._total < self.limit and mine < self.per_peer:
                    self._total += 1
                    self._held[peer] = mine + 1
                    self._waiters -= queued
                    return peer
                if not queued and self._waiters >= self.waiting:
                    break
                self._waiters += not queued
                queued = True
                now = time.monotonic()
                if now >= until or not context.is_active():
                    self._waiters -= 1
                    break
                self._lock.wait(min(until - now, TICK_S))  # a cancelled call stops waiting
            full = self._total >= self.limit
        if full:
            # UNAVAILABLE: the status clients' retry policies retry (kserve's retries only it;
            # round 24: 6 of 30 calls from 10 threads failed as RESOURCE_EXHAUSTED)
            code, status = grpc.StatusCode.UNAVAILABLE, 503
            detail = (
                f"This server process already serves {self.limit} {self.what}; retry "
                "shortly, or spread calls over more connections (each reaches one process)."
            )
        else:
            code, status = grpc.StatusCode.RESOURCE_EXHAUSTED, 429
            detail = (
                f"This server process already serves {self.per_peer} {self.what} from your "
                "address; retry once one of them has its answer."
            )
        if route:
            observe_request(route, "POST", "", status, 0.0)
        if self.refusal is not None:
            held = self.limit if full else self.per_peer
            where = "" if full else " from your address"
            code, detail = (
                self.refusal,
                f"This server process already keeps {held} {self.what}{where}. {self.why}",
            )
        context.abort(code, detail)
        raise AssertionError("abort raises")  # for the type checker

    def leave(self, peer: str) -> None:
        with self._lock:
            self._total -= 1
            self._lock.notify_all()  # a waiting call of this address may be the one to go
            left = self._held.get(peer, 1) - 1
            if left > 0:
                self._held[peer] = left
            else:
                self._held.pop(peer, None)
