"""The OpenAPI document says how errors really look: every error under /v1 (and the probes,
/metrics) is application/problem+json (app/api/problems.py), every error under /v2 is the Open
Inference Protocol's {"error": "..."}. FastAPI's generated document said `422
application/json HTTPValidationError` and nothing for the other statuses, so a client generated
from it expected a shape the server never sends, and checkers flagged each 404/409 as
undocumented. Applied once, when the document is first built; routes keep their own texts."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.name_rules import rule_for
from app.api.problems import is_oip_path
from app.bundle_files import MAX_LABEL_CHARS
from app.errors import PROBLEM_JSON

PROBLEM: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details: what was wrong and what is accepted.",
    "properties": {
        "type": {"type": "string", "description": "a URI reference naming the kind of error"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string", "description": "what was wrong and what is accepted"},
        "instance": {"type": "string", "description": "the request path"},
        "errors": {
            "type": "array",
            "description": "invalid parameters, one entry each (validation errors)",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}
OIP_ERROR: dict[str, Any] = {
    "type": "object",
    "description": "The Open Inference Protocol's error response.",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}
_TENSOR = {
    "name": {"type": "string"},
    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"type": "string", "description": "BYTES (encoded image files) or FP32"},
    "parameters": {"type": "object"},
    "data": {"type": "array", "description": "row-major, flattened"},
}
OIP_SCHEMAS: dict[str, dict[str, Any]] = {
    "InferenceRequest": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/RequestInput"},
                "minItems": 1,
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                    "required": ["name"],
                },
            },
        },
        "required": ["inputs"],
    },
    "RequestInput": {
        "type": "object",
        "properties": {
            **_TENSOR,
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}},
            "datatype": {"enum": ["BYTES", "FP32"]},
        },
        "required": ["name", "shape", "datatype"],
    },
    "InferenceResponse": {
        "type": "object",
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": _TENSOR,
                    "required": ["name", "shape", "datatype"],
                },
            },
        },
        "required": ["model_name", "outputs"],
    },
}
INFER_BODY: dict[str, Any] = {
    "required": True,
    "description": (
        "An inference request (JSON), or with the binary data extension: the JSON header, then "
        "the raw tensors, its length in the Inference-Header-Content-Length header."
    ),
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_REFS = {"problem": "#/components/schemas/Problem", "oip": "#/components/schemas/OipError"}


def _error_response(description: str, oip: bool) -> dict[str, Any]:
    ref = {"$ref": _REFS["oip" if oip else "problem"]}
    media = "application/json" if oip else PROBLEM_JSON
    return {"description": description, "content": {media: {"schema": ref}}}


def _own_model(response: dict[str, Any]) -> bool:
    """A route declared this status with a model of its own (/readyz's 503 is a Readiness,
    /v2/health/ready's a ServerReady): that is the shape it sends (round 28)."""
    refs = [m.get("schema", {}).get("$ref", "") for m in response.get("content", {}).values()]
    return any(r and not r.endswith("/HTTPValidationError") for r in refs)


def _document_errors(path: str, operation: dict[str, Any]) -> None:
    oip = is_oip_path(path)
    responses: dict[str, Any] = operation.setdefault("responses", {})
    for status, response in list(responses.items()):
        if status[:1] not in "45" or _own_model(response):
            continue
        text = response.get("description", "")
        if status == "422" and text == "Validation Error":  # FastAPI's own, never sent as is
            text = "invalid parameters" if not oip else "invalid request"
        responses[status] = _error_response(text, oip)
    responses["default"] = _error_response(
        "any other error (e.g. 400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 503, 507)"
        + (": the Open Inference Protocol's error shape" if oip else ": problem details"),
        oip,
    )


# What the /v1 routes check (the names: app/api/name_rules.py), said in the document too, so
# that a client (or a checker generating requests from it) knows what the server refuses.
_LABEL = {"minLength": 1, "maxLength": MAX_LABEL_CHARS, "pattern": r"\S"}


def _rule(where: str, name: str, path: str) -> dict[str, Any] | None:
    rule = rule_for(where, name, path)
    if rule is not None:
        return rule.schema()
    return _LABEL if (where, name) == ("query", "label") else None


# A query is text: a whole number in it is its digits (app.api.query_names.DIGITS), as clients
# generated from the document write one. A JSON body's 2.0 is the integer 2, as JSON Schema says.
DIGITS_ONLY = "Written in digits: 2, not 2.0 or +2."


def _constrain(path: str, operation: dict[str, Any]) -> None:
    for param in operation.get("parameters", []):
        schema = param.get("schema", {})
        branches = schema.get("anyOf", [schema])  # optional: [string, null]
        if param.get("in") == "query" and any(b.get("type") == "integer" for b in branches):
            param["description"] = f"{param.get('description', '')} {DIGITS_ONLY}".lstrip()
        extra = _rule(param.get("in", ""), param.get("name", ""), path)
        for branch in branches if extra is not None else []:
            if branch.get("type") == "string":
                branch.update(extra)


def _oip_parameters(operation: dict[str, Any]) -> None:
    """/v2 takes no query parameter (app.api.query_names.no_query refuses each one). `version`,
    a path parameter of the /versions/ routes, was listed as a query parameter of the others
    (FastAPI reads one not in the path from the query), and as a path parameter that may be null.
    """
    params = [p for p in operation.get("parameters", []) if p.get("in") != "query"]
    for param in params:
        branches = param.get("schema", {}).get("anyOf", [])
        param["schema"] = next((b for b in branches if b.get("type") == "string"), param["schema"])
    if params:
        operation["parameters"] = params
    else:
        operation.pop("parameters", None)


def _document_infer(operation: dict[str, Any]) -> None:
    """/v2 .../infer reads its body by hand (JSON or binary extension): say what it takes."""
    operation.setdefault("requestBody", INFER_BODY)
    ok = operation.get("responses", {}).get("200", {})
    ok["description"] = (
        "The inference response (JSON); with binary_data_output, the JSON header, then the raw "
        "tensors (its length in Inference-Header-Content-Length)."
    )
    ok["content"] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }


