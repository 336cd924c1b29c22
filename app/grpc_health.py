"""The standard gRPC health-checking service (`grpc.health.v1.Health`) beside the Open
Inference Protocol binding, for Kubernetes gRPC probes, grpc-health-probe, load balancers that
check backends over gRPC, and gRPC clients' own health checking (which watches).

`Check` with an empty service name, or `inference.GRPCInferenceService`, says SERVING exactly
when the protocol's ServerReady (and /v2/health/ready) says ready: every bundle loaded and at
least one served; otherwise NOT_SERVING. With a model's name it says whether that model is ready (the
same lookup as ModelReady, `name@version` included); a name that is not a model is NOT_FOUND,
as the protocol asks. Model checks need the API key when reads need one; the server-wide check
never does (like /readyz).

`Watch` sends the same status at once and again whenever it changes (looked at every
WATCH_TICK_S); a name that is not a model is SERVICE_UNKNOWN and the call stays open, as the
protocol asks. When the server stops, every watch is sent NOT_SERVING and ends, so watching
clients stop routing to it before its port closes. A watch holds one of the process's threads
for as long as the client keeps it, so a process keeps WATCHES of them (WATCHES_PER_PEER from
one address). One more is answered UNIMPLEMENTED, with a detail saying why: gRPC's client-side
health checking then treats the server as healthy and stops watching it (any other code would
mark a healthy server unhealthy and have the client retry); `Check` still answers it.

The two messages are built from their descriptor at import (one string field; one enum field)
in a pool of their own, so no generated module or extra package is needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from app.grpc_watchdog import CallGate, MessageWatchdog
from app.telemetry import GRPC_WATCHES, observe_request

SERVICE: Final = "grpc.health.v1.Health"
SERVING: Final = 1
NOT_SERVING: Final = 2
SERVICE_UNKNOWN: Final = 3  # Watch only: the name is not (yet) a model
MESSAGE_S: Final = 2.0  # a check's message (a few bytes) arrives within this, or is cancelled
WATCH_TICK_S: Final = 1.0  # how often a watch looks at the status it watches
WATCHES: Final = 16  # watches one process keeps at once (each holds a thread)
WATCHES_PER_PEER: Final = 8  # of those, one address may hold
# A model's name, `@version` included, is far shorter; a watch looks its name up every tick
# (round 27: 32 watches of 8 MiB names kept a core busy and the process 700 MB larger).
MAX_SERVICE: Final = 256


def _messages() -> tuple[Any, Any]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="imgclass/grpc/health/v1/health.proto", package="grpc.health.v1", syntax="proto3"
    )
    request = proto.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=9, label=1)  # string, optional
    response = proto.message_type.add(name="HealthCheckResponse")
    status = response.enum_type.add(name="ServingStatus")
    for number, name in enumerate(("UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN")):
        status.value.add(name=name, number=number)
    response.field.add(
        name="status",
        number=1,
        type=14,  # enum
        label=1,
        type_name=".grpc.health.v1.HealthCheckResponse.ServingStatus",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.health.v1.{name}"))
        for name in ("HealthCheckRequest", "HealthCheckResponse")
    )


HealthCheckRequest, HealthCheckResponse = _messages()


def _request(raw: bytes, context: grpc.ServicerContext) -> Any:
    try:
        request = HealthCheckRequest.FromString(raw)
    except Exception:  # DecodeError, or whatever a hostile message raises
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, "The HealthCheckRequest is not valid protobuf."
        )
    if len(request.service) > MAX_SERVICE:
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The service name is {len(request.service):,} characters; a model's name (with "
            f"@version) or '' for the server is at most {MAX_SERVICE}.",
        )
    return request


def _serialize(response: Any) -> bytes:
    return bytes(response.SerializeToString())


class HealthService:
    """The service's handlers on one server process.

    `check(service, context)` -> SERVING or NOT_SERVING, or aborts the call (NOT_FOUND,
    UNAUTHENTICATED); `status(service)` -> SERVING, NOT_SERVING or SERVICE_UNKNOWN, never
    aborting; `authorize(service, context)` aborts a watch the caller may not make. A check
    takes one of the health service's own places (`gate`, the threads kept for it: round 18
    held every thread with checks that never sent their message) and a watch one of
    `watch_gate`'s; either's message, a few bytes, must come within MESSAGE_S."""

    def __init__(
        self,
        check: Callable[[str, grpc.ServicerContext], int],
        status: Callable[[str], int],
        authorize: Callable[[str, grpc.ServicerContext], None],
        watchdog: MessageWatchdog,
        gate: CallGate,
        watch_gate: CallGate,
    ) -> None:
        self._check, self._status, self._authorize = check, status, authorize
        self._watchdog, self._gate, self._watch_gate = watchdog, gate, watch_gate
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._wakes: set[threading.Event] = set()

    def handler(self) -> Any:
        check_rpc = grpc.stream_unary_rpc_method_handler(self.check, response_serializer=_serialize)
        watch_rpc = grpc.stream_stream_rpc_method_handler(
            self.watch, response_serializer=_serialize
        )
        return grpc.method_handlers_generic_handler(
            SERVICE, {"Check": check_rpc, "Watch": watch_rpc}
        )

    def check(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        place = self._gate.enter(context, "grpc Health.Check")
        try:
            raw = self._watchdog.first(requests, context, MESSAGE_S)
        finally:
            self._gate.leave(place)
        request = _request(raw, context)
        return HealthCheckResponse(status=self._check(request.service, context))

    def watch(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[Any]:
        place = self._watch_gate.enter(context, "grpc Health.Watch")
        wake, t0, ended = threading.Event(), time.perf_counter(), 499  # 499: the client left
        try:
            request = _request(self._watchdog.first(requests, context, MESSAGE_S), context)
            self._authorize(request.service, context)
            context.add_callback(wake.set)  # the client went away: stop at once
            with self._lock:
                self._wakes.add(wake)
            GRPC_WATCHES.inc()
            sent = None
            while context.is_active():
                stopping = self._stopping.is_set()
                now = NOT_SERVING if stopping else self._status(request.service)
                if now != sent:
                    yield HealthCheckResponse(status=now)
                    sent = now
                if stopping:
                    ended = 200
                    return  # the stream ends OK: the client watches another server
                wake.wait(WATCH_TICK_S)
                wake.clear()
        finally:
            with self._lock:
                watched = wake in self._wakes
                self._wakes.discard(wake)
            if watched:  # counted in /metrics when it ends, as the HTTP routes are
                GRPC_WATCHES.dec()
                observe_request("grpc Health.Watch", "POST", "", ended, time.perf_counter() - t0)
            self._watch_gate.leave(place)

    def stop(self) -> None:
        """Every watch is sent NOT_SERVING and ends (the server is about to stop)."""
        self._stopping.set()
        with self._lock:
            for wake in self._wakes:
                wake.set()
