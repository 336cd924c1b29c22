"""Render every error (ours, routing, validation, unexpected) as application/problem+json
(RFC 9457), or as {"error": "..."} under /v2, the Open Inference Protocol's shape that its
clients (tritonclient, KServe) read. The HTTP half of app/errors.py: only the server imports it."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.catalog.sqlite import schema_gone
from app.errors import (
    PROBLEM_BASE,
    PROBLEM_JSON,
    NotReady,
    Overloaded,
    ServiceError,
    forget_frames,
)
from app.fsutil import storage_error

logger = logging.getLogger(__name__)


def is_oip_path(path: str) -> bool:
    """A path of the Open Inference Protocol (/v2...), whose errors are {"error": "..."}."""
    return path == "/v2" or path.startswith("/v2/")


def problem_response(
    status: int,
    title: str,
    detail: str,
    slug: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """problem+json; {"error": detail} when `extra["instance"]` is a /v2 path (routing,
    validation and unexpected errors reach /v2 clients outside the v2 routes' own handler)."""
    instance = extra.get("instance")
    if isinstance(instance, str) and is_oip_path(instance):
        return JSONResponse({"error": detail}, status_code=status, headers=headers)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

Handler = Callable[[Request, Exception], Awaitable[JSONResponse]]


def forgetting(handler: Handler) -> Handler:
    """`handler`, then forget_frames: for errors answered as a client's 4xx, whose frames
    nobody reads again (unexpected errors keep theirs for the log)."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        try:
            return await handler(request, exc)
        finally:
            forget_frames(exc)

    return handle


def _routed(scope: dict[str, Any]) -> bool:
    """Some route of the app matches this scope (its path and method)."""
    return any(r.matches(scope)[0] is Match.FULL for r in scope["app"].router.routes)


def path_methods(request: Request) -> list[str]:
    """Every method some route of the app fully matches on this request's path (included
    routers too: each route's own `matches`, no router internals)."""
    return [m for m in METHODS if _routed({**request.scope, "method": m})]


def install_error_handlers(app: FastAPI) -> None:
    """Render every error (ours, routing, validation, unexpected) as problem+json."""

    async def service_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceError)
        if isinstance(exc, NotReady):  # expected while bundles load at start-up: not an error
            logger.info("%s %s: %s", request.method, request.url.path, exc.detail)
        elif exc.status >= 500 and not isinstance(exc, Overloaded):  # no flood under overload
            logger.error("%s %s: %s", request.method, request.url.path, exc.detail)
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else {}
        retry = exc.extra.get("retry_after_s")
        if isinstance(retry, int | float):
            headers["Retry-After"] = str(max(1, round(retry)))
        if exc.status == 408:  # the rest of the body may still come: never read it
            headers["Connection"] = "close"
        if is_oip_path(request.url.path):
            return JSONResponse({"error": exc.detail}, status_code=exc.status, headers=headers)
        return JSONResponse(
            exc.to_problem(request.url.path),
            status_code=exc.status,
            media_type=PROBLEM_JSON,
            headers=headers,
        )

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Not found", 405: "Method not allowed", 413: "Payload too large"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route {request.method} {request.url.path}; see /docs for the API."
            bare = request.url.path.rstrip("/")
            if bare != request.url.path and bare and _routed({**request.scope, "path": bare}):
                # no redirect (a 307 with no body: curl printed nothing for POST .../predict/)
                detail = f"No route {request.method} {request.url.path}; did you mean {bare}?"
        headers = dict(exc.headers or {})  # a 405's Allow (RFC 9110 15.5.6: it must be sent)
        if exc.status_code == 405 and headers.get("Allow"):
            # Starlette names only the first route of the path; GET and POST on one path are
            # two routes here (/v1/catalogs), and Allow must list every method of the resource.
            # /v2 has one route a path, and a catch-all (app/api/v2.py) that takes every method
            # but OPTIONS: Starlette's Allow is the right one there.
            own = [] if is_oip_path(request.url.path) else path_methods(request)
            methods = set(own or headers["Allow"].split(", "))
            if "GET" in methods:
                methods.add("HEAD")  # app/api/head.py answers it
            headers["Allow"] = allowed = ", ".join(sorted(methods))
            detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}."
        slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(
            exc.status_code, "http-error"
        )
        return problem_response(
            exc.status_code,
            titles.get(exc.status_code, "HTTP error"),
            detail,
            slug,
            headers=headers or None,
            instance=request.url.path,
        )

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": list(e.get("loc", ())),
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors]
        return problem_response(
            422,
            "Invalid request",
            "; ".join(parts) or "The request is not valid.",
            "invalid-request",
            instance=request.url.path,
            errors=errors,
        )

    async def storage(request: Request, exc: Exception) -> JSONResponse:
        """Disk full, read-only data folder, locked database: the machine, not a bug. Handled
        here (not by `unexpected`, which Starlette re-raises into a traceback) as 507/503."""
        mapped = storage_error(exc) or schema_gone(exc)
        if mapped is None:
            return await unexpected(request, exc)
        logger.warning("storage failure under %s: %s", request.url.path, exc)
        return await service_error(request, mapped)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(
            500,
            "Internal server error",
            "An unexpected error occurred; it has been logged.",
            "internal-error",
            instance=request.url.path,
        )

    app.add_exception_handler(ServiceError, forgetting(service_error))
    app.add_exception_handler(StarletteHTTPException, forgetting(http_error))
    app.add_exception_handler(RequestValidationError, forgetting(validation_error))
    app.add_exception_handler(OSError, storage)
    app.add_exception_handler(sqlite3.Error, storage)
    app.add_exception_handler(Exception, unexpected)
