"""JSON bodies: size-capped (app.api.forms.read_body), depth-checked before parsing, parsed
strictly (no NaN, no repeated keys, no lone surrogates) and validated into a model with every
fault a 4xx problem that says which field and why."""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.requests import Request

from app.api.forms import read_body
from app.errors import InvalidRequest
from app.jsontext import (
    NotJson,
    RepeatedKey,
    loads_strict,
    lone_surrogate_at,
    repeated_key_message,
    surrogate_message,
    too_many_digits,
)

# Deeper JSON than this is refused (422) before parsing: nothing here needs more, and
# Python's parser would otherwise recurse once per level.
MAX_JSON_DEPTH: Final = 32


def check_json_depth(text: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """422 when arrays/objects nest deeper than `max_depth` (strings are skipped)."""
    data = text.encode() if isinstance(text, str) else text
    depth = 0
    in_string = escaped = False
    for b in data:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:  # backslash
                escaped = True
            elif b == 0x22:  # quote
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                raise InvalidRequest(f"The JSON nests deeper than {max_depth} levels.")
        elif b in (0x5D, 0x7D):
            depth -= 1


def parse_json(text: bytes | str, where: str = "The JSON body") -> Any:
    """Depth-checked json.loads; any syntax error, or a key given twice in one object, is a
    422 that says where."""
    check_json_depth(text)
    try:
        value = loads_strict(text)
    except RepeatedKey as exc:
        raise InvalidRequest(repeated_key_message(where, exc)) from exc
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"{where} is not valid JSON: {exc.msg} at position {exc.pos}."
        ) from exc
    except NotJson as exc:
        raise InvalidRequest(f"{where} is not valid JSON: {exc}") from exc
    except (ValueError, RecursionError) as exc:  # recursion is pre-empted above
        if said := too_many_digits(exc):
            raise InvalidRequest(f"{where} {said}.") from exc
        raise InvalidRequest(f"{where} is not valid UTF-8 JSON.") from exc
    bad = lone_surrogate_at(text, value)
    if bad is not None:
        raise InvalidRequest(surrogate_message(where, bad))
    return value


async def read_json(request: Request, limit: int) -> Any:
    """A JSON body, capped at `limit` bytes before it is parsed; an empty body is {}."""
    raw = await read_body(request, limit)
    return parse_json(raw) if raw.strip() else {}


_M = TypeVar("_M", bound=BaseModel)


MAX_LISTED_ERRORS: Final = 10  # a body with thousands of faults is told its first ones


def validation_detail(exc: ValidationError) -> str:
    """Pydantic's errors as one line: `field: message; ...`, the first MAX_LISTED_ERRORS."""
    errors = exc.errors(include_url=False, include_context=False)
    listed = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {_message(e)}"
        for e in errors[:MAX_LISTED_ERRORS]
    )
    more = len(errors) - MAX_LISTED_ERRORS
    return listed + (f"; and {more:,} more" if more > 0 else "")


def _message(error: ErrorDetails) -> str:
    """pydantic's message; strict mode's for `2.5` where an integer goes ("Input should be a
    valid integer") says why, as lax mode's does."""
    if error["type"] == "int_type" and isinstance(error.get("input"), float):
        return f"{error['msg']}, got a number with a fractional part"
    return error["msg"]


def _whole_numbers_as_integers(data: Any, exc: ValidationError) -> bool:
    """Where `exc` says an integer was wanted and a float without a fraction came (`"k": 2.0`,
    as Python's json.dumps writes a float: JSON Schema counts it an integer), put the int in
    its place. Only those places: free-form metadata keeps its 2.0. True when any changed."""
    changed = False
    if exc.error_count() > MAX_LISTED_ERRORS:
        return False  # a body this wrong is not a few integers written as floats
    for err in exc.errors(include_url=False):
        value = err.get("input")
        if err["type"] != "int_type" or not isinstance(value, float) or not value.is_integer():
            continue
        *path, last = err["loc"]
        node = data
        try:
            for key in path:
                node = node[key]
            if node[last] is value:
                node[last] = int(value)
                changed = True
        except (KeyError, IndexError, TypeError):
            continue  # a union's branch name in the path: not a place in the body
    return changed


def _refuse_unknown_keys(model: type[BaseModel], data: Any, what: str) -> None:
    """One error for keys a model that forbids others does not know, before pydantic lists
    one per key: 29,600 of them took it 0.1-0.46 s on the event loop (round 31)."""
    if model.model_config.get("extra") != "forbid" or not isinstance(data, dict):
        return
    known = {f.alias or name for name, f in model.model_fields.items()} | set(model.model_fields)
    unknown = [k for k in data if k not in known]
    if unknown:
        shown = ", ".join(repr(k[:64]) for k in unknown[:MAX_LISTED_ERRORS])
        more = len(unknown) - MAX_LISTED_ERRORS
        raise InvalidRequest(
            f"Invalid {what}: unknown key(s) {shown}"
            + (f" and {more:,} more" if more > 0 else "")
            + f"; it takes {', '.join(sorted(model.model_fields))}."
        )


async def read_model(request: Request, model: type[_M], limit: int, what: str) -> _M:
    """A JSON body capped at `limit` bytes and depth-checked before parsing, validated into
    `model` strictly (JSON types as declared: `true` or `"5"` is not a number, `5.5` not an
    integer; lax parsing took `"k": true` as k = 1 and `"2"` inside a vector as 2.0; `2.0` is
    the integer 2, as in JSON Schema); any fault is a 4xx problem that says which field and
    why."""
    data = await read_json(request, limit)
    _refuse_unknown_keys(model, data, what)
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        if not _whole_numbers_as_integers(data, exc):
            raise InvalidRequest(f"Invalid {what}: {validation_detail(exc)}") from exc
    try:
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid {what}: {validation_detail(exc)}") from exc


def json_body_openapi(
    model: type[BaseModel], limit_setting: str = "IMGCLASS_MAX_JSON_BYTES"
) -> dict[str, Any]:
    """OpenAPI text for a route that reads its JSON body with `read_model`."""
    return {
        "requestBody": {
            "required": True,
            "description": f"JSON, at most {limit_setting} bytes and {MAX_JSON_DEPTH} levels deep.",
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
