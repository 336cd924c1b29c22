"""The Open Inference Protocol v2 over gRPC: the `inference.GRPCInferenceService` of KServe v2
and Triton (message classes from the `tritonclient` package's generated modules), beside the
HTTP/REST binding in app/api/v2.py and sharing its rules: the same model lookup (`name` plus
an optional version), inputs (`image` as BYTES holding encoded image files, or the model's FP32
NHWC tensor), outputs (`probs`, `embedding`, `decision`, the classification extension),
ingestion policy, limits, queue, batching and deadline.

Off unless IMGCLASS_GRPC_PORT is set. Each server process runs one gRPC server on its own
threads (grpcio's synchronous server: the event loop may be uvloop, which grpc.aio does not
support) and binds the port with SO_REUSEPORT, so the kernel spreads connections over the
workers of `python -m app`. A call is parsed on a gRPC thread and scheduled on the process's
event loop like an HTTP request. Bounds: messages up to IMGCLASS_GRPC_MAX_MESSAGE_BYTES (8 MiB;
gRPC refuses larger ones with RESOURCE_EXHAUSTED before they are parsed), charged to the
process's body budget while they are served (IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT, shared with
HTTP bodies: UNAVAILABLE when full), GRPC_CALLS of the protocol's calls at once per process
(GRPC_PER_PEER from one address), their wait for a message included (GRPC_WAITING more wait for a place, within the request
deadline, which counts from their arrival; then UNAVAILABLE; HEALTH_THREADS more threads are
kept for the health service), a message that must arrive within
IMGCLASS_BODY_TIMEOUT_S (app/grpc_watchdog.py), the request deadline (or the client's, when
shorter). A call's message is held whole while it is parsed and copied, so one process
holds about GRPC_CALLS x 4 x the message limit for gRPC at most (measured +250-335 MiB with
8 MiB messages); the transport does not read ahead for calls still waiting for a place
(app/grpc_ports.py: fixed stream windows).
Errors carry the same details as the HTTP binding's, with gRPC status codes (`_CODES`).
Triton's own extensions (repository, statistics, shared memory, streaming) answer
UNIMPLEMENTED. The standard health service (`grpc.health.v1.Health` Check and Watch,
app/grpc_health.py) is served beside it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, TypeVar

import grpc
from tritonclient.grpc import service_pb2 as pb

from app import __version__
from app.api.body_budget import BodyBudget
from app.api.deps import key_matches
from app.api.health import server_ready
from app.api.v2 import EXTENSIONS, _batch, _metadata, _model
from app.batching import Schedulers
from app.draining import stopping
from app.errors import (
    ConfigurationError,
    DeadlineExceeded,
    NotFound,
    NotReady,
    ServiceError,
    Unauthorized,
    forget_frames,
)
from app.grpc_codec import call_key, parse_request, response_message
from app.grpc_handlers import SERVICE, arrived, handlers
from app.grpc_health import (
    NOT_SERVING,
    SERVICE_UNKNOWN,
    SERVING,
    WATCHES,
    WATCHES_PER_PEER,
    HealthService,
)
from app.grpc_ports import PortRelease, bind, check_grpc_port, server_options
from app.grpc_watchdog import CallGate, MessageWatchdog
from app.oip_outputs import outputs
from app.registry import ModelRegistry
from app.serve import STOP_AFTER_BODY_S
from app.settings import Settings
from app.telemetry import observe_request

logger = logging.getLogger(__name__)
T = TypeVar("T")

GRPC_CALLS: Final = 8  # the protocol's calls at once per process (CallGate)
GRPC_WAITING: Final = 56  # more that wait for a place, up to the request deadline
# Places one address may hold: calls that never finish sending their message held all 8 for
# the body timeout (round 44: 24 half-sent calls from one client shut out every other); the
# last 2 are always another address's (a proxy in front, one address, still gets 6 at once).
GRPC_PER_PEER: Final = GRPC_CALLS - 2
HEALTH_THREADS: Final = 24  # threads the protocol's calls never take: health checks are answered
HEALTH_PER_PEER: Final = 8  # of those, one address may hold (round 18's flood came from one)
GRPC_PENDING: Final = 4  # calls waiting for a thread (then RESOURCE_EXHAUSTED)
MAX_DETAIL: Final = 2048  # characters of an error's message sent in the status

# HTTP status of a service error -> gRPC status code
_CODES: Final = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
    507: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


class OipServicer:
    """The KServe v2 RPCs on one server process's registry and queues."""

    def __init__(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.state, self.loop = state, loop
        self.settings: Settings = state.settings
        self.registry: ModelRegistry = state.registry

    # plumbing ----------------------------------------------------------------------------
    def _call(
        self,
        context: grpc.ServicerContext,
        method: str,
        work: Callable[[], T],
        model: str = "",
        *,
        keyless: bool = False,
    ) -> T:
        """`work()` with service errors as gRPC statuses, the key checked for reads (not for
        the server's own probes, `keyless`, like /readyz), and the call counted in /metrics
        like an HTTP request (route `grpc <method>`, the HTTP status its error has, 200 on
        success; an unknown model's name is not a label)."""
        t0, status = time.perf_counter(), 200
        try:
            if self.settings.api_key_for_reads and not keyless:
                self._check_key(context)
            return work()
        except ServiceError as exc:
            status = exc.status
            code = _CODES.get(exc.status, grpc.StatusCode.INTERNAL)
            detail = exc.detail
            forget_frames(exc)  # the call's frames (its message, images) go now (round 24)
            if isinstance(exc, DeadlineExceeded):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                left = context.time_remaining()
                if left is not None and left < 1.0:  # the client's deadline, not the server's
                    detail = "The call's deadline passed before its inference finished."
            # gRPC refuses trailers over 16 KiB: a quoted 2 MB version cost the client its answer
            if len(detail) > MAX_DETAIL:
                detail = detail[: MAX_DETAIL - 3] + "..."
            context.abort(code, detail)
            raise  # abort raises; this line is for the type checker
        except BaseException:
            status = 499  # cancelled by the client (an abort of its own), or gRPC's own error
            raise
        finally:
            # only a served model's name is a label (a made-up name would add series without
            # bound, round 16), whatever the status, as over HTTP: refusals count (round 31)
            label = model if model in self.registry.names() else ""
            observe_request(f"grpc {method}", "POST", label, status, time.perf_counter() - t0)

    def _check_key(self, context: grpc.ServicerContext) -> None:
        if not self.settings.keyed:
            return
        got = call_key(context)
        if not key_matches(None if got is None else got.encode(), self.settings):
            raise Unauthorized(
                "This call needs the API key: send it once, as metadata 'x-api-key: <key>' or "
                "'authorization: Bearer <key>'."
            )

    def _on_loop(
        self, context: grpc.ServicerContext, coro: Coroutine[Any, Any, T], wait_s: float
    ) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        context.add_callback(future.cancel)  # the client went away: stop waiting in the queue
        try:
            return future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise DeadlineExceeded("The request deadline passed before inference.") from None
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "The call was cancelled.")
            raise

    # health and metadata -----------------------------------------------------------------
    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call(
            context, "ServerLive", lambda: pb.ServerLiveResponse(live=True), keyless=True
        )

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        ready = lambda: pb.ServerReadyResponse(ready=server_ready(self.registry, self.settings))  # noqa: E731
        return self._call(context, "ServerReady", ready, keyless=True)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def work() -> Any:
            try:
                _model(self.registry, request.name, request.version or None)
            except (NotReady, NotFound):  # as Triton: a name it does not serve is not ready
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return self._call(context, "ModelReady", work, request.name)

    def health(self, service: str, context: grpc.ServicerContext) -> int:
        """grpc.health.v1 Check: the server (ServerReady's rule) or one model (ModelReady's)."""
        if service in ("", SERVICE) or stopping():
            ready = lambda: SERVING if server_ready(self.registry, self.settings) else NOT_SERVING  # noqa: E731
            return self._call(context, "Health.Check", ready, keyless=True)

        def work() -> int:
            try:
                _model(self.registry, service, None)
            except NotReady:
                return NOT_SERVING
            return SERVING

        return self._call(context, "Health.Check", work, service)

    def health_status(self, service: str) -> int:
        """grpc.health.v1 Watch: Check's answer, SERVICE_UNKNOWN for a name that is not a
        model (the watch goes on: the model may come)."""
        if service in ("", SERVICE) or stopping():
            return SERVING if server_ready(self.registry, self.settings) else NOT_SERVING
        try:
            _model(self.registry, service, None)
        except NotReady:
            return NOT_SERVING
        except ServiceError:
            return SERVICE_UNKNOWN
        return SERVING

    def authorize_watch(self, service: str, context: grpc.ServicerContext) -> None:
        """A model's watch needs the key when reads do; the server-wide one never."""
        if service in ("", SERVICE) or not self.settings.api_key_for_reads:
            return
        try:
            self._check_key(context)
        except Unauthorized as exc:
            observe_request("grpc Health.Watch", "POST", "", 401, 0.0)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.detail)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call(
            context,
            "ServerMetadata",
            lambda: pb.ServerMetadataResponse(
                name="imgclass", version=__version__, extensions=EXTENSIONS
            ),
        )

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        def work() -> Any:
            loaded = _model(self.registry, request.name, request.version or None)
            meta = _metadata(loaded, self.registry.versions(loaded.model.bundle.metadata.name))
            out = pb.ModelMetadataResponse(
                name=meta["name"], versions=meta["versions"], platform=meta["platform"]
            )
            for kind in ("inputs", "outputs"):
                for t in meta[kind]:
                    getattr(out, kind).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
            return out

        return self._call(context, "ModelMetadata", work, request.name)

    # inference ---------------------------------------------------------------------------
    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._call(
            context, "ModelInfer", lambda: self._infer(request, context), request.model_name
        )

    def _infer(self, request: Any, context: grpc.ServicerContext) -> Any:
        """The call's message stays charged to the process's body budget (as an HTTP body
        would be) until the answer is built: 503 UNAVAILABLE when it does not fit."""
        size = request.ByteSize()
        budget: BodyBudget | None = getattr(self.state, "body_budget", None)
        if budget is None:
            return self._infer_held(request, context)

        async def reserve() -> None:
            budget.reserve(size)

        self._on_loop(context, reserve(), 5.0)
        try:
            return self._infer_held(request, context)
        finally:
            self.loop.call_soon_threadsafe(budget.release, size)

    def _infer_held(self, request: Any, context: grpc.ServicerContext) -> Any:
        received = arrived()  # a wait for a place counts, as an HTTP request's queue does
        loaded = _model(self.registry, request.model_name, request.model_version or None)
        meta = loaded.model.bundle.metadata
        spec = meta.input
        per_image = spec.height * spec.width * spec.channels
        n = self.settings.max_batch_images
        req = parse_request(request, n * per_image, n)
        tensor = _batch(req, loaded, self.settings)
        left = context.time_remaining()
        wait_s = min(self.settings.request_deadline_s, left if left is not None else 1e9)
        due = received + wait_s

        async def run() -> Any:
            schedulers: Schedulers = self.state.schedulers
            name = self.registry.serving_name(loaded)
            scheduler = schedulers.get(name, loaded.model, spec)
            scheduler.admit()
            if tensor.items is not None:
                return (await scheduler.submit(tensor.items, deadline=due)).output
            assert tensor.array is not None
            return (await scheduler.submit_tensor(tensor.array, deadline=due)).output

        out = self._on_loop(context, run(), wait_s + 1.0)
        outs = outputs(req, loaded, out.probs, out.embedding)
        return response_message(meta.name, meta.version, req.id, outs)


