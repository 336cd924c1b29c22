"""The Open Inference Protocol's gRPC method handlers (app/grpc_oip.py serves them): each call
takes a place among the process's calls, its message is read within the watchdog's time and
parsed here, and its arrival time is kept for its deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, Final

import grpc
from tritonclient.grpc import service_pb2 as pb

from app.grpc_watchdog import CallGate, MessageWatchdog

SERVICE: Final = "inference.GRPCInferenceService"
# The protocol's RPCs served; Triton's others are not registered, so gRPC answers UNIMPLEMENTED.
_RPCS: Final = {
    "ServerLive": pb.ServerLiveRequest,
    "ServerReady": pb.ServerReadyRequest,
    "ModelReady": pb.ModelReadyRequest,
    "ServerMetadata": pb.ServerMetadataRequest,
    "ModelMetadata": pb.ModelMetadataRequest,
    "ModelInfer": pb.ModelInferRequest,
}
_call = threading.local()  # a handler and its method run on one gRPC thread


def arrived() -> float:
    """When the call served on this thread arrived (time.perf_counter), before any wait for
    a place; now where no handler set it."""
    return float(getattr(_call, "arrived", time.perf_counter()))


def handlers(servicer: Any, gate: CallGate, watchdog: MessageWatchdog) -> Any:
    """The service's handlers, each taking a place in `gate`, reading its message within the
    watchdog's time (a stream's first message: the same bytes on the wire as a unary call) and
    parsing it itself: a message that is not valid protobuf is INVALID_ARGUMENT (grpcio's own
    deserializer answered INTERNAL, round 15)."""

    def handler(method: str, message: Any) -> Any:
        impl = getattr(servicer, method)

        def handle(requests: Iterator[bytes], context: grpc.ServicerContext) -> Any:
            _call.arrived = time.perf_counter()
            place = gate.enter(context, f"grpc {method}")
            try:
                raw = watchdog.first(requests, context)
                try:
                    request = message.FromString(raw)
                except Exception:  # DecodeError, or whatever a hostile message raises
                    context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"The {message.DESCRIPTOR.name} message is not valid protobuf.",
                    )
                return impl(request, context)
            finally:
                gate.leave(place)
                del _call.arrived

        return grpc.stream_unary_rpc_method_handler(
            handle, response_serializer=lambda response: response.SerializeToString()
        )

    return grpc.method_handlers_generic_handler(
        SERVICE, {m: handler(m, msg) for m, msg in _RPCS.items()}
    )
