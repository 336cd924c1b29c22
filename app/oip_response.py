"""Open Inference Protocol v2 responses (KServe v2 / Triton HTTP): outputs in JSON or with the
binary-data extension. The request half is app/oip.py. Bytes and numpy only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from app.oip import LEN


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    array: npt.NDArray[np.float32] | None = None
    items: list[bytes] | None = None
    binary: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(LEN.pack(len(b)) + b for b in items)


def encode_response(
    model_name: str, model_version: str, request_id: str | None, outputs: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """Response body and, when any output travels as binary, the JSON header's length."""
    blobs: list[bytes] = []
    entries: list[dict[str, Any]] = []
    for out in outputs:
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        params = dict(out.parameters)
        if out.binary:
            if out.items is not None:
                blob = serialize_bytes(out.items)
            else:
                assert out.array is not None
                blob = np.ascontiguousarray(out.array, dtype="<f4").tobytes()
            params["binary_data_size"] = len(blob)
            blobs.append(blob)
        elif out.items is not None:
            entry["data"] = [b.decode("utf-8", errors="replace") for b in out.items]
        else:
            assert out.array is not None
            entry["data"] = out.array.ravel().tolist()
        if params:
            entry["parameters"] = params
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = entries
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)
