"""Refit `products`' classifier on its frozen embedding with Fashion-MNIST plus emoji clothing.

The shipped graph runs the conv stack on the image and on its mirror (flip_tta) and averages
two softmaxes that share one classifier (MatMul + Add on each branch's 256-d ReLU embedding).
This module swaps that shared classifier for a new one (graph surgery on the initializers, so
serving stays one graph: input `image`, outputs `probs` and `embedding`, unchanged shapes).
The new head is a softmax regression fitted on every Fashion-MNIST training image and on
views of the clothing drawings of the training styles (each view sent through
`app.imaging.prepare` with the bundle's input spec, as serving does), with the drawings'
weight and the L2 strength chosen by an inner leave-one-style-out on the training styles.
CLI: ``python -m training.emoji.products_head [--ship]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.bundle import Bundle
from training.emoji.catalog import STYLES
from training.emoji.products_views import EVAL_VIEWS, BranchEmbedder, Drawings, embed_drawings

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


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


# --- softmax regression ----------------------------------------------------------------------


def softmax(z: F64) -> F64:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    out: F64 = e / e.sum(axis=1, keepdims=True)
    return out


def fit_softmax(
    x: F32,
    y: I64,
    sample_weight: F64,
    *,
    l2: float,
    init: tuple[F32, F32],
    prior: tuple[F32, F32] | None = None,
    max_iter: int = 200,
) -> tuple[F32, F32]:
    """Weighted mean cross-entropy + l2/2 * ||W - W_prior||^2 (bias free), by L-BFGS started
    at `init`. With the shipped head as start and prior, the refit moves only as far from
    what Fashion-MNIST taught as the drawings ask for."""
    from scipy.optimize import minimize  # train extra

    d, c = init[0].shape
    w_prior = prior[0].astype(np.float64) if prior is not None else np.zeros((d, c))
    sw = (sample_weight / sample_weight.sum()).astype(np.float32)
    onehot = np.zeros((len(y), c), np.float32)
    onehot[np.arange(len(y)), y] = 1.0
    xf = np.ascontiguousarray(x, dtype=np.float32)

    def loss_grad(theta: F64) -> tuple[float, F64]:
        w = theta[: d * c].reshape(d, c)
        b = theta[d * c :]
        z = xf @ w.astype(np.float32) + b.astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
        logp = z - lse
        loss = -float((sw[:, None] * onehot * logp).sum())
        r = (np.exp(logp) - onehot) * sw[:, None]
        gw = (xf.T @ r).astype(np.float64)
        gb = r.sum(axis=0).astype(np.float64)
        diff = w - w_prior
        loss += 0.5 * l2 * float((diff * diff).sum())
        gw += l2 * diff
        return loss, np.concatenate([gw.ravel(), gb])

    theta0 = np.concatenate([init[0].astype(np.float64).ravel(), init[1].astype(np.float64)])
    res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    theta = res.x
    return theta[: d * c].reshape(d, c).astype(np.float32), theta[d * c :].astype(np.float32)


def branch_probs(emb: F32, weight: F32, bias: F32, sqrt: bool = False) -> F64:
    """What the graph computes from branch embeddings (N x B x D): the mean of the branches'
    softmaxes."""
    x = np.sqrt(np.maximum(emb, 0.0)) if sqrt else emb
    z = x.astype(np.float64) @ weight.astype(np.float64) + bias.astype(np.float64)
    n, nb, c = z.shape
    return softmax(z.reshape(n * nb, c)).reshape(n, nb, c).mean(axis=1)


# --- leave-one-style-out ---------------------------------------------------------------------

TRAIN_KINDS = {"drawing": 1, "product_shot": 1, "augment": 16, "filled": 6, "thick": 6}
# (drawings' share of the total training weight, L2 towards the shipped head)
GRID = ((0.03, 1e-3), (0.1, 1e-3), (0.3, 1e-3), (0.3, 1e-4))
FMNIST_SLACK = 0.001  # inner rule: Fashion-MNIST val accuracy may drop at most this much


def as_rows(emb: F32, y: I64) -> tuple[F32, I64]:
    """Every branch embedding is a row (the mirror is a training view for free)."""
    return emb.reshape(-1, emb.shape[-1]), np.repeat(y, emb.shape[1])


@dataclass
class Data:
    fm_emb: F32  # Fashion-MNIST train, N x B x D
    fm_y: I64
    val_idx: I64  # the bundle's own validation split of the training images
    dr: Drawings


def fit_fold(
    data: Data, styles: Sequence[str], share: float, l2: float, fm_idx: I64, init: tuple[F32, F32]
) -> tuple[F32, F32]:
    """Head on Fashion-MNIST rows `fm_idx` and every training view of `styles`' drawings."""
    xf, yf = as_rows(data.fm_emb[fm_idx], data.fm_y[fm_idx])
    m = np.isin(data.dr.style, list(styles))
    xd, yd = as_rows(data.dr.emb[m], data.dr.y[m])
    x, y = np.concatenate([xf, xd]), np.concatenate([yf, yd])
    w = np.concatenate(
        [np.full(len(xf), (1 - share) / len(xf)), np.full(len(xd), share / max(len(xd), 1))]
    )
    return fit_softmax(x, y, w, l2=l2, init=init, prior=init)


FitFn = Callable[[Data, Sequence[str], float, float, I64, tuple[F32, F32]], tuple[F32, F32]]


