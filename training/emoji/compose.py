"""Compose a linear head onto the shipped imagenet bundle's ONNX graph (no Keras round trip).

The backbone graph is used as it is (its own `image` input and `embedding` output); the head
adds: sqrt(embedding) [+ the ImageNet bird-mass logit] -> project -> standardise -> dot -> bias -> softmax over
(0, z), i.e. probs = (1 - sigmoid(z), sigmoid(z)). The ImageNet `probs` output is renamed to
an internal tensor. `parity` checks the composed graph against the numpy head.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.bundle import EMBEDDING_NAME, PROBS_NAME
from app.runtime import OnnxModel
from training.emoji.heads import MASS_EPS, LinearHead
from training.emoji.identity import IdentityHead
from training.imagenet import BIRD_INDICES

_INTERNAL_PROBS = "imagenet_probs"
_T_CLIP = 1e-12  # thresholds within 1e-12 of 0 or 1 (fine-tuned heads reach 1 - 1e-6)


def threshold_logit(t: float) -> float:
    """logit(t) of a combine threshold, finite for t in [0, 1]."""
    t = min(max(float(t), _T_CLIP), 1 - _T_CLIP)
    return float(np.log(t / (1 - t)))


def compose(
    backbone_onnx: Path | onnx.ModelProto,
    head: LinearHead | IdentityHead,
    combine_threshold: float | None = None,
    eps: float = 0.0,
    features: str = EMBEDDING_NAME,
) -> bytes:
    """The serialized composed model: input `image`, outputs `probs` (N x 2), `embedding`.

    With `combine_threshold` t, P(positive) = max(ImageNet bird mass, sigmoid(z - logit t)):
    at 0.5 it says "mass >= 0.5 or head score >= t" (tasks.decision_scores). With `eps`, the
    head's input is sqrt(embedding + eps) (top_finetune's heads) instead of sqrt(embedding).
    `features`: the tensor the head reads instead of the `embedding` output (e.g. several
    members' embeddings side by side, top_graph.add_members). A ModelProto given is changed
    in place."""
    model = (
        backbone_onnx
        if isinstance(backbone_onnx, onnx.ModelProto)
        else onnx.load(str(backbone_onnx))
    )
    g = model.graph
    for node in g.node:
        node.output[:] = [_INTERNAL_PROBS if o == PROBS_NAME else o for o in node.output]
        node.input[:] = [_INTERNAL_PROBS if i == PROBS_NAME else i for i in node.input]
    emb_out = next(o for o in g.output if o.name == EMBEDDING_NAME)
    dim = emb_out.type.tensor_type.shape.dim[1].dim_value

    def const(name: str, value: npt.NDArray[np.generic]) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    nodes = [helper.make_node("Relu", [features], ["head_emb_pos"])]
    root_in = "head_emb_pos"
    if eps:
        eps_c = const("head_eps", np.asarray(eps, np.float32))
        nodes.append(helper.make_node("Add", ["head_emb_pos", eps_c], ["head_emb_eps"]))
        root_in = "head_emb_eps"
    # heads.features: the square root of the embedding
    nodes.append(helper.make_node("Sqrt", [root_in], ["head_emb_root"]))
    head_in = "head_emb_root"
    if head.use_mass:
        idx = const("head_bird_indices", np.asarray(BIRD_INDICES, np.int64))
        axes = const("head_axes1", np.asarray([1], np.int64))
        nodes += [
            helper.make_node("Gather", [_INTERNAL_PROBS, idx], ["head_bird_p"], axis=1),
            helper.make_node("ReduceSum", ["head_bird_p", axes], ["head_mass"], keepdims=1),
            helper.make_node(
                "Clip",
                [
                    "head_mass",
                    const("head_lo", np.asarray(MASS_EPS, np.float32)),
                    const("head_hi", np.asarray(1 - MASS_EPS, np.float32)),
                ],
                ["head_mass_c"],
            ),
            helper.make_node(
                "Sub", [const("head_one", np.asarray(1.0, np.float32)), "head_mass_c"], ["head_1m"]
            ),
            helper.make_node("Div", ["head_mass_c", "head_1m"], ["head_odds"]),
            helper.make_node("Log", ["head_odds"], ["head_mass_logit"]),
            helper.make_node("Concat", ["head_emb_root", "head_mass_logit"], ["head_x"], axis=1),
        ]
        head_in = "head_x"
    if isinstance(head, IdentityHead):
        nodes += _identity_nodes(head, head_in, const)
    else:
        w64, b64 = head.folded()  # projection and standardisation folded into one dot product
        w, b = w64.astype(np.float32), np.float32(b64)
        nodes += [
            helper.make_node("MatMul", [head_in, const("head_w", w[:, None])], ["head_xw"]),
            helper.make_node(
                "Add", ["head_xw", const("head_b", np.asarray([b], np.float32))], ["head_z"]
            ),
        ]
    if combine_threshold is None:
        nodes += [
            helper.make_node("Sub", ["head_z", "head_z"], ["head_zero"]),
            helper.make_node("Concat", ["head_zero", "head_z"], ["head_logits"], axis=1),
            helper.make_node("Softmax", ["head_logits"], [PROBS_NAME], axis=1),
        ]
    else:
        shift = np.asarray([threshold_logit(combine_threshold)], np.float32)
        idx = const("comb_bird_indices", np.asarray(BIRD_INDICES, np.int64))
        nodes += [
            helper.make_node("Sub", ["head_z", const("comb_shift", shift)], ["comb_z"]),
            helper.make_node("Sigmoid", ["comb_z"], ["comb_head_p"]),
            helper.make_node("Gather", [_INTERNAL_PROBS, idx], ["comb_bird_p"], axis=1),
            helper.make_node(
                "ReduceSum",
                ["comb_bird_p", const("comb_axes1", np.asarray([1], np.int64))],
                ["comb_mass"],
                keepdims=1,
            ),
            helper.make_node("Max", ["comb_mass", "comb_head_p"], ["comb_p"]),
            helper.make_node(
                "Sub", [const("comb_one", np.asarray(1.0, np.float32)), "comb_p"], ["comb_q"]
            ),
            helper.make_node("Concat", ["comb_q", "comb_p"], [PROBS_NAME], axis=1),
        ]
    g.node.extend(nodes)
    probs = helper.make_tensor_value_info(PROBS_NAME, TensorProto.FLOAT, [None, 2])
    keep = [o for o in g.output if o.name == EMBEDDING_NAME]
    del g.output[:]
    g.output.extend([probs, *keep])
    assert dim > 0
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _identity_nodes(
    head: IdentityHead, head_in: str, const: Callable[[str, npt.NDArray[np.generic]], str]
) -> list[onnx.NodeProto]:
    """head_z = log(sum of the positive emoji's softmax) - log(sum of the others'): class
    logits, then a log-sum-exp over each group (ReduceLogSumExp, numerically stable)."""
    w64, b64 = head.folded()
    pos = np.flatnonzero(head.positive).astype(np.int64)
    neg = np.flatnonzero(~head.positive).astype(np.int64)
    return [
        helper.make_node("MatMul", [head_in, const("head_w", w64.astype(np.float32))], ["head_xw"]),
        helper.make_node("Add", ["head_xw", const("head_b", b64.astype(np.float32))], ["head_cl"]),
        helper.make_node("Gather", ["head_cl", const("head_pos", pos)], ["head_cl_pos"], axis=1),
        helper.make_node("Gather", ["head_cl", const("head_neg", neg)], ["head_cl_neg"], axis=1),
        helper.make_node("ReduceLogSumExp", ["head_cl_pos"], ["head_lse_pos"], axes=[1]),
        helper.make_node("ReduceLogSumExp", ["head_cl_neg"], ["head_lse_neg"], axes=[1]),
        helper.make_node("Sub", ["head_lse_pos", "head_lse_neg"], ["head_z"]),
    ]


def parity(
    model: OnnxModel,
    head: LinearHead | IdentityHead,
    batch: npt.NDArray[np.float32],
    head_input: npt.NDArray[np.float32],
    mass: npt.NDArray[np.float32] | None = None,
    combine_threshold: float | None = None,
) -> float:
    """max |P(positive) of the composed graph - the numpy head| on `batch` (head_input: its
    features, mass: its ImageNet bird mass), run through the server's runtime."""
    probs = model.run(np.ascontiguousarray(batch, dtype=np.float32)).probs
    want = head.score(head_input)
    if combine_threshold is not None and mass is not None:
        shift = threshold_logit(combine_threshold)
        shifted = 1.0 / (1.0 + np.exp(-(head.logits(head_input) - shift)))
        want = np.maximum(mass.astype(np.float64), shifted)
    return float(np.max(np.abs(probs[:, 1] - want)))
