"""The fine-tuned top (block15 + head conv) as ONNX initializers: served graph and fold graphs.

TensorFlow-free (scripts/eval-bundles uses it). The imagenet graph after the cut
(top_finetune.CUT) is Conv(+bias) or Conv -> Mul -> Add (a depthwise conv whose BatchNorm
tf2onnx left as two constant ops), Clip, GlobalAveragePool. Fine-tuned weights come in
Keras layout keyed by the layer names top_finetune.build_top gives (``conv<i>``/``dw<i>``,
``i`` = the op's index in top_ops); they go back into the same initializers, the graph's
ops unchanged: the kernel transposed to ONNX layout, the bias into the conv's bias input or,
for a conv without one, into the following Add, whose Mul then multiplies by 1.
Fold graphs are stored as float16 differences from the imagenet graph's initializers.

Several fine-tuned tops (members: the same recipe, other seeds) share one trunk: each member
after the first gets its own copy of the nodes from the cut to the embedding, its tensors and
top initializers renamed with ``__m<k>``; the head reads the members' sqrt-features side by
side with each member's head divided by K (so the logit is the mean of the members' logits) and
the served embedding is the mean of theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import helper, numpy_helper

from training.emoji.compose import compose, threshold_logit
from training.emoji.heads import LinearHead

CUT = "serving_1/block14_add_1/Add:0"  # as in top_finetune (which imports TensorFlow lazily)
EPS = 1e-4  # top_finetune.EPS: the head's input is sqrt(embedding + EPS)
HEAD_W, HEAD_B = "head_w", "head_b"  # compose's names for the logistic head's initializers
TOP_FOLDS = "loso-top.npz"
ENSEMBLE_FEATURES = "ens_emb_concat"  # the members' embeddings side by side (the head's input)


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


def member_name(name: str, k: int) -> str:
    """Member `k`'s copy of a tensor or initializer of the top (member 0 keeps the original)."""
    return name if k == 0 else f"{name}__m{k}"


def _top_nodes(model: onnx.ModelProto) -> tuple[int, int]:
    """[start, end) of the nodes from the cut up to the node that makes the embedding tensor
    (GlobalAveragePool, then its Squeeze)."""
    nodes = list(model.graph.node)
    start = next(i for i, n in enumerate(nodes) if CUT in n.input)
    gap = next(i for i in range(start, len(nodes)) if nodes[i].op_type == "GlobalAveragePool")
    end = gap + 1
    if end < len(nodes) and nodes[end].op_type in ("Squeeze", "Reshape", "Flatten"):
        end += 1
    return start, end


def add_members(
    model: onnx.ModelProto, k_members: int, top_names: Sequence[str], keep_original: bool = False
) -> str:
    """Give `model` (the imagenet graph, changed in place) more copies of the top; return the
    tensor the head reads (the members' embeddings side by side) after rewiring the
    `embedding` output to their mean. Member k is copy ``first + k`` (member_name), where
    `first` is 0 (member 0 is the original top, whose values are then replaced) or, with
    `keep_original`, 1: the original top stays as it is, so the ImageNet `probs` (and the bird
    mass) are the imagenet bundle's, and K copies are added. K = 1 without `keep_original`:
    the graph unchanged, the head reads `embedding`."""
    from app.bundle import EMBEDDING_NAME

    first = int(keep_original)
    if k_members == 1 and not keep_original:
        return EMBEDDING_NAME
    g = model.graph
    start, end = _top_nodes(model)
    top = list(g.node)[start:end]
    made = {o for n in top for o in n.output}
    own = set(top_names)
    inits = {t.name: t for t in g.initializer}
    emb = top[-1].output[0]
    clones: list[onnx.NodeProto] = []
    for k in range(1, k_members + first):
        for n in top:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = member_name(n.name, k) if n.name else ""
            c.input[:] = [member_name(i, k) if i in made or i in own else i for i in n.input]
            c.output[:] = [member_name(o, k) for o in n.output]
            clones.append(c)
        for name in top_names:
            t = onnx.TensorProto()
            t.CopyFrom(inits[name])
            t.name = member_name(name, k)
            g.initializer.append(t)
    embs = [member_name(emb, k) for k in range(first, k_members + first)]
    clones += [
        helper.make_node("Concat", embs, [ENSEMBLE_FEATURES], axis=1),
        helper.make_node("Mean" if len(embs) > 1 else "Identity", embs, ["ens_emb_mean"]),
    ]
    for n in list(g.node)[end:]:  # what read the original embedding now reads the mean
        if n.op_type == "Identity" and n.output[0] == EMBEDDING_NAME:
            n.input[0] = "ens_emb_mean"
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(nodes[:end] + clones + nodes[end:])
    return ENSEMBLE_FEATURES


def head(ws: Sequence[npt.NDArray[Any]], bs: Sequence[float]) -> LinearHead:
    """The mean of the members' logits, mean_k(sqrt(embedding_k + EPS) @ w_k + b_k), as one
    LinearHead on their sqrt-features side by side (for compose)."""
    w32 = (np.concatenate([np.asarray(w, np.float64) for w in ws]) / len(ws)).astype(np.float32)
    return LinearHead(np.zeros_like(w32), np.ones_like(w32), w32, float(np.mean(bs)), False, 0.0)


