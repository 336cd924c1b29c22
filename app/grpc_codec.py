"""The Open Inference Protocol's gRPC messages to and from the HTTP binding's request and
output types (app/oip.py): a ModelInferRequest becomes an InferRequest through the same
checks, outputs become a ModelInferResponse. Message classes: the `tritonclient` package's
generated modules (Triton's service is a superset of KServe's, same package and field
numbers). No grpc server here (app/grpc_oip.py)."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from app.api.deps import presented_key
from app.errors import BadRequest, PayloadTooLarge
from app.oip import (
    BYTES,
    FP32,
    MAX_RANK,
    SUPPORTED_DATATYPES,
    InferRequest,
    InputTensor,
    RequestedOutput,
    _decode_input,
    no_shared_memory,
)
from app.oip_response import OutputTensor, serialize_bytes


def call_key(context: Any) -> str | None:
    """The API key the call presents, read as HTTP reads it (app.api.deps.presented_key)."""
    meta = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
    return presented_key(lambda name: [v for k, v in meta if k == name])


def _input(t: Any, raw: bytes | None, index: int, max_elements: int, max_files: int) -> InputTensor:
    """One input tensor, through the HTTP binding's checks: raw bytes are its binary section
    (BYTES: 4-byte little-endian length + bytes per element; FP32: little-endian floats), and
    `contents` are turned into the same bytes. A BYTES input holds one image file per element,
    so its elements are capped at the batch limit before any is read (round 15: 4 million empty
    elements were expanded before the image count refused them, +440 MB a call)."""
    if len(t.shape) > MAX_RANK:  # before the dimensions become Python objects (round 44:
        # 8 million of them, +330 MB a call)
        raise BadRequest(
            f"input {t.name[:64]!r}.shape has {len(t.shape):,} dimensions; 1 to {MAX_RANK} "
            "accepted."
        )
    obj = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
    no_shared_memory(t.parameters, f"input {t.name!r}")
    limit = max_files if t.datatype == BYTES else max_elements
    contents = t.contents
    typed = len(contents.bytes_contents) or len(contents.fp32_contents)
    if raw is not None and typed:
        raise BadRequest(
            f"input {t.name!r} has both raw_input_contents and contents; send one of them."
        )
    if raw is None and t.datatype == BYTES and contents.bytes_contents:
        if len(contents.bytes_contents) > limit:
            raise _too_many(t.name, len(contents.bytes_contents), limit)
        raw = serialize_bytes(list(contents.bytes_contents))
    elif raw is None and t.datatype == FP32 and contents.fp32_contents:
        if len(contents.fp32_contents) > limit:
            raise _too_many(t.name, len(contents.fp32_contents), limit)
        raw = np.asarray(contents.fp32_contents, dtype="<f4").tobytes()
    if raw is None and t.datatype in SUPPORTED_DATATYPES:
        kind = "bytes" if t.datatype == BYTES else "fp32"
        raise BadRequest(
            f"input {t.name!r} carries no data: send it in raw_input_contents (as tritonclient "
            f"does) or in contents.{kind}_contents."
        )
    return _decode_input(obj, raw, index, max_elements, max_files)


def _too_many(name: str, n: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"input {name!r}: {n:,} elements is more than this server accepts ({limit:,}).",
        limit_elements=limit,
    )


# Tensors and parameters a request may name: the models served take one input and give up to
# three outputs. Counted before any is read (round 44: 24,000 outputs took 22 s of CPU in a
# quadratic duplicate check, 300,000 inputs +150 MB each; the HTTP binding's JSON part is
# capped at 256 objects before parsing).
MAX_TENSORS: Final = 16
MAX_PARAMETERS: Final = 64


def _counted(request: Any) -> None:
    for what, n, cap in (
        ("inputs", len(request.inputs), MAX_TENSORS),
        ("outputs", len(request.outputs), MAX_TENSORS),
        ("parameters", len(request.parameters), MAX_PARAMETERS),
    ):
        if n > cap:
            raise BadRequest(f"The request names {n:,} {what}; at most {cap} are accepted.")
    for t in (*request.inputs, *request.outputs):
        if len(t.parameters) > MAX_PARAMETERS:
            raise BadRequest(
                f"{t.name[:64]!r} has {len(t.parameters):,} parameters; at most "
                f"{MAX_PARAMETERS} are accepted."
            )


def parse_request(request: Any, max_elements: int, max_files: int) -> InferRequest:
    """A ModelInferRequest as the HTTP binding's InferRequest (400/413 on bad input)."""
    _counted(request)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents holds {len(raw)} tensors for {len(request.inputs)} inputs; "
            "when used, it carries every input, in order."
        )
    inputs = [
        _input(t, raw[i] if raw else None, i, max_elements, max_files)
        for i, t in enumerate(request.inputs)
    ]
    outputs: list[RequestedOutput] | None = None
    if request.outputs:
        outputs, named = [], set()
        for o in request.outputs:
            if o.name in named:
                # each entry is computed and sent: 400 copies of a 1,000-class classification
                # of 32 images made a 338 MB answer from a 15 KB request (round 15)
                raise BadRequest(f"output {o.name!r} is requested more than once.")
            no_shared_memory(o.parameters, f"output {o.name!r}")
            named.add(o.name)
            outputs.append(RequestedOutput(o.name, None, _classification(o)))
    return InferRequest(request.id or None, inputs, outputs, binary_output=False)


def _param_value(param: Any, kind: str | None) -> str:
    """An InferParameter as a message shows it: `int64_param -1`, `string_param '5'`."""
    return f"{kind} {getattr(param, kind)!r}" if kind else "no value"


def _classification(o: Any) -> int:
    """The classification extension's top-k of a requested output (0: not asked)."""
    if "classification" not in o.parameters:
        return 0
    param = o.parameters["classification"]
    kind = param.WhichOneof("parameter_choice")
    if kind != "int64_param" or param.int64_param < 0:
        raise BadRequest(
            f"output {o.name!r}: the classification parameter must be an int64_param >= 0 "
            f"(top-k); got {_param_value(param, kind)}."
        )
    return int(param.int64_param)


def response_message(name: str, version: str, req_id: str | None, outs: list[OutputTensor]) -> Any:
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=req_id or "")
    for o in outs:
        tensor = response.outputs.add(name=o.name, datatype=o.datatype, shape=o.shape)
        for key, value in o.parameters.items():  # `decision`'s threshold and positive label
            _set_param(tensor.parameters[key], value)
        if o.items is not None:
            response.raw_output_contents.append(serialize_bytes(o.items))
        else:
            assert o.array is not None
            response.raw_output_contents.append(o.array.astype("<f4").tobytes())
    return response


def _set_param(param: Any, value: object) -> None:
    """An InferParameter from a JSON parameter value (a string, a number or a boolean)."""
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)
