"""Typed errors of teaching (rendered as problem+json by app/errors.py's one handler)."""

from __future__ import annotations

from app.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, ServiceError


class InvalidModelName(InvalidRequest):
    slug = "invalid-model-name"
    title = "Invalid model name"


class ModelNameTaken(Conflict):
    slug = "model-name-taken"
    title = "Model name belongs to a shipped model"


class NotEnoughExamples(InvalidRequest):
    slug = "not-enough-examples"
    title = "Not enough labelled examples to teach"


class TeachLimitExceeded(PayloadTooLarge):
    slug = "teach-limit"
    title = "Too many classes or items for one teach job"


class TaughtModelLimit(Conflict):
    slug = "taught-model-limit"
    title = "No room for another taught model or version"


class JobNotFound(NotFound):
    slug = "job-not-found"
    title = "Job not found"


class JobConflict(Conflict):
    slug = "job-conflict"
    title = "A job for this model is already queued or running"


class JobEnded(Conflict):
    slug = "job-ended"
    title = "Job already ended"


class JobPublishing(Conflict):
    slug = "job-publishing"
    title = "Job past its last step"


class JobQueueFull(ServiceError):
    status = 503
    slug = "job-queue-full"
    title = "Too many teach jobs waiting"


class ShippedModel(Conflict):
    slug = "shipped-model"
    title = "Shipped models cannot be changed through the API"


class TeachCancelled(Exception):
    """Raised inside a job when its cancellation was requested."""
