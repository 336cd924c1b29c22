"""Typed service errors (status, type, title). Free of FastAPI so the shared core (imaging,
runtime, catalogs, teach) can raise them; app/api/problems.py renders them as problem+json."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "/problems/"


class ServiceError(Exception):
    """Base of every error the service reports to clients."""

    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal server error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(ServiceError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class Unauthorized(ServiceError):
    status = 401
    slug = "unauthorized"
    title = "Missing or wrong API key"


class NotFound(ServiceError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ModelNotFound(NotFound):
    slug = "model-not-found"
    title = "Model not found"


class Conflict(ServiceError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class HeadersTooLarge(ServiceError):
    status = 431
    slug = "request-header-fields-too-large"
    title = "Request header fields too large"


class RequestTimeout(ServiceError):
    """The head or the body did not arrive in time; the connection is closed with the answer."""

    status = 408
    slug = "request-timeout"
    title = "Request timeout"


class UnsupportedMediaType(ServiceError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class InvalidImage(ServiceError):
    status = 422
    slug = "invalid-image"
    title = "Invalid image"


class InvalidRequest(ServiceError):
    status = 422
    slug = "invalid-request"
    title = "Invalid request"


class NotReady(ServiceError):
    status = 503
    slug = "not-ready"
    title = "Not ready"


class Overloaded(ServiceError):
    """The model's queue is full: answered at once, with Retry-After, instead of waiting."""

    status = 503
    slug = "overloaded"
    title = "Server busy"


class DeadlineExceeded(ServiceError):
    """The request waited past request_deadline_s; it was not (or no longer) run."""

    status = 503
    slug = "deadline-exceeded"
    title = "Deadline exceeded"


class InsufficientStorage(ServiceError):
    """The data folder's disk (or quota) is full: nothing was stored; free space and retry."""

    status = 507
    slug = "insufficient-storage"
    title = "Insufficient storage"


class StorageUnavailable(ServiceError):
    """The data folder is read-only, not writable by the service, or its database is locked."""

    status = 503
    slug = "storage-unavailable"
    title = "Storage unavailable"


class ConfigurationError(Exception):
    """A setting that cannot be honoured (e.g. CUDA requested where it is absent). Stops start-up."""


def forget_frames(exc: BaseException) -> None:
    """Drop the tracebacks of an answered error and of the errors it chains to.

    An error raised through a Future sits in a reference cycle: the Future holds the error,
    whose traceback holds the frame that awaits the Future (anyio's thread pool for HTTP
    routes; the event loop's for gRPC calls). Reference counting cannot
    free a cycle, so every local of every frame in the traceback (a refused 5 MB JSON body,
    its parsed text) stayed until the next full collection, which an idle or refusing worker
    may not run for a long time: 600 refused 5.4 MB bodies left a worker about 280 MB above
    its fresh size at rest (round 23; docs/hardening.md). Without the traceback nothing
    reaches the frames and they go as soon as the answer is rendered."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.__traceback__ = None
        stack.extend(e for e in (node.__cause__, node.__context__) if e is not None)


def too_complex(fmt: str, what: str, usual: str) -> PayloadTooLarge:
    """A 413 for a file whose structure alone (segments, chunks, blocks) costs too much."""
    return PayloadTooLarge(
        f"The {fmt} file has {what} (ordinary files have {usual}); reading them would take "
        "too long, so it is refused.",
    )


def batch_position(i: int, name: str | None = None) -> str:
    """How a detail names the image at 0-based position i of a batch: counted from 1, as people
    count, with the problem's own `image_index` beside it so the two never seem to disagree."""
    return f"image {i + 1} (" + (f"{name!r}, " if name else "") + f"image_index {i})"