def _header(description: str, kind: str = "string") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


_ETAG = _header("the file's version (its digest); send it back as If-None-Match or If-Range")
_FILES = ("/image", "/thumbnail", "/download")  # stored files: ETag, byte ranges
# (path ends with, method, status) -> headers the server sends with that answer (round 28:
# none was declared, so generated clients could not read them)
HEADERS: list[tuple[str, str, str, dict[str, Any]]] = [
    ("/v1/catalogs", "post", "201", {"Location": _header("the new catalog's URL")}),
    ("/train", "post", "202", {"Location": _header("the job's URL (/v1/jobs/{job_id})")}),
    *[(f, "get", "200", {"ETag": _ETAG, "Accept-Ranges": _header("bytes")}) for f in _FILES],
    *[(f, "get", "304", {"ETag": _ETAG}) for f in _FILES],
    *[
        (f, "get", "206", {"ETag": _ETAG, "Content-Range": _header("bytes first-last/size")})
        for f in _FILES
    ],
    (
        "/infer",
        "post",
        "200",
        {
            "Inference-Header-Content-Length": _header(
                "binary data extension: the length of the JSON header before the raw tensors",
                "integer",
            )
        },
    ),
    ("", "*", "401", {"WWW-Authenticate": _header("how to send the key (Bearer)")}),
    (
        "",
        "*",
        "default",
        {
            "Retry-After": _header(
                "with a 503 that will pass (a full queue, models loading): seconds to wait",
                "integer",
            )
        },
    ),
]


def _document_headers(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.get("responses", {})
    for suffix, verb, status, headers in HEADERS:
        if path.endswith(suffix) and verb in ("*", method) and status in responses:
            responses[status].setdefault("headers", {}).update(headers)


def _drop_unused(schemas: dict[str, Any]) -> None:
    """FastAPI's 422 shape is referenced only by the 422 responses _document_errors replaced."""
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _head_of(get: dict[str, Any]) -> dict[str, Any]:
    """HEAD on a GET route (app/api/head.py): the GET's statuses and headers, no bodies."""
    head = copy.deepcopy(get)
    if "operationId" in head:
        head["operationId"] += "_head"
    head["summary"] = f"{get.get('summary', 'GET')} (headers only)"
    head["description"] = (
        "HEAD: the same status and headers as GET (Content-Length says what a GET would send), "
        "with no body."
    )
    for response in head.get("responses", {}).values():
        response.pop("content", None)
    return head


def with_error_shapes(document: dict[str, Any]) -> dict[str, Any]:
    """The document with every operation's error responses in the shape they are sent."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM
    schemas["OipError"] = OIP_ERROR
    schemas.update(OIP_SCHEMAS)
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                _document_errors(path, operation)
                _document_headers(path, method, operation)
                if path.startswith("/v1/"):
                    _constrain(path, operation)
                if is_oip_path(path):
                    _oip_parameters(operation)
                if is_oip_path(path) and path.endswith("/infer"):
                    _document_infer(operation)
    for item in document.get("paths", {}).values():
        if "get" in item and "head" not in item:
            item["head"] = _head_of(item["get"])
    _drop_unused(schemas)
    # The key, for Swagger UI's Authorize at /docs ("Try it out" got 401 on a keyed server,
    # round 25). Optional: a server without IMGCLASS_API_KEY needs none.
    document["components"]["securitySchemes"] = {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "IMGCLASS_API_KEY, when the server has one: writes need it, reads "
            "too with IMGCLASS_API_KEY_FOR_READS (also accepted as Authorization: Bearer).",
        }
    }
    document["security"] = [{}, {"ApiKey": []}]
    return document


def install(app: FastAPI) -> None:
    """Build app.openapi() with the error shapes (FastAPI caches the result)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_error_shapes(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
