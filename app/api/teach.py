"""Teach endpoints: train a classifier from a catalog (a job), follow or cancel the job, delete a
taught model, download any model as one standalone ONNX file."""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from app.api.big_answers import AnswerGate
from app.api.catalogs.items import SKIP_DUPLICATES_TEXT
from app.api.catalogs.openapi import ERRORS
from app.api.deps import CatalogsDep, ReadAuth, RegistryDep, SettingsDep, WriteAuth
from app.api.disconnect import ClientGone, unless_gone
from app.api.embed_gate import embed_gate, embed_slot
from app.api.forms import read_body
from app.api.json_bodies import json_body_openapi, read_model
from app.api.query_names import DIGITS
from app.api.stored_file import StoredFileResponse, check_if_match, none_match
from app.batching import Schedulers
from app.catalog.service import CatalogService
from app.catalog.types import normal_label
from app.errors import InvalidRequest, ModelNotFound
from app.imaging import sniff_format
from app.model_refs import split_ref
from app.registry import ModelRegistry
from app.settings import Settings
from app.teach.compose import (
    NAME_RE,
    check_model_name,
    check_room,
    delete_taught,
    delete_version,
)
from app.teach.core import check_free_name, check_positive_label, room_from, taught_root
from app.teach.download import open_download
from app.teach.errors import ShippedModel
from app.teach.examples import check_labels, limits_from
from app.teach.folder import BatchLimits, ZipLimits, ingest, zip_images
from app.teach.ingest_report import WARNINGS_TEXT, IngestReport
from app.teach.job_store import Job, Status
from app.teach.jobs import JobRunner
from app.text_fields import ModelDescription

MAX_LISTED_JOBS = 100  # jobs per listing (500 finished ones are kept; filter by status, model)
SMALL_JOB_LISTING = 10  # listings of more jobs are built as big answers (app.api.big_answers)

router = APIRouter(tags=["teach"])


class TeachRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        description="name of the new model (a new version if it exists)",
        json_schema_extra={"pattern": NAME_RE.pattern, "maxLength": 64},  # checked by hand
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="validation split seed")
    positive_label: str | None = Field(
        default=None,
        description="for two classes: ask for a yes/no decision on this label (a calibrated "
        "threshold; predictions carry a `decision`). Without it a yes/no decision is made only "
        'when the other label is named like "not X", "no X", "other" or "background"; two '
        "ordinary categories are ranked like any classes, with no decision",
    )
    description: ModelDescription = ""

    @field_validator("positive_label")
    @classmethod
    def _as_stored(cls, value: str | None) -> str | None:
        """Matched as catalog labels are stored: trimmed, NFC (app.catalog.types)."""
        return None if value is None else normal_label(value)


class JobView(BaseModel):
    id: str
    url: str
    catalog: str
    model: str
    status: str = Field(description="queued, running, succeeded, failed or cancelled")
    progress: float = Field(ge=0, le=1)
    phase: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool
    warnings: list[str]
    error: dict[str, Any] | None = Field(description="problem details when status is failed")
    result: dict[str, Any] | None = Field(
        description="on success: model, version, labels, held-out metrics with n, summary"
    )


class JobList(BaseModel):
    jobs: list[JobView] = Field(description="newest first, at most `limit`")
    total: int = Field(
        description="jobs matching the filters (finished jobs beyond the newest 500 are not kept)"
    )


class ZipCopy(BaseModel):
    name: str = Field(description="the entry's path in the zip")
    label: str
    duplicate_of: str = Field(description="id of the item it copies")
    score: float = Field(description="cosine similarity of the two embeddings (>= 0.99999)")


class ZipIngested(BaseModel):
    catalog: str
    added: dict[str, int] = Field(description="images added per class (label)")
    skipped: list[dict[str, str]] = Field(
        description="files not added, each with the reason (the first 100; names cut at 256 "
        "characters)"
    )
    skipped_count: int = Field(default=0, description="files not added, all of them")
    duplicates_skipped: int = Field(default=0, description="copies left out (skip_duplicates)")
    duplicates: list[ZipCopy] = Field(
        default_factory=list,
        description="with skip_duplicates=true: the images left out as copies of an item (the "
        "first 100)",
    )
    warnings: list[dict[str, str]] = Field(default_factory=list, description=WARNINGS_TEXT)


class DeletedModel(BaseModel):
    name: str
    versions: list[str]


def get_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.teach
    return runner


RunnerDep = Annotated[JobRunner, Depends(get_runner)]


def job_view(job: Job) -> JobView:
    fields = {k: v for k, v in asdict(job).items() if k in JobView.model_fields}
    return JobView(url=f"/v1/jobs/{job.id}", **fields)


