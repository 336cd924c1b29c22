"""The JSON part of an Open Inference Protocol infer request, parsed within bounds: a flood of
objects it could never need is refused before parsing, and binary data sent without its
`Inference-Header-Content-Length` is named as such instead of as broken JSON."""

from __future__ import annotations

import gc
import re
import threading
from typing import Any, Final

from app.errors import BadRequest
from app.jsontext import RepeatedKey, loads_unique, repeated_key_message, too_many_digits

# JSON objects accepted in an infer request's JSON part: the request, its inputs and outputs
# and their parameters need a handful (tritonclient sends 3 + 2 per tensor).
MAX_JSON_OBJECTS: Final = 256
# JSON parts up to this size are parsed as they are (binary-data requests: a few hundred bytes).
INLINE_JSON_BYTES: Final = 64 * 1024
_LARGE_PARSE: Final = threading.Lock()
# Bytes JSON text never holds (inside strings they are escaped): binary data is there.
_NOT_JSON: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_STRING: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def load_header(header: bytes) -> Any:
    """json.loads of the JSON part, after refusing a flood of objects it could never need."""
    if (found := _NOT_JSON.search(header)) is not None:
        # round 43: a JPEG after its JSON part, sent without the header, was said to hold
        # "292 JSON objects"; a PNG, to be JSON that "can't decode byte 0xfe"
        raise BadRequest(
            f"The inference request's JSON part holds byte 0x{found[0][0]:02x} at position "
            f"{found.start():,}, which JSON text never does: binary tensor data may follow the "
            "JSON part only when the Inference-Header-Content-Length header gives the JSON "
            "part's length in bytes (tritonclient sends it)."
        )
    objects = header.count(b"{")
    if objects > MAX_JSON_OBJECTS:  # then count again without the braces inside strings
        objects = _STRING.sub(b'""', header).count(b"{")
    if objects > MAX_JSON_OBJECTS:
        # 8 MB of `{},` became 2.8 million dicts: 0.23 s with the GIL held, +200 MB.
        raise BadRequest(
            f"The inference request holds {objects:,} JSON objects; at most {MAX_JSON_OBJECTS} "
            "are accepted (one per input, output and parameters). Send tensor data as flat "
            "lists or with the binary-data extension."
        )
    try:
        if len(header) <= INLINE_JSON_BYTES:
            return loads_unique(header)
        # A parsed document is a tree: the cyclic collector has nothing to find in it, but left
        # on it re-scans the young lists as they pile up (8 MB of `[0],`: 815 ms, 221 ms
        # without it). One large parse at a time (it holds the GIL anyway), so only one thread
        # ever switches the collector off and back on.
        with _LARGE_PARSE:
            collecting = gc.isenabled()
            gc.disable()
            try:
                return loads_unique(header)
            finally:
                if collecting:
                    gc.enable()
    except RepeatedKey as exc:  # the last value won in silence
        raise BadRequest(repeated_key_message("The inference request", exc)) from exc
    except RecursionError as exc:  # the parser's own limit: its message names Python internals
        raise BadRequest(
            "The inference request nests arrays or objects deeper than the server parses "
            "(about 1,000 levels); tensor `data` is flat or nested as deep as its `shape`."
        ) from exc
    except ValueError as exc:
        if said := too_many_digits(exc):  # Python's message names an interpreter setting
            raise BadRequest(f"The inference request {said}.") from exc
        raise BadRequest(f"The inference request is not valid JSON: {exc}.") from exc