class GrpcServer:
    """The gRPC binding of one server process: started and stopped by the app's lifespan."""

    def __init__(self, state: Any, loop: asyncio.AbstractEventLoop) -> None:
        settings: Settings = state.settings
        check_grpc_port(settings.host, settings.grpc_port)  # before grpc starts its threads
        threads = GRPC_CALLS + GRPC_WAITING + HEALTH_THREADS + WATCHES
        self.server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="grpc"),
            options=server_options(settings),
            maximum_concurrent_rpcs=threads + GRPC_PENDING,
        )
        servicer = OipServicer(state, loop)
        self.watchdog = MessageWatchdog(settings.body_timeout_s)
        gate = CallGate(
            GRPC_CALLS,
            per_peer=GRPC_PER_PEER,
            waiting=GRPC_WAITING,
            wait_s=settings.request_deadline_s,
        )
        oip = handlers(servicer, gate, self.watchdog)
        self.health = HealthService(
            servicer.health,
            servicer.health_status,
            servicer.authorize_watch,
            self.watchdog,
            CallGate(HEALTH_THREADS, "health checks", per_peer=HEALTH_PER_PEER),
            CallGate(
                WATCHES,
                "health watches",
                per_peer=WATCHES_PER_PEER,
                refusal=grpc.StatusCode.UNIMPLEMENTED,
                why="A client's own health checking then treats the server as healthy "
                "without watching it; Health/Check answers as usual.",
            ),
        )
        self.server.add_generic_rpc_handlers((oip, self.health.handler()))
        bare = settings.host.strip("[]")  # `::`, `[::1]` or `::1` (IPv6), as HTTP takes them
        self.address = (
            f"[{bare}]:{settings.grpc_port}" if ":" in bare else f"{bare}:{settings.grpc_port}"
        )
        # the HTTP port's certificate and key when TLS is on (checked at start-up)
        bound = bind(self.server, self.address, settings.tls)
        self.grace_s = settings.body_timeout_s + STOP_AFTER_BODY_S  # as the parent allows
        if not bound:
            self.server.stop(None)
            raise ConfigurationError(f"cannot listen on {self.address} (IMGCLASS_GRPC_PORT)")

    def start(self) -> None:
        self.server.start()
        # watching clients hear NOT_SERVING before the port closes
        self.release = PortRelease(self.server, self.grace_s, self.health.stop)
        logger.info("Open Inference Protocol over gRPC on %s", self.address)

    def stop(self, grace_s: float = 2.0) -> None:
        self.release.close(grace_s)
        self.watchdog.stop()
