"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) routes over the served bundles.

Input `image` is either BYTES (encoded image files, one per element: base64 strings in JSON or
raw bytes with the binary-data extension), decoded by the same ingestion policy as /v1, or an
FP32 tensor of the model's own input shape. Errors use the protocol's shape {"error": "..."}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import __version__
from app.api.deps import ReadAuth, RegistryDep, SettingsDep
from app.api.disconnect import unless_gone
from app.api.forms import read_body
from app.api.health import server_ready
from app.api.heavy_bodies import HeavyBodyGate
from app.batching import Schedulers
from app.errors import (
    BadRequest,
    ModelNotFound,
    PayloadTooLarge,
    ServiceError,
    forget_frames,
)
from app.inflate import codings, inflate
from app.model_refs import VERSION_SEP
from app.numtext import ascii_uint
from app.oip import (
    BYTES,
    FP32,
    INLINE_JSON_BYTES,
    InferRequest,
    InputTensor,
    parse_infer_request,
)
from app.oip_outputs import decision_metadata, outputs
from app.oip_response import encode_response
from app.registry import LoadedModel, ModelRegistry
from app.settings import Settings

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data", "classification"]


def oip_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class OipRoute(APIRoute):
    """Renders every failure of a /v2 route (its dependencies included) as {"error": ...}."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (ServiceError, RequestValidationError, StarletteHTTPException) as exc:
                try:
                    return _answer(request, exc)
                finally:  # its frames (the body, the decoded image) go now, as for /v1
                    forget_frames(exc)

        return route


def _answer(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ServiceError):
        request.state.error_detail = exc.detail
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        retry = exc.extra.get("retry_after_s")
        if retry is not None:
            headers = {"Retry-After": str(retry)}
        if exc.status == 408:  # the rest of the body may still come: never read it
            headers = {"Connection": "close"}
        return oip_error(exc.status, exc.detail, headers)
    if isinstance(exc, RequestValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return oip_error(400, "; ".join(parts) or "invalid request")
    assert isinstance(exc, StarletteHTTPException)
    return oip_error(exc.status_code, str(exc.detail))


router = APIRouter(prefix="/v2", tags=["open inference protocol v2"], route_class=OipRoute)


def _model(registry: ModelRegistry, name: str, version: str | None) -> LoadedModel:
    versions = registry.versions(name) if version is not None else []
    if version is not None and version in versions:
        # A taught model's older version: /versions/{v} is the protocol's name@version.
        return registry.get(f"{name}{VERSION_SEP}{version}")
    try:
        loaded = registry.get(name)
    except ModelNotFound as exc:
        if name == "stats":  # tritonclient's get_inference_statistics() with no model name
            raise ModelNotFound(
                f"{exc.detail} The statistics extension (GET /v2/models/stats) is not served; "
                "/metrics has the server's counters."
            ) from None
        raise
    have = loaded.model.bundle.metadata.version
    if version is not None and version != have:
        served = ", ".join(repr(v) for v in versions) or repr(have)
        raise ModelNotFound(f"Model {name!r} has no version {version!r}; served: {served}.")
    return loaded


@router.get("", dependencies=[ReadAuth])
def server_metadata() -> dict[str, Any]:
    """Server metadata: name, version and the protocol extensions implemented."""
    return {"name": "imgclass", "version": __version__, "extensions": EXTENSIONS}


@router.get("/health/live")
def live() -> dict[str, bool]:
    """The process answers (says nothing about models)."""
    return {"live": True}


class ServerReady(BaseModel):
    ready: bool


@router.get(
    "/health/ready",
    response_model=ServerReady,
    responses={503: {"model": ServerReady, "description": "not ready: ready is false"}},
)
def ready(registry: RegistryDep, settings: SettingsDep) -> JSONResponse:
    """200 when the server is ready for inference (the /readyz rule for models; the data folder
    is not checked here: predictions do not need it), else 503."""
    ok = server_ready(registry, settings)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


def _metadata(loaded: LoadedModel, versions: list[str]) -> dict[str, Any]:
    meta = loaded.model.bundle.metadata
    spec = meta.input
    outs = [{"name": meta.outputs.probs.name, "datatype": FP32, "shape": [-1, meta.num_classes]}]
    if meta.outputs.embedding is not None:
        emb = meta.outputs.embedding
        outs.append({"name": emb.name, "datatype": FP32, "shape": [-1, emb.dim]})
    decision = decision_metadata(loaded)  # a yes/no model: /v1's verdict, its threshold
    if decision is not None:
        outs.append(decision)
    doc: dict[str, Any] = {
        "name": meta.name,
        "versions": versions or [meta.version],  # every version /versions/{v} can address
        "platform": "onnxruntime_onnx",
        # One input, listed once (clients key inputs by name). It takes encoded image files
        # (BYTES); the model's own FP32 tensor is the other accepted form, named in its
        # parameters (OIP parameter values are strings, numbers or booleans).
        "inputs": [
            {
                "name": spec.name,
                "datatype": BYTES,
                "shape": [-1],
                "parameters": {
                    "content": "encoded image files (JPEG, PNG, WebP, AVIF, HEIC, GIF, BMP, TIFF)",
                    "also_accepts": (
                        f"{FP32} [-1,{spec.height},{spec.width},{spec.channels}] NHWC, "
                        "preprocessed as the model's input block says"
                    ),
                },
            }
        ],
        "outputs": outs,
    }
    if decision is not None:
        doc["parameters"] = decision["parameters"]
    return doc


@router.get("/models/{name}", dependencies=[ReadAuth])
@router.get("/models/{name}/versions/{version}", dependencies=[ReadAuth])
def model_metadata(name: str, registry: RegistryDep, version: str | None = None) -> dict[str, Any]:
    """Model metadata: inputs (BYTES image files or the FP32 input tensor) and outputs."""
    loaded = _model(registry, name, version)
    return _metadata(loaded, registry.versions(loaded.model.bundle.metadata.name))


@router.get("/models/{name}/ready", dependencies=[ReadAuth])
@router.get("/models/{name}/versions/{version}/ready", dependencies=[ReadAuth])
def model_ready(name: str, registry: RegistryDep, version: str | None = None) -> dict[str, Any]:
    """200 when the model is loaded and warmed up; 503 while loading; 404 when unknown."""
    loaded = _model(registry, name, version)
    return {"name": loaded.name, "ready": True}


def _header_length(request: Request) -> int | None:
    given = request.headers.getlist(HEADER_LENGTH)
    if not given:
        return None
    if len(given) > 1 or "," in given[0]:  # the first was used (round 24); a proxy's join
        raise BadRequest(f"{HEADER_LENGTH} is sent more than once; send it once.")
    raw = given[0]
    value = ascii_uint(raw.strip())
    if value is None:
        raise BadRequest(f"{HEADER_LENGTH} must be a non-negative integer (ASCII digits).")
    return value


async def _read_request(
    request: Request, settings: Settings, per_image: int
) -> tuple[InferRequest, float]:
    """The request's body read and parsed, and when the body had arrived (perf_counter).
    A large JSON part (an FP32 tensor as text: 1.2 MB per 224 px image) or a compressed body
    is inflated and parsed on a worker thread, one at a time per process
    (app.api.heavy_bodies); binary-data requests' few hundred bytes of JSON are parsed here.
    Nothing keeps the raw body once it is parsed."""
    applied = codings(request.headers.getlist("content-encoding"))
    body = await read_body(request, settings.max_request_bytes)
    received = time.perf_counter()
    header_length = _header_length(request)
    limits = {
        "max_json_bytes": settings.oip_max_json_bytes,
        "max_elements": settings.max_batch_images * per_image,
        "max_files": settings.max_batch_images,
    }
    compressed = any(c != "identity" for c in applied)
    json_bytes = len(body) if header_length is None else header_length
    if not compressed and json_bytes <= INLINE_JSON_BYTES:
        req = parse_infer_request(body, header_length, **limits)
    else:
        size = len(body)

        def work() -> InferRequest:
            raw = inflate(body, applied, settings.max_request_bytes) if compressed else body
            return parse_infer_request(raw, header_length, **limits)

        gate: HeavyBodyGate = request.app.state.heavy_bodies
        req = await gate.run(request, size, received + settings.request_deadline_s, work)
    return req, received


def _batch(req: InferRequest, loaded: LoadedModel, settings: Settings) -> InputTensor:
    spec = loaded.model.bundle.metadata.input
    if len(req.inputs) != 1 or req.inputs[0].name != spec.name:
        got = ", ".join(repr(t.name) for t in req.inputs) or "no input"
        raise BadRequest(f"Model {loaded.name!r} takes one input named {spec.name!r}; got {got}.")
    tensor = req.inputs[0]
    n = tensor.shape[0] if tensor.shape else 0
    if n < 1:
        raise BadRequest(f"Input {spec.name!r} holds no images (shape {list(tensor.shape)}).")
    if n > settings.max_batch_images:
        raise PayloadTooLarge(
            f"{n} images in one request; the limit is {settings.max_batch_images}.",
            limit_images=settings.max_batch_images,
        )
    if tensor.datatype == FP32:
        want = (n, spec.height, spec.width, spec.channels)
        if tensor.shape != want:
            raise BadRequest(
                f"An FP32 {spec.name!r} must have shape [N, {spec.height}, {spec.width}, "
                f"{spec.channels}] (NHWC); got {list(tensor.shape)}."
            )
        assert tensor.array is not None
        if not np.isfinite(tensor.array).all():
            raise BadRequest(f"The FP32 {spec.name!r} tensor holds NaN or infinite values.")
    elif tensor.items is not None and (
        len(tensor.items) != n or tensor.shape[1:] not in ((), (1,))
    ):
        raise BadRequest(
            f"A BYTES {spec.name!r} holds one encoded image per element: shape [N] or [N, 1]; "
            f"got {list(tensor.shape)}."
        )
    return tensor


@router.post("/models/{name}/infer", dependencies=[ReadAuth])
@router.post("/models/{name}/versions/{version}/infer", dependencies=[ReadAuth])
async def infer(
    name: str,
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    version: str | None = None,
) -> Response:
    """Inference: `image` as BYTES (encoded files) or FP32 (NHWC input tensor); outputs
    `probs`, `embedding` (when the bundle has one), `decision` (a yes/no model: the label /v1
    decides at the model's threshold) and the classification extension."""
    loaded = _model(registry, name, version)
    meta = loaded.model.bundle.metadata
    schedulers: Schedulers = request.app.state.schedulers
    scheduler = schedulers.get(registry.serving_name(loaded), loaded.model, meta.input)
    scheduler.admit()  # a full queue answers 503 before the body is read
    spec = meta.input
    req, received = await _read_request(request, settings, spec.height * spec.width * spec.channels)
    tensor = _batch(req, loaded, settings)
    # Encoded files are decoded by the same policy as /v1 predict; an FP32 tensor skips that
    # step. Both wait in the model's queue (deadline, batching) like every other request; the
    # deadline counts from the end of the body, so a wait to be parsed is part of it.
    due = received + settings.request_deadline_s
    if tensor.items is not None:
        job = scheduler.submit(tensor.items, deadline=due)
    else:
        assert tensor.array is not None
        job = scheduler.submit_tensor(tensor.array, deadline=due)
    out = (await unless_gone(request, job)).output
    content, header_len = encode_response(
        meta.name, meta.version, req.id, outputs(req, loaded, out.probs, out.embedding)
    )
    if header_len is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(header_len)},
    )


@router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"], include_in_schema=False)
def unknown(rest: str, request: Request) -> JSONResponse:
    # This catch-all takes every method, so a wrong method on a real route lands here too.
    allowed = sorted(
        {
            m
            for r in router.routes
            if isinstance(r, APIRoute) and r.endpoint is not unknown
            if r.path_regex.match(request.url.path)
            for m in r.methods or ()
        }
    )
    if "GET" in allowed:
        allowed = sorted({*allowed, "HEAD"})  # app/api/head.py answers it, as on /v1
    if allowed:
        allow = ", ".join(allowed)
        message = f"{request.method} is not allowed on /v2/{rest}; use {allow}."
        return oip_error(405, message, {"Allow": allow})
    bare = request.url.path.rstrip("/")
    if bare != request.url.path and any(  # a trailing slash (round 25): name the route
        isinstance(r, APIRoute) and r.endpoint is not unknown and r.path_regex.match(bare)
        for r in router.routes
    ):
        return oip_error(404, f"No route {request.method} /v2/{rest}; did you mean {bare}?")
    return oip_error(404, f"No route {request.method} /v2/{rest} in the v2 protocol.")
