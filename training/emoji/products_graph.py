"""The `products` graph's shared classifier: find it, read it, replace it, run the branches.

The shipped graph runs the conv stack on the image and on its mirror (flip_tta) and averages
two softmaxes that share one classifier (MatMul + Add on each branch's 256-d ReLU embedding).
Replacing that classifier's initializers keeps serving one graph with the same input `image`,
outputs `probs` and `embedding` and their shapes. `BranchEmbedder` runs uploads through
`app.imaging.prepare` (the bundle's input spec, as serving does) and returns each branch's
embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.bundle import InputSpec

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


# --- graph surgery ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassifierSite:
    """Where the shared classifier sits: its weight/bias initializers and each branch's input."""

    weight: str
    bias: str
    branch_inputs: tuple[str, ...]  # the per-branch embedding tensors fed to the MatMuls
    matmuls: tuple[str, ...]  # node names (or output names) of those MatMuls


def find_classifier(model: onnx.ModelProto) -> ClassifierSite:
    """Softmax <- Add(MatMul(x, W), b) on every branch; all branches must share W and b."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    sites: list[tuple[str, str, str, str]] = []
    for node in g.node:
        if node.op_type != "Softmax":
            continue
        add = producer.get(node.input[0])
        if add is None or add.op_type != "Add":
            continue
        mm_in = [i for i in add.input if i not in inits]
        bias = [i for i in add.input if i in inits]
        mm = producer.get(mm_in[0]) if len(mm_in) == 1 else None
        if mm is None or mm.op_type != "MatMul" or len(bias) != 1 or mm.input[1] not in inits:
            continue
        sites.append((mm.input[1], bias[0], mm.input[0], mm.output[0]))
    if not sites:
        raise ValueError("no Softmax(MatMul + Add) classifier found in the graph")
    if len({(w, b) for w, b, _, _ in sites}) != 1:
        raise ValueError("the branches' classifiers do not share one weight and bias")
    w, b = sites[0][0], sites[0][1]
    return ClassifierSite(w, b, tuple(s[2] for s in sites), tuple(s[3] for s in sites))


def classifier_params(model: onnx.ModelProto) -> tuple[F32, F32]:
    site = find_classifier(model)
    inits = {i.name: i for i in model.graph.initializer}
    w = numpy_helper.to_array(inits[site.weight]).astype(np.float32)
    b = numpy_helper.to_array(inits[site.bias]).astype(np.float32)
    return w, b


def with_branch_outputs(model_bytes: bytes) -> tuple[bytes, tuple[str, ...]]:
    """The graph with each branch's embedding added as an output (for feature extraction)."""
    model = onnx.load_from_string(model_bytes)
    site = find_classifier(model)
    w, _ = classifier_params(model)
    for name in site.branch_inputs:
        model.graph.output.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, int(w.shape[0])])
        )
    return model.SerializeToString(), site.branch_inputs


def replace_head(model_bytes: bytes, weight: F32, bias: F32, sqrt: bool = False) -> bytes:
    """The same graph with the shared classifier set to (weight, bias); with `sqrt` every
    branch's MatMul reads the square root of its (non-negative, post-ReLU) embedding."""
    model = onnx.load_from_string(model_bytes)
    site = find_classifier(model)
    old_w, old_b = classifier_params(model)
    if weight.shape != old_w.shape or bias.shape != old_b.shape:
        raise ValueError(f"head shape {weight.shape}/{bias.shape} != {old_w.shape}/{old_b.shape}")
    g = model.graph
    for init in g.initializer:
        if init.name == site.weight:
            init.CopyFrom(numpy_helper.from_array(weight.astype(np.float32), site.weight))
        elif init.name == site.bias:
            init.CopyFrom(numpy_helper.from_array(bias.astype(np.float32), site.bias))
    if sqrt:
        nodes = list(g.node)
        for k, (node_out, src) in enumerate(zip(site.matmuls, site.branch_inputs, strict=True)):
            mm = next(n for n in nodes if node_out in n.output)
            root = f"products_head_sqrt_{k}"
            pos = nodes.index(mm)
            nodes.insert(pos, helper.make_node("Sqrt", [src], [root], name=root))
            mm.input[0] = root
        del g.node[:]
        g.node.extend(nodes)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def branch_probs(emb: F32, weight: F32, bias: F32, sqrt: bool = False) -> F64:
    """What the graph computes from branch embeddings (N x B x D): the mean of the branches'
    softmaxes."""
    x = np.sqrt(np.maximum(emb, 0.0)) if sqrt else emb
    z = x.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64)
    n, nb, c = z.shape
    return softmax(z.reshape(n * nb, c)).reshape(n, nb, c).mean(axis=1)


# --- features through the serving path -------------------------------------------------------


class BranchEmbedder:
    """Branch embeddings (N x B x D) of uploads, through `app.imaging.prepare` + onnxruntime."""

    def __init__(
        self, graph: bytes, names: Sequence[str], spec: InputSpec, threads: int = 0
    ) -> None:
        # A raw session, not app.runtime: the outputs are the flip-TTA branches' intermediate
        # embeddings (with_branch_outputs), which OnnxModel.run does not return.
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])
        self.names, self.spec = tuple(names), spec

    def prepared(self, x: F32) -> F32:
        outs = self.session.run(list(self.names), {"image": np.ascontiguousarray(x, np.float32)})
        return np.stack(outs, axis=1).astype(np.float32)

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]], batch: int = 512) -> F32:
        from app.imaging import ImageLimits, prepare
        from training.serving_eval import encode_png

        limits = ImageLimits()
        out = []
        for s in range(0, len(images), batch):
            x = np.stack(
                [prepare(encode_png(im), self.spec, limits).array for im in images[s : s + batch]]
            )
            out.append(self.prepared(x))
        d = self.session.get_outputs()[0].shape
        return np.concatenate(out) if out else np.zeros((0, len(self.names), d[-1]), np.float32)