def top1(data: Data, style: str, kind: str, head: tuple[F32, F32]) -> tuple[int, int]:
    m = (data.dr.style == style) & (data.dr.kind == kind)
    pred = branch_probs(data.dr.emb[m], *head).argmax(axis=1)
    return int((pred == data.dr.y[m]).sum()), int(m.sum())


def choose(
    data: Data,
    styles: Sequence[str],
    shipped: tuple[F32, F32],
    fm_sub: I64,
    log: Callable[[str], None],
    fit: FitFn = fit_fold,
) -> tuple[float, float]:
    """The grid point with the most inner held-out drawings right (views as distributed)
    among those whose Fashion-MNIST val accuracy stays within FMNIST_SLACK of the shipped
    head's; inner heads see `fm_sub` (never the val split) and `styles` minus one."""
    val = data.val_idx
    base = float((branch_probs(data.fm_emb[val], *shipped).argmax(1) == data.fm_y[val]).mean())
    best: tuple[int, float, float] | None = None
    for share, l2 in GRID:
        right, total, val_acc = 0, 0, []
        for inner in styles:
            head = fit(data, [s for s in styles if s != inner], share, l2, fm_sub, shipped)
            k, n = top1(data, inner, "drawing", head)
            right, total = right + k, total + n
            pred = branch_probs(data.fm_emb[val], *head).argmax(1)
            val_acc.append(float((pred == data.fm_y[val]).mean()))
        ok = min(val_acc) >= base - FMNIST_SLACK
        log(
            f"  share {share} l2 {l2}: inner drawings {right}/{total}, F-MNIST val min {min(val_acc):.4f} (shipped {base:.4f}){'' if ok else ' rejected'}"
        )
        if ok and (best is None or right > best[0]):
            best = (right, share, l2)
    return (best[1], best[2]) if best else (0.0, GRID[0][1])


# --- run -------------------------------------------------------------------------------------


def load_data(bundle: Bundle, cache: Path, seed: int, log: Callable[[str], None]) -> Data:
    """Branch embeddings of Fashion-MNIST train and of the drawings' views, cached per model."""
    from training.data import stratified_split
    from training.serving_eval import official_test_split

    cache.mkdir(parents=True, exist_ok=True)
    sha = bundle.metadata.artifact.sha256[:12]
    fm_file, dr_file = cache / f"fmnist-train-{sha}.npz", cache / f"drawings-{sha}-{seed}.npz"
    graph, names = with_branch_outputs(bundle.model_path.read_bytes())
    embedder = BranchEmbedder(graph, names, bundle.metadata.input)
    if not fm_file.is_file():
        log(f"embedding Fashion-MNIST train through the serving path -> {fm_file}")
        split = official_test_split(bundle.metadata)
        np.savez(fm_file, emb=embedder(list(split.x_train)), y=split.y_train)
    if not dr_file.is_file():
        log(f"rendering and embedding drawing views {TRAIN_KINDS} -> {dr_file}")
        d = embed_drawings(embedder, TRAIN_KINDS, seed)
        np.savez(dr_file, emb=d.emb, y=d.y, style=d.style, item=d.item, kind=d.kind)
    fm, dr = np.load(fm_file), np.load(dr_file)
    val = stratified_split(fm["y"], 0.1, bundle.metadata.provenance.seed or 0)[1]
    drawings = Drawings(dr["emb"], dr["y"], dr["style"], dr["item"], dr["kind"])
    return Data(fm["emb"], fm["y"], val, drawings)


def inner_subset(data: Data, inner_fm: int) -> I64:
    """A seeded sample of Fashion-MNIST train for the inner fits (never the val split)."""
    rest = np.setdiff1d(np.arange(len(data.fm_y)), data.val_idx)
    pick = np.random.default_rng(0).choice(rest, min(inner_fm, len(rest)), replace=False)
    return np.sort(pick)


def loso(
    data: Data,
    shipped: tuple[F32, F32],
    inner_fm: int,
    log: Callable[[str], None],
    styles: Sequence[str] = tuple(STYLES),
    fit: FitFn = fit_fold,
) -> dict[str, Any]:
    """Outer leave-one-style-out: settings chosen on the six training styles, head fitted on
    them and all Fashion-MNIST train, the held-out style scored once."""
    fm_sub = inner_subset(data, inner_fm)
    every = np.arange(len(data.fm_y))
    folds: dict[str, Any] = {}
    for held in styles:
        rest = [s for s in styles if s != held]
        log(f"fold {held}: choosing on {rest}")
        share, l2 = choose(data, rest, shipped, fm_sub, log, fit)
        head = fit(data, rest, share, l2, every, shipped)
        cells = {k: top1(data, held, k, head) for k in EVAL_VIEWS}
        was = {k: top1(data, held, k, shipped) for k in EVAL_VIEWS}
        folds[held] = {"share": share, "l2": l2, "new": cells, "shipped": was}
        log(
            f"fold {held}: share {share} l2 {l2} -> drawing {cells['drawing']} (shipped head {was['drawing']}), product shot {cells['product_shot']}"
        )
    return folds


def pooled(folds: dict[str, Any], which: str, kind: str) -> tuple[int, int]:
    k = sum(f[which][kind][0] for f in folds.values())
    return k, sum(f[which][kind][1] for f in folds.values())