def served_graph(
    imagenet_onnx: Path,
    members: Sequence[dict[str, npt.NDArray[Any]]],
    head_keys: tuple[str, str] = (HEAD_W, HEAD_B),
    combine_threshold: float | None = None,
) -> tuple[bytes, dict[str, npt.NDArray[np.float32]]]:
    """The imagenet graph with each member's fine-tuned top and the head under `head_keys`
    composed on: probs = softmax(0, mean logit), embedding = the members' mean fine-tuned
    embedding; also the top's values, by member-renamed initializer name.
    `combine_threshold` t (bird): the original top is kept for the ImageNet bird mass and the
    members are added beside it; P(positive) = max(bird mass, sigmoid(mean logit - logit t))
    (compose), i.e. "mass >= 0.5 or the head's probability >= t" at 0.5."""
    model = onnx.load(str(imagenet_onnx))
    per = [onnx_initializers(model, w) for w in members]
    keep = combine_threshold is not None
    features = add_members(model, len(members), sorted(per[0]), keep_original=keep)
    first = int(keep)
    values = {member_name(n, k + first): v for k, vs in enumerate(per) for n, v in vs.items()}
    set_initializers(model, values)
    kw, kb = head_keys
    h = head([w[kw] for w in members], [float(w[kb]) for w in members])
    model_bytes = compose(model, h, combine_threshold=combine_threshold, eps=EPS, features=features)
    return model_bytes, values


COMBINE_SHIFT = "comb_shift"  # compose's initializer: logit of the head's threshold (bird)


def fold_deltas(
    imagenet: onnx.ModelProto, weights: dict[str, npt.NDArray[Any]]
) -> dict[str, npt.NDArray[np.float16]]:
    """A fold's top as float16 differences from the imagenet graph's initializers."""
    values = onnx_initializers(imagenet, weights)
    base = initializer_values(imagenet, list(values))
    return {k: (v - base[k]).astype(np.float16) for k, v in values.items()}


@dataclass(frozen=True)
class FoldMember:
    """One member's fold model as stored: top differences (none: the frozen top) and head."""

    deltas: dict[str, npt.NDArray[Any]]
    w: npt.NDArray[Any]
    b: float


def delta_key(fold: int, member: int, k: int, members: int) -> str:
    """The key of fold `fold`, member `member`, initializer `k` (of `names`) in TOP_FOLDS
    (one member: v2's ``d<fold>_<k>``)."""
    return f"d{fold}_{k}" if members == 1 else f"d{fold}m{member}_{k}"


def stored_members(z: Any, fold: int) -> list[FoldMember]:
    """Fold `fold`'s members from a loaded TOP_FOLDS file (w: styles x [members x] dim)."""
    names = [str(n) for n in z["names"]]
    w, b = np.asarray(z["w"]), np.asarray(z["b"])
    if w.ndim == 2:  # one member (santa v2)
        w, b = w[:, None, :], b[:, None]
    k_members = w.shape[1]
    out = []
    for m in range(k_members):
        keys = {n: delta_key(fold, m, k, k_members) for k, n in enumerate(names)}
        deltas = {n: z[key] for n, key in keys.items() if key in z.files}
        out.append(FoldMember(deltas, w[fold, m], float(b[fold, m])))
    return out


def fold_graph(
    served: onnx.ModelProto,
    imagenet: onnx.ModelProto,
    names: list[str],
    members: Sequence[FoldMember],
    first: int = 0,
    threshold: float | None = None,
) -> bytes:
    """The served graph with one fold's tops and heads swapped in: every name in `names` gets,
    for each member k (copy ``first + k``, see add_members), imagenet's value plus that
    member's stored difference. `threshold` (a graph composed with a combine threshold, bird):
    the fold's own threshold replaces the served one, so P(positive) >= 0.5 is the fold's
    decision."""
    model = onnx.ModelProto()
    model.CopyFrom(served)
    base = initializer_values(imagenet, names)
    values: dict[str, Any] = {}
    for k, m in enumerate(members):
        for n in names:
            d = m.deltas.get(n)
            values[member_name(n, k + first)] = (
                base[n] if d is None else base[n] + d.astype(np.float32)
            )
    w, b = head([m.w for m in members], [m.b for m in members]).folded()
    values[HEAD_W] = np.asarray(w, np.float32).reshape(-1, 1)
    values[HEAD_B] = np.asarray([b], np.float32)
    if threshold is not None:
        values[COMBINE_SHIFT] = np.asarray([threshold_logit(threshold)], np.float32)
    set_initializers(model, values)
    return bytes(model.SerializeToString())


def cut_subgraph(model_bytes: bytes, outputs: Sequence[str] = ("probs",)) -> bytes:
    """The graph from the cut tensor (NCHW float32) to `outputs`: parity on cached cut
    tensors."""
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(model_bytes))
    if CUT not in {v.name for v in model.graph.value_info}:
        vi = onnx.helper.make_tensor_value_info(CUT, onnx.TensorProto.FLOAT, [None, 192, 7, 7])
        model.graph.value_info.append(vi)
    sub = onnx.utils.Extractor(model).extract_model([CUT], list(outputs))
    return bytes(sub.SerializeToString())
