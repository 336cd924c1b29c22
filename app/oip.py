"""Open Inference Protocol v2 (KServe v2 / Triton HTTP) codec: infer requests in JSON or with
the binary-data extension, responses the same way. Bytes and numpy only: no FastAPI, no model.

Protocol notes: BYTES elements in the binary section are a 4-byte little-endian length then
the bytes; in JSON they are strings, read as base64 for images (JSON cannot carry raw bytes).
The JSON header of a binary request is the first `Inference-Header-Content-Length` bytes of the
body; the binary inputs follow in the order of `inputs`, sized by `binary_data_size`.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app.errors import BadRequest, PayloadTooLarge
from app.jsontext import lone_surrogate_at, surrogate_message, whole
from app.oip_json import INLINE_JSON_BYTES as INLINE_JSON_BYTES
from app.oip_json import load_header

FP32: Final = "FP32"
BYTES: Final = "BYTES"
SUPPORTED_DATATYPES: Final = (FP32, BYTES)
LEN: Final = struct.Struct("<I")  # a BYTES element's length prefix
MAX_RANK: Final = 8  # the inputs served are [N] or [N, 1] (files) and [N, H, W, C]


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: `array` for FP32, `items` (raw bytes per element) for BYTES."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: npt.NDArray[np.float32] | None = None
    items: list[bytes] | None = None


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # `binary_data`; None: not given, the request's binary_data_output
    classification: int = 0  # > 0: the classification extension, top-k as strings


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None  # None: every output
    binary_output: bool  # request-level `binary_data_output`


def _num_elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} must be a JSON object.")
    return value


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    # None only: 0, "", [] and false were read as no parameters, while 5 or "x" were refused
    params = obj.get("parameters")
    return {} if params is None else _object(params, f"{where}.parameters")


def no_shared_memory(keys: Iterable[str], where: str) -> None:
    """Triton's shared-memory extension is not served: a tensor naming a region is refused
    (round 43: such an output was answered in the body, such an input said to carry no data)."""
    if any(key.startswith("shared_memory_") for key in keys):
        raise BadRequest(
            f"{where} names a shared memory region, and this server serves no shared memory "
            "(Triton's extension; not among its extensions): send the tensor in the request, "
            "as JSON or with the binary-data extension, and read outputs from the response."
        )


def _shape(value: Any, where: str) -> tuple[int, ...]:
    """1 to MAX_RANK positive dimensions. A zero one passed every size limit (no elements)
    beside any others (2**100: no array has that shape); no model here takes an empty tensor."""
    dims = [whole(d) for d in value] if isinstance(value, list) else [None]
    shape = tuple(d for d in dims if d is not None and d >= 1)
    if len(shape) != len(dims):
        raise BadRequest(
            f"{where}.shape must be a list of positive integers (e.g. [1] for one image file, "
            "[N, H, W, C] for an FP32 tensor)."
        )
    if not 1 <= len(value) <= MAX_RANK:
        raise BadRequest(f"{where}.shape has {len(value)} dimensions; 1 to {MAX_RANK} accepted.")
    return shape


def _flatten(data: Any, leaf: type | tuple[type, ...], limit: int, where: str) -> list[Any]:
    """Row-major leaves of nested JSON lists, refusing other leaf types and more than `limit`.
    Regular data (every node of a depth a list, or every one a leaf) is flattened a depth at a
    time in C: an 8 MB FP32 body took 0.6 s of Python per element, holding the GIL (round 31);
    anything else takes the walk below, which names the first wrong node."""
    leaves = {leaf} if isinstance(leaf, type) else set(leaf)
    level: list[Any] = [data]
    while level:
        kinds = set(map(type, level))
        if kinds == {list}:  # (a depth's list count bounds nothing: [[]] holds no leaf)
            level = list(chain.from_iterable(level))
        elif kinds <= leaves:
            if len(level) > limit:
                raise BadRequest(f"{where}.data holds more elements than its shape says.")
            return level
        else:
            break
    else:
        return []
    out: list[Any] = []
    stack: list[Any] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, leaf) and not isinstance(node, bool):
            out.append(node)
            if len(out) > limit:
                raise BadRequest(f"{where}.data holds more elements than its shape says.")
        else:
            got = {bool: "a boolean", dict: "an object", str: "a string", type(None): "null"}
            wanted = "base64 strings" if leaf is str else "numbers"
            kind = got.get(type(node), "a number")
            raise BadRequest(f"{where}.data holds {kind} where it needs {wanted}.")
    return out


def deserialize_bytes(raw: bytes, where: str) -> list[bytes]:
    """The binary-extension BYTES layout: (uint32 little-endian length, bytes) repeated."""
    items: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"{where}: truncated BYTES element length.")
        (n,) = LEN.unpack_from(raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"{where}: a BYTES element runs past the end of its data.")
        items.append(raw[pos : pos + n])
        pos += n
    return items


def _b64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(
            f"{where}: BYTES data in JSON must be base64 strings (one encoded image file each); "
            "or send raw bytes with the binary-data extension."
        ) from exc


def _decode_input(
    obj: dict[str, Any], binary: bytes | None, index: int, max_elements: int, max_files: int
) -> InputTensor:
    where = f"inputs[{index}]"
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{where}.name must be a non-empty string.")
    where = f"input {name!r}"
    datatype = obj.get("datatype")
    if datatype not in SUPPORTED_DATATYPES:
        raise BadRequest(
            f"{where}: datatype {datatype!r} is not accepted; use BYTES (encoded image files) "
            "or FP32 (a tensor of the model's input shape)."
        )
    shape = _shape(obj.get("shape"), where)
    count = _num_elements(shape)
    if datatype == BYTES and count > max_files:  # each element is a file: refuse before parsing
        raise PayloadTooLarge(
            f"{where}: {count:,} BYTES elements (image files) in one request; the limit is "
            f"{max_files}.",
            limit_images=max_files,
        )
    if count > max_elements:
        raise PayloadTooLarge(
            f"{where}: {count:,} elements is more than this server accepts ({max_elements:,}).",
            limit_elements=max_elements,
        )
    if binary is not None and "data" in obj:  # one would be dropped unsaid (round 19)
        raise BadRequest(f"{where}: give either data or parameters.binary_data_size, not both.")
    if binary is not None:
        if datatype == BYTES:
            items = deserialize_bytes(binary, where)
            if len(items) != count:
                raise BadRequest(f"{where}: {len(items)} BYTES elements for shape {list(shape)}.")
            return InputTensor(name, datatype, shape, items=items)
        if len(binary) != count * 4:
            raise BadRequest(
                f"{where}: {len(binary):,} bytes of FP32 data for shape {list(shape)} "
                f"(needs {count * 4:,})."
            )
        arr = _finite(np.frombuffer(binary, dtype="<f4").astype(np.float32), where)
        return InputTensor(name, datatype, shape, array=arr.reshape(shape))
    if "data" not in obj:
        raise BadRequest(f"{where} has neither data nor parameters.binary_data_size.")
    if datatype == BYTES:
        texts = _flatten(obj["data"], str, count, where)
        if len(texts) != count:
            raise BadRequest(f"{where}: {len(texts)} elements for shape {list(shape)}.")
        return InputTensor(
            name, datatype, shape, items=[_b64(t, f"{where}[{i}]") for i, t in enumerate(texts)]
        )
    values = _flatten(obj["data"], (int, float), count, where)
    if len(values) != count:
        raise BadRequest(f"{where}: {len(values)} elements for shape {list(shape)}.")
    return InputTensor(name, datatype, shape, array=_fp32(values, where).reshape(shape))


def _fp32(values: list[Any], where: str) -> npt.NDArray[np.float32]:
    """JSON numbers as float32; an integer too large for a float, or a value outside float32's
    range (which would become inf and then NaN scores), is the client's error."""
    try:
        with np.errstate(over="ignore"):
            arr = np.asarray(values, dtype=np.float32)
    except OverflowError as exc:
        raise _not_finite(where) from exc
    return _finite(arr, where)


