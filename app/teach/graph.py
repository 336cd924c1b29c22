"""ONNX graphs of a taught model: the head alone (served next to the shared backbone session)
and backbone + head in one standalone file (the download).

Built with onnx's helper API; `onnx` is a small base dependency (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.bundle import EMBEDDING_NAME, PROBS_NAME
from app.teach.head import Head

HEAD_OPSET = 17
_PREFIX = "teach_head/"


def _head_nodes(
    embedding: str, weights: onnx.TensorProto, bias: onnx.TensorProto, probs: str
) -> list[onnx.NodeProto]:
    """Unit-normalise the embedding as the catalog did, then softmax(x @ W + b)."""
    p = _PREFIX
    return [
        helper.make_node("LpNormalization", [embedding], [p + "unit"], axis=1, p=2),
        helper.make_node("MatMul", [p + "unit", weights.name], [p + "scores"]),
        helper.make_node("Add", [p + "scores", bias.name], [p + "logits"]),
        helper.make_node("Softmax", [p + "logits"], [probs], axis=1),
    ]


def _params(head: Head) -> tuple[onnx.TensorProto, onnx.TensorProto]:
    w = numpy_helper.from_array(head.weights.astype(np.float32), _PREFIX + "W")
    b = numpy_helper.from_array(head.bias.astype(np.float32), _PREFIX + "b")
    return w, b


def head_model(head: Head, dim: int) -> onnx.ModelProto:
    """Input "embedding" (N x dim, the backbone's raw output) -> "probs" (N x C). The served
    embedding of a taught model is the backbone's own, which the registry already holds."""
    w, b = _params(head)
    graph = helper.make_graph(
        _head_nodes(EMBEDDING_NAME, w, b, PROBS_NAME),
        "taught_head",
        [helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, ["N", head.num_classes])],
        initializer=[w, b],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", HEAD_OPSET)], producer_name="imgclass-teach"
    )
    model.ir_version = 8  # readable by onnxruntime >= 1.10
    onnx.checker.check_model(model)
    return model


def standalone_model(backbone: onnx.ModelProto, head: Head) -> onnx.ModelProto:
    """One graph: the backbone's image input -> the head's "probs" and the backbone's
    "embedding". The backbone's own probs are dropped and the nodes only they needed pruned."""
    model = onnx.ModelProto()
    model.CopyFrom(backbone)
    g = model.graph
    renamed = _PREFIX + "backbone_probs"
    for node in g.node:
        for i, name in enumerate(node.output):
            if name == PROBS_NAME:
                node.output[i] = renamed
    w, b = _params(head)
    g.node.extend(_head_nodes(EMBEDDING_NAME, w, b, PROBS_NAME))
    g.initializer.extend([w, b])
    dim = _dim_of(g, EMBEDDING_NAME)
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, ["N", head.num_classes]),
            helper.make_tensor_value_info(EMBEDDING_NAME, TensorProto.FLOAT, ["N", dim]),
        ]
    )
    _prune(g)
    if not any(op.domain in ("", "ai.onnx") for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("", HEAD_OPSET))
    onnx.checker.check_model(model)
    return model


def _dim_of(g: onnx.GraphProto, name: str) -> int | str:
    for vi in g.output:
        if vi.name == name:
            d = vi.type.tensor_type.shape.dim[-1]
            return int(d.dim_value) if d.HasField("dim_value") else d.dim_param or "D"
    raise ValueError(f"backbone graph has no output {name!r}")


def _prune(g: onnx.GraphProto) -> None:
    """Drop nodes and initializers no graph output depends on."""
    needed = {o.name for o in g.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(list(g.node)):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
            for attr in node.attribute:  # subgraphs (If/Loop) read outer names too
                for sub in [attr.g, *attr.graphs]:
                    for sn in sub.node:
                        needed.update(sn.input)
    keep.reverse()
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed]
    del g.initializer[:]
    g.initializer.extend(inits)
