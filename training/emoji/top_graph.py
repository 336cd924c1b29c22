"""The fine-tuned top (block15 + head conv) as ONNX initializers: served graph and fold graphs.

TensorFlow-free (scripts/eval-bundles uses it). The imagenet graph after the cut
(top_finetune.CUT) is Conv(+bias) or Conv -> Mul -> Add (a depthwise conv whose BatchNorm
tf2onnx left as two constant ops), Clip, GlobalAveragePool. Fine-tuned weights come in
Keras layout keyed by the layer names top_finetune.build_top gives (``conv<i>``/``dw<i>``,
``i`` = the op's index in top_ops); they go back into the same initializers, the graph's
ops unchanged: the kernel transposed to ONNX layout, the bias into the conv's bias input or,
for a conv without one, into the following Add, whose Mul then multiplies by 1.
Fold graphs are stored as float16 differences from the imagenet graph's initializers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from training.emoji.compose import compose
from training.emoji.heads import LinearHead

CUT = "serving_1/block14_add_1/Add:0"  # as in top_finetune (which imports TensorFlow lazily)
EPS = 1e-4  # top_finetune.EPS: the head's input is sqrt(embedding + EPS)
HEAD_W, HEAD_B = "head_w", "head_b"  # compose's names for the logistic head's initializers
TOP_FOLDS = "loso-top.npz"


@dataclass(frozen=True)
class ConvParams:
    layer: str  # the Keras layer name in top_finetune.build_top
    weight: str
    bias: str | None
    mul: str | None
    add: str | None
    depthwise: bool


def top_params(model: onnx.ModelProto) -> list[ConvParams]:
    """The convs after the cut with their initializer names, in graph order (as top_ops)."""
    init = {i.name for i in model.graph.initializer}
    nodes = list(model.graph.node)
    start = next(i for i, n in enumerate(nodes) if CUT in n.input)
    out: list[dict[str, Any]] = []
    n_ops = 0  # top_ops' op index: Mul/Add by constants fold into the conv before them
    for n in nodes[start:]:
        ins = list(n.input)
        if n.op_type == "Conv":
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            bias = ins[2] if len(ins) > 2 else None
            prefix = "dw" if group > 1 else "conv"
            out.append({"layer": f"{prefix}{n_ops}", "weight": ins[1], "bias": bias,
                        "mul": None, "add": None, "depthwise": group > 1})  # fmt: skip
        elif n.op_type in ("Mul", "Add") and ins[1] in init:
            key = n.op_type.lower()
            if out[-1][key] is not None or (key == "mul" and out[-1]["add"] is not None):
                raise ValueError(f"unexpected constant {n.op_type} after {out[-1]['layer']}")
            out[-1][key] = ins[1]
            continue
        elif n.op_type == "GlobalAveragePool":
            return [ConvParams(**o) for o in out]
        n_ops += 1
    raise ValueError("no GlobalAveragePool after the cut")


def onnx_initializers(
    model: onnx.ModelProto, weights: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[np.float32]]:
    """Keras-layout top weights -> {initializer name: value} for the graph `model`."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    out: dict[str, npt.NDArray[np.float32]] = {}
    for p in top_params(model):
        k = np.asarray(weights[f"{p.layer}.kernel"], np.float32)
        b = np.asarray(weights[f"{p.layer}.bias"], np.float32)
        # Keras depthwise (kh, kw, C, 1) -> (C, 1, kh, kw); conv (kh, kw, I, O) -> (O, I, kh, kw)
        out[p.weight] = k.transpose(2, 3, 0, 1) if p.depthwise else k.transpose(3, 2, 0, 1)
        if p.mul is not None:
            out[p.mul] = np.ones(shapes[p.mul], np.float32)
        if p.bias is not None:
            out[p.bias] = b.reshape(shapes[p.bias])
            if p.add is not None:
                out[p.add] = np.zeros(shapes[p.add], np.float32)
        elif p.add is not None:
            out[p.add] = b.reshape(shapes[p.add])
        else:
            raise ValueError(f"{p.layer}: no bias input and no Add to carry the bias")
        if out[p.weight].shape != shapes[p.weight]:
            raise ValueError(f"{p.layer}: {out[p.weight].shape} vs {shapes[p.weight]}")
    return out


def set_initializers(model: onnx.ModelProto, values: dict[str, npt.NDArray[Any]]) -> None:
    """Replace the named initializers' values in place (same names, shapes and dtype)."""
    todo = dict(values)
    for i, t in enumerate(model.graph.initializer):
        if t.name in todo:
            v = np.asarray(todo.pop(t.name), np.float32).reshape(tuple(t.dims))
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(v, t.name))
    if todo:
        raise KeyError(f"no such initializers: {sorted(todo)}")


def initializer_values(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    want = set(names)
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in want}


def head(w: npt.NDArray[Any], b: float) -> LinearHead:
    """logit = sqrt(embedding + EPS) @ w + b as a LinearHead (for compose)."""
    w32 = np.asarray(w, np.float32)
    return LinearHead(np.zeros_like(w32), np.ones_like(w32), w32, float(b), False, 0.0)


def served_graph(
    imagenet_onnx: Path, weights: dict[str, npt.NDArray[Any]]
) -> tuple[bytes, dict[str, npt.NDArray[np.float32]]]:
    """The imagenet graph with the fine-tuned top swapped in and the santa head composed on
    (probs = softmax(0, logit), embedding = the fine-tuned embedding); also the top's values."""
    model = onnx.load(str(imagenet_onnx))
    values = onnx_initializers(model, weights)
    set_initializers(model, values)
    return compose(model, head(weights["head_w"], float(weights["head_b"])), eps=EPS), values


def fold_deltas(
    imagenet: onnx.ModelProto, weights: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[np.float16]]:
    """A fold's top as float16 differences from the imagenet graph's initializers."""
    values = onnx_initializers(imagenet, weights)
    base = initializer_values(imagenet, list(values))
    return {k: (v - base[k]).astype(np.float16) for k, v in values.items()}


def fold_graph(
    served: onnx.ModelProto,
    imagenet: onnx.ModelProto,
    names: list[str],
    deltas: dict[str, npt.NDArray[Any]],
    w: npt.NDArray[Any],
    b: float,
) -> bytes:
    """The served graph with one fold's top and head swapped in: every name in `names` gets
    imagenet's value plus the fold's stored difference (none stored: the frozen top)."""
    model = onnx.ModelProto()
    model.CopyFrom(served)
    base = initializer_values(imagenet, names)
    values: dict[str, Any] = {
        n: base[n] + deltas[n].astype(np.float32) if n in deltas else base[n] for n in names
    }
    values[HEAD_W] = np.asarray(w, np.float32).reshape(-1, 1)
    values[HEAD_B] = np.asarray([b], np.float32)
    set_initializers(model, values)
    return bytes(model.SerializeToString())


def cut_subgraph(model_bytes: bytes) -> bytes:
    """The graph from the cut tensor (NCHW float32) to `probs`: parity on cached cut tensors."""
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    if CUT not in {v.name for v in model.graph.value_info}:
        vi = onnx.helper.make_tensor_value_info(CUT, onnx.TensorProto.FLOAT, [None, 192, 7, 7])
        model.graph.value_info.append(vi)
    sub = onnx.utils.Extractor(model).extract_model([CUT], ["probs"])
    return bytes(sub.SerializeToString())