def _finite(arr: npt.NDArray[np.float32], where: str) -> npt.NDArray[np.float32]:
    if not np.isfinite(arr).all():
        raise _not_finite(where)
    return arr


def _not_finite(where: str) -> BadRequest:
    return BadRequest(
        f"{where} holds a value that is not a finite FP32 number "
        f"(|x| <= {float(np.finfo(np.float32).max):.4g}; no NaN or Infinity)."
    )


def _requested_outputs(value: Any) -> list[RequestedOutput] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest("outputs must be a list.")
    outs: list[RequestedOutput] = []
    for i, raw in enumerate(value):
        obj = _object(raw, f"outputs[{i}]")
        name = obj.get("name")
        if not isinstance(name, str):
            raise BadRequest(f"outputs[{i}].name must be a string.")
        if any(o.name == name for o in outs):
            # Each entry is computed and sent: 10,000 copies of a 1,000-class classification
            # in a 1 MB request took 28 s of CPU and 2 GB to answer.
            raise BadRequest(f"outputs[{i}]: output {name!r} is requested more than once.")
        params = _params(obj, f"outputs[{i}]")
        no_shared_memory(params, f"outputs[{i}]")
        k = whole(params.get("classification", 0))
        if k is None or k < 0:
            raise BadRequest(f"output {name!r}: parameters.classification must be an integer >= 0.")
        binary = _flag(params, "binary_data", f"output {name!r}")
        outs.append(RequestedOutput(name, binary, k))
    return outs or None  # [] asks for no output in particular: every one, as over gRPC


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    """A boolean parameter, None when absent. bool("false") is True: a string (or a number)
    sent binary data to a client that asked for JSON, so anything but a boolean is a 400."""
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{where}: parameters.{key} must be true or false (a JSON boolean).")
    return value