@router.post(
    "/v1/catalogs/{name}/train",
    status_code=202,
    response_model=JobView,
    dependencies=[WriteAuth],
    openapi_extra=json_body_openapi(TeachRequest),
    responses={
        404: {"description": "unknown catalog"},
        409: {
            "description": "name of a shipped model, a job already teaches this model, or "
            "the model has IMGCLASS_TEACH_MAX_VERSIONS versions (or IMGCLASS_TEACH_MAX_MODELS "
            "taught models are kept)"
        },
        413: {"description": "too many classes or items"},
        422: {"description": "invalid name, or fewer than 2 classes with 2+ distinct pictures"},
    },
)
async def train(
    name: str,
    request: Request,
    response: Response,
    runner: RunnerDep,
    registry: RegistryDep,
    service: CatalogsDep,
    settings: SettingsDep,
) -> JobView:
    """Teach a classifier whose classes are the catalog's item labels (unlabelled items are
    ignored). Answers 202 with the job; poll `GET /v1/jobs/{id}` for progress and metrics."""
    # Read here (capped, depth-checked), not as a FastAPI body parameter: the key check runs
    # before any byte of the body is read.
    body = await read_model(request, TeachRequest, settings.max_json_bytes, "teach request")
    check_free_name(registry, body.model)
    # Room for one more version (checked again, under the lock, when the job publishes).
    await run_in_threadpool(check_room, taught_root(settings), body.model, room_from(settings))
    # The cheap checks (catalog exists, enough classes and items) answer now, not in the job.
    counts = await run_in_threadpool(check_labels, service, name, limits_from(settings))
    if body.positive_label is not None and body.positive_label not in counts:
        raise InvalidRequest(
            f"positive_label {body.positive_label!r} is not a label of catalog {name!r}; "
            f"its labels: {', '.join(sorted(counts))}."
        )
    check_positive_label(body.positive_label, sorted(counts))
    # Off the event loop: it takes the job folder's lock and reads and writes files.
    job = await run_in_threadpool(
        runner.submit, name, body.model, body.model_dump(exclude={"model"})
    )
    view = job_view(job)
    response.headers["Location"] = view.url
    return view


@router.post(
    "/v1/catalogs/{name}/items:zip",
    response_model=ZipIngested,
    dependencies=[WriteAuth],
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "a zip file (raw body): one top-level folder per class",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    responses={
        **ERRORS,
        409: {"description": "stale catalog: the served model is not the build it was made with"},
        413: {
            "description": "the zip over IMGCLASS_TEACH_MAX_ZIP_BYTES, or more entries, images "
            "or unpacked bytes than the caps allow"
        },
        422: {"description": "not a readable zip (an image sent here, say), or one of no files"},
    },
)
async def add_zip(
    name: str,
    request: Request,
    service: CatalogsDep,
    settings: SettingsDep,
    skip_duplicates: Annotated[bool, Query(description=SKIP_DUPLICATES_TEXT)] = False,
) -> ZipIngested:
    """Add the images of a zip to a catalog, labelled by their top-level folder. Bad images,
    hidden files and unsafe paths are skipped and listed; caps on size, entries, images,
    their header-declared pixels (checked before decoding), unpacked bytes and compression
    ratio. With `skip_duplicates=true` an image that copies an item of the same label (e.g.
    the zip sent again after an upload cut off mid-way) is left out and listed."""
    # 404 before reading the body; 409 when the catalog's model was replaced by another build
    await run_in_threadpool(lambda: service.bound_model(service.get(name)))
    await embed_gate(request).refuse_if_full()  # 503 before the body when the gate is full
    return await _add_zip(name, request, service, settings, skip_duplicates)


async def _add_zip(
    catalog: str,
    request: Request,
    service: CatalogService,
    settings: Settings,
    skip_duplicates: bool = False,
) -> ZipIngested:
    data = await read_body(request, settings.teach_max_zip_bytes)
    image = sniff_format(data[:64])
    if image is not None:  # it said only "not a readable zip file (File is not a zip file)"
        raise InvalidRequest(
            f"The upload is a {image} image, not a zip; add single images with POST "
            f"/v1/catalogs/{catalog}/items, or send a zip of class folders here."
        )
    limits = ZipLimits(
        max_images=settings.teach_max_items,
        max_pixels=settings.teach_zip_max_pixels,
        max_entry_bytes=settings.max_image_bytes,
    )
    batches = BatchLimits(max_pixels=settings.max_request_pixels)

    gone = threading.Event()  # the client left: no more images are read (round 19)

    def work() -> IngestReport:
        report = IngestReport()
        images = zip_images(data, report, limits)
        kept = itertools.takewhile(lambda _: not gone.is_set(), images)
        return ingest(service, catalog, kept, report, batches, skip_duplicates=skip_duplicates)

    # The slot is held while embedding, not while the body arrives; the unpack turn bounds
    # how many zips of this process are unpacked at once. A client that leaves stops the
    # unpacking after the batch in hand (what is committed stays, as when it had waited).
    async with embed_slot(request), embed_gate(request).unpack_turn():
        try:
            report = await unless_gone(request, run_in_threadpool(work))
        except ClientGone:
            gone.set()
            raise
    return ZipIngested(
        catalog=catalog,
        added=report.added,
        skipped=report.skipped,
        skipped_count=report.skipped_count,
        duplicates_skipped=report.duplicates_count,
        duplicates=[ZipCopy(**asdict(c)) for c in report.duplicates],
        warnings=report.warnings,
    )


