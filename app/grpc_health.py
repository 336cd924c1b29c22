"""The standard gRPC health-checking service (`grpc.health.v1.Health`) beside the Open
Inference Protocol binding, for Kubernetes gRPC probes, grpc-health-probe and load balancers
that check backends over gRPC.

`Check` with an empty service name, or `inference.GRPCInferenceService`, says SERVING exactly
when the protocol's ServerReady (and /v2/health/ready) says ready: every bundle loaded and at
least one served; otherwise NOT_SERVING. With a model's name it says whether that model is ready (the
same lookup as ModelReady, `name@version` included); a name that is not a model is NOT_FOUND,
as the protocol asks. Model checks need the API key when reads need one; the server-wide check
never does (like /readyz). `Watch` is not served (UNIMPLEMENTED): gRPC clients that watch
then treat the server as healthy, and probes use `Check`.

The two messages are built from their descriptor at import (one string field; one enum field)
in a pool of their own, so no generated module or extra package is needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from app.grpc_watchdog import CallGate, MessageWatchdog

SERVICE: Final = "grpc.health.v1.Health"
SERVING: Final = 1
NOT_SERVING: Final = 2
MESSAGE_S: Final = 2.0  # a check's message (a few bytes) arrives within this, or is cancelled


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


def health_handler(check: Any, watchdog: MessageWatchdog, gate: CallGate) -> Any:
    """The service's generic handler. `check(service, context)` -> SERVING or NOT_SERVING, or
    aborts the call (NOT_FOUND, UNAUTHENTICATED). It takes one of the health service's own
    places (`gate`, the threads kept for it: round 18 held every thread with checks that never
    sent their message) and its message, a few bytes, must come within MESSAGE_S."""

    def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
        place = gate.enter(context, "grpc Health.Check")
        try:
            raw = watchdog.first(requests, context, MESSAGE_S)
        finally:
            gate.leave(place)
        try:
            request = HealthCheckRequest.FromString(raw)
        except Exception:  # DecodeError, or whatever a hostile message raises
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "The HealthCheckRequest is not valid protobuf."
            )
        return HealthCheckResponse(status=check(request.service, context))

    check_rpc = grpc.stream_unary_rpc_method_handler(
        handle, response_serializer=lambda response: response.SerializeToString()
    )
    return grpc.method_handlers_generic_handler(SERVICE, {"Check": check_rpc})