def parse_infer_request(
    body: bytes,
    header_length: int | None,
    *,
    max_json_bytes: int,
    max_elements: int,
    max_files: int,
) -> InferRequest:
    """Parse an infer request body. Raises 400 (malformed) or 413 (over a limit): at most
    `max_elements` numbers per FP32 input, `max_files` encoded images per BYTES input (round
    24: 4.8 million empty BYTES elements in 29 MB took 1.3 s to split before the batch limit
    refused them)."""
    if header_length is None:
        header, rest = body, b""
    else:
        if not 0 < header_length <= len(body):
            raise BadRequest(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes."
            )
        header, rest = body[:header_length], body[header_length:]
    if len(header) > max_json_bytes:
        raise PayloadTooLarge(
            f"The JSON part of the request is {len(header):,} bytes; the limit is "
            f"{max_json_bytes:,}. Send tensors and images with the binary-data extension.",
            limit_bytes=max_json_bytes,
        )
    parsed = load_header(header)
    bad = lone_surrogate_at(header, parsed)
    if bad is not None:
        raise BadRequest(surrogate_message("The inference request", bad))
    doc = _object(parsed, "The inference request")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("The inference request needs a non-empty 'inputs' list.")
    inputs: list[InputTensor] = []
    pos = 0
    for i, raw in enumerate(raw_inputs):
        obj = _object(raw, f"inputs[{i}]")
        params = _params(obj, f"inputs[{i}]")
        no_shared_memory(params, f"inputs[{i}]")
        given = params.get("binary_data_size")
        chunk: bytes | None = None
        if given is not None:
            size = whole(given)
            if size is None or size < 0:
                raise BadRequest(f"inputs[{i}].parameters.binary_data_size must be an integer.")
            if pos + size > len(rest):
                raise BadRequest(
                    f"inputs[{i}] says {size:,} binary bytes but the body has only "
                    f"{len(rest) - pos:,} left."
                )
            chunk = rest[pos : pos + size]
            pos += size
        inputs.append(_decode_input(obj, chunk, i, max_elements, max_files))
    if pos != len(rest):
        raise BadRequest(f"{len(rest) - pos:,} bytes after the inputs' binary data.")
    names = [t.name for t in inputs]
    if len(set(names)) != len(names):
        raise BadRequest("Each input name may appear only once.")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):  # else dropped in silence
        raise BadRequest("The inference request's id must be a string.")
    params = _params(doc, "The inference request")
    return InferRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(doc.get("outputs")),
        binary_output=bool(_flag(params, "binary_data_output", "The inference request")),
    )
