"""The outputs of an Open Inference Protocol infer answer, for HTTP (app/api/v2.py) and gRPC
(app/grpc_oip.py) alike: the model's tensors (`probs`, `embedding`), the classification
extension's top-k strings, and for a yes/no model `decision`: the label /v1 predict decides
at the model's calibrated threshold (app.classify.binary_decision), one BYTES element per
image, with the threshold and the positive label in the output's `parameters`."""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from app.classify import binary_decision, top_k_predictions, yes_no_rule
from app.errors import BadRequest
from app.oip import BYTES, FP32, InferRequest
from app.oip_response import OutputTensor
from app.registry import LoadedModel

DECISION: Final = "decision"


def decision_parameters(loaded: LoadedModel) -> dict[str, Any] | None:
    """{"positive_label", "threshold"} of a yes/no model (OIP parameter values are strings,
    numbers or booleans); None for a model /v1 answers no decision for."""
    rule = yes_no_rule(loaded)
    if rule is None:
        return None
    return {"positive_label": rule[0], "threshold": rule[1]}


def decision_metadata(loaded: LoadedModel) -> dict[str, Any] | None:
    """The `decision` output as model metadata lists it, or None."""
    params = decision_parameters(loaded)
    if params is None:
        return None
    return {"name": DECISION, "datatype": BYTES, "shape": [-1], "parameters": params}


def _decision(
    loaded: LoadedModel, probs: npt.NDArray[np.float32], binary: bool, params: dict[str, Any]
) -> OutputTensor:
    """`params`: decision_parameters(loaded), of a yes/no model (so every row has a verdict)."""
    items = []
    for row in probs:
        verdict = binary_decision(loaded, row)
        assert verdict is not None
        items.append(verdict.label.encode())
    return OutputTensor(
        DECISION, BYTES, [probs.shape[0]], items=items, binary=binary, parameters=params
    )


def outputs(
    req: InferRequest,
    loaded: LoadedModel,
    probs: npt.NDArray[np.float32],
    embedding: npt.NDArray[np.float32] | None,
) -> list[OutputTensor]:
    """The outputs the request asks for (every one when it names none), in its order."""
    meta = loaded.model.bundle.metadata
    labels = loaded.model.bundle.labels
    available: dict[str, npt.NDArray[np.float32]] = {meta.outputs.probs.name: probs}
    if embedding is not None and meta.outputs.embedding is not None:
        available[meta.outputs.embedding.name] = embedding
    params = decision_parameters(loaded) if DECISION not in available else None
    wanted = req.outputs
    if wanted is None:
        outs = [
            OutputTensor(n, FP32, list(a.shape), array=a, binary=req.binary_output)
            for n, a in available.items()
        ]
        if params is not None:
            outs.append(_decision(loaded, probs, req.binary_output, params))
        return outs
    outs = []
    for w in wanted:
        # An output's own `binary_data` overrides the request's `binary_data_output` (binary
        # tensor data extension), false included.
        binary = req.binary_output if w.binary is None else w.binary
        if params is not None and w.name == DECISION:
            if w.classification:
                raise BadRequest(f"Classification applies to {meta.outputs.probs.name!r} only.")
            outs.append(_decision(loaded, probs, binary, params))
            continue
        if w.name not in available:
            names = [*available, DECISION] if params is not None else list(available)
            raise BadRequest(
                f"Model {loaded.name!r} has no output {w.name!r}; available: {', '.join(names)}."
            )
        if w.classification == 0:
            arr = available[w.name]
            outs.append(OutputTensor(w.name, FP32, list(arr.shape), array=arr, binary=binary))
            continue
        if w.name != meta.outputs.probs.name:
            raise BadRequest(f"Classification applies to {meta.outputs.probs.name!r} only.")
        k = min(w.classification, meta.num_classes)
        items = [
            f"{p.score:f}:{p.index}:{p.label}".encode()
            for row in probs
            for p in top_k_predictions(row, labels, k)
        ]
        outs.append(OutputTensor(w.name, BYTES, [probs.shape[0], k], items=items, binary=binary))
    return outs