@router.get("/v1/jobs", response_model=JobList, dependencies=[ReadAuth])
async def list_jobs(
    request: Request,
    runner: RunnerDep,
    status: Annotated[Status | None, Query(description="only jobs with this status")] = None,
    model: Annotated[str | None, Query(max_length=64, description="only jobs teaching it")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED_JOBS), DIGITS] = 50,
) -> Response:
    """Teach jobs of every server process, newest first: to find a job again after a reload,
    or to see what is queued. A finished job carries its result (with 100 long labels, about
    1 MB), so a listing of more than a few is built as a big answer (one at a time per process,
    held in the body budget)."""

    def build() -> bytes:
        jobs, total = runner.find(status=status, model=model, limit=limit)
        return JobList(jobs=[job_view(j) for j in jobs], total=total).model_dump_json().encode()

    answers: AnswerGate = request.app.state.answers
    return await answers.respond(request, limit, build, large=limit > SMALL_JOB_LISTING)


@router.get("/v1/jobs/{job_id}", response_model=JobView, dependencies=[ReadAuth])
async def get_job(job_id: str, runner: RunnerDep) -> JobView:
    """A teach job's status, progress (0..1) and phase; its result or error when done."""
    return job_view(await run_in_threadpool(runner.get, job_id))


@router.delete(
    "/v1/jobs/{job_id}",
    response_model=JobView,
    dependencies=[WriteAuth],
    responses={
        404: {"description": "unknown job"},
        409: {
            "description": "the job already ended (`job-ended`), or is publishing its model "
            "(`job-publishing`): nothing to cancel"
        },
    },
)
async def cancel_job(job_id: str, runner: RunnerDep) -> JobView:
    """Cancel a queued job, or ask a running one to stop (`cancel_requested`; it ends
    `cancelled` at its next step). A job that already ended, or that is past its last step
    (writing and loading its model), is a 409: nothing to cancel."""
    return job_view(await run_in_threadpool(runner.cancel, job_id))


def _delete(registry: ModelRegistry, root: Any, name: str) -> DeletedModel:
    base, version = split_ref(name)
    check_model_name(base)
    # a shipped folder that is not enabled too (round 28: 404 "no taught model"), as teach
    # refuses its name
    if registry.is_shipped(base) or (registry.models_dir / base).is_dir():
        raise ShippedModel(
            f"{base!r} is a shipped model (read from the models folder); only taught models "
            "can be deleted."
        )
    removed = delete_version(root, base, version) if version else delete_taught(root, base)
    if not removed:
        raise ModelNotFound(f"No taught model {name!r}.")
    registry.refresh()
    return DeletedModel(name=base, versions=removed)


@router.delete("/v1/models/{name}", response_model=DeletedModel, dependencies=[WriteAuth])
async def delete_model(
    name: str, request: Request, registry: RegistryDep, settings: SettingsDep
) -> DeletedModel:
    """Delete a taught model: every version, or one with `name@version`. Shipped models: 409."""
    deleted = await run_in_threadpool(_delete, registry, taught_root(settings), name)
    schedulers: Schedulers = request.app.state.schedulers
    await run_in_threadpool(lambda: schedulers.retire(registry.serving_names()))
    return deleted


@router.get(
    "/v1/models/{name}/download",
    dependencies=[ReadAuth],
    response_class=StoredFileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        304: {"description": "not modified"},
        206: {
            "description": "the requested byte range (Range; If-Range with this ETag)",
            "content": {"application/octet-stream": {}},
        },
        412: {"description": "If-Match names another build"},
    },
)
async def download_model(
    name: str, request: Request, registry: RegistryDep, settings: SettingsDep
) -> Response:
    """The model as one ONNX file that plain onnxruntime runs: input "image" (NHWC float32 as
    the model's `input` spec says), outputs "probs" and "embedding". For a taught model this
    joins its backbone and head into one graph. The ETag names the exact build (the bundle's
    model digest, and its backbone's), so a download resumed with Range + If-Range after a
    re-teach gets the whole new file instead of splicing two versions; If-Match with another
    build's ETag gets 412."""
    loaded = registry.get(name)
    meta = loaded.model.bundle.metadata
    build = meta.artifact.sha256[:32] + (f"-{meta.backbone.sha256[:16]}" if meta.backbone else "")
    # Model names are [a-z0-9_-] and versions digits: the filename needs no quoting.
    headers = {
        "Content-Disposition": f'attachment; filename="{meta.name}-v{meta.version}.onnx"',
        "ETag": f'"{build}"',
        # `name` alone follows re-teaches: a cache checks the ETag each time (a 304).
        "Cache-Control": "private, no-cache" if settings.api_key_for_reads else "no-cache",
    }
    check_if_match(request.headers.get("if-match"), headers["ETag"], f"model {name!r}")
    if none_match(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    file = await run_in_threadpool(open_download, loaded)
    return StoredFileResponse(file, "application/octet-stream", headers)
