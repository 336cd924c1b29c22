"""Logging configuration (done once at start-up), request ids and the per-request access log.

`RequestObserver` is the outermost ASGI middleware: it takes a valid incoming X-Request-ID
(or makes one), echoes it, puts it in a contextvar that a logging filter copies onto every
record of that request (threads started by run_in_threadpool inherit it; the scheduler's
worker threads set it with `logging_as` while they work for a request), counts bytes in and
out, records the Prometheus request metrics and writes one access-log line.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import telemetry
from app.log_format import configure_app_logger, request_id_var
from app.settings import Settings

access_logger = logging.getLogger("app.access")

REQUEST_ID_HEADER: Final = "x-request-id"
# Accepted incoming ids: 1-128 characters, letters, digits and . _ : + = / @ - (UUIDs, trace
# ids, ULIDs). Anything else is replaced by a fresh id, so log lines stay one clean token.
_VALID_ID: Final = re.compile(r"[A-Za-z0-9._:+=/@-]{1,128}")
_MODEL_PATH: Final = re.compile(r"^/v[12]/models/([^/]+)")
# The `method` label's values: the HTTP server parses some 40 methods (PROPFIND, MKCOL, ...),
# and every one sent to every route and model was a new imgclass_requests_total series.
METRIC_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED: Final = "<unmatched>"  # the route label of 404s and requests refused before routing


def method_label(method: str) -> str:
    """The method as a metric label: one of METRIC_METHODS, else 'other' (bounded)."""
    return method if method in METRIC_METHODS else "other"


@contextmanager
def logging_as(request_id: str) -> Iterator[None]:
    """Log under `request_id` in this thread for the duration (a worker serving a request's
    work; several requests' ids joined by commas for work shared by a batch)."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


def log_access(
    method: str,
    path: str,
    route: str,
    model: str,
    status: int,
    seconds: float,
    bytes_in: int,
    bytes_out: int,
) -> None:
    """A request's access log line (IMGCLASS_ACCESS_LOG), under the current request id."""
    access_logger.info(
        "%s %s %d %.1fms",
        method,
        path,
        status,
        seconds * 1e3,
        extra={
            "method": method,
            "path": path,
            "route": route,
            "model": model,
            "status": status,
            "latency_ms": round(seconds * 1e3, 3),
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
        },
    )


def valid_request_id(value: str | None) -> str | None:
    return value if value is not None and _VALID_ID.fullmatch(value) else None


def configure_logging(settings: Settings) -> None:
    handler = configure_app_logger(settings.log_format, settings.log_level)
    if settings.log_format == "json":
        # uvicorn's own lines (start-up, shutdown, protocol warnings, ASGI errors) as JSON too,
        # so a JSON log pipeline never meets a line it cannot parse ("uvicorn.error" propagates
        # to "uvicorn").
        logging.getLogger("uvicorn").handlers[:] = [handler]
        # uvicorn writes its own access line only while "uvicorn.access" has a handler. `python
        # -m app` turns it off (the app logs each request itself, as app.access): giving it a
        # handler here doubled every request's access line. Reformat it only where uvicorn
        # already writes it (a server started with uvicorn's own access log on).
        access = logging.getLogger("uvicorn.access")
        if access.handlers:
            access.handlers[:] = [handler]


def _route_template(scope: Scope) -> str:
    """The matched route's template ('/v1/models/{name}/predict'), never the raw path, so
    metric labels stay bounded; '<unmatched>' for 404s and requests refused before routing."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    endpoint = scope.get("endpoint")
    if not path and endpoint is not None:
        # A plain Starlette route (/openapi.json, /docs) matched but leaves no "route" in the
        # scope, only its endpoint: counted as '<unmatched>' with status 200 (round 42).
        routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
        path = next((getattr(r, "path", None) for r in routes if _endpoint(r) == endpoint), None)
    return path if isinstance(path, str) and path else UNMATCHED


def _endpoint(route: object) -> object:
    return getattr(route, "endpoint", None)


class RequestObserver:
    """Request id, metrics and access log for every HTTP request (pure ASGI)."""

    def __init__(
        self, app: ASGIApp, *, known_models: Callable[[], Collection[str]], access_log: bool
    ) -> None:
        self.app = app
        self.known_models = known_models
        self.access_log = access_log
        # also read by answers written before the app (app/raw_answers.py)
        access_logger.disabled = not access_log

    def _model(self, path: str) -> str:
        match = _MODEL_PATH.match(path)
        if match is None:
            return ""
        # `name@version` (a taught model's older version) counts under its name; a name the
        # registry does not serve is "", so client input never becomes a label value.
        name = match.group(1).partition("@")[0]
        return name if name in self.known_models() else ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(REQUEST_ID_HEADER.encode())
        rid = valid_request_id(incoming.decode("latin-1") if incoming else None)
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        path: str = scope.get("path", "")
        model = self._model(path)
        counts: dict[str, Any] = {"in": 0, "out": 0, "status": 500}
        t0 = time.perf_counter()

        async def receive_counted() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
                message["headers"] = [
                    *[
                        (k, v)
                        for k, v in message.get("headers", [])
                        if k.lower() != b"x-request-id"
                    ],
                    (b"x-request-id", rid.encode()),
                ]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        telemetry.in_flight(model, +1)
        try:
            await self.app(scope, receive_counted, send_observed)
        finally:
            telemetry.in_flight(model, -1)
            seconds = time.perf_counter() - t0
            route = _route_template(scope)
            method = scope.get("method", "")
            status = int(counts["status"])
            telemetry.observe_request(route, method_label(method), model, status, seconds)
            if self.access_log:
                log_access(method, path, route, model, status, seconds, counts["in"], counts["out"])
            request_id_var.reset(token)
