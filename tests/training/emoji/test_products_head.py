"""training.emoji.products_head on tiny synthetic graphs and features (no data, no TF)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from training.emoji import products_graph as pg
from training.emoji import products_head as ph
from training.emoji.catalog import STYLES
from training.emoji.products_views import Drawings

D, C = 3, 4


def _graph(shared: bool = True, seed: int = 0) -> bytes:
    """image (N,2,2,1) -> two branches (the image and its negation, standing in for the
    mirror) -> ReLU embedding -> shared MatMul + Add -> Softmax; the mean of the two softmaxes
    is `probs`, the mean of the two embeddings `embedding` (as the shipped graph is wired)."""
    rng = np.random.default_rng(seed)

    def init(name: str, a: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(a.astype(np.float32), name)

    inits = [
        init("we", rng.normal(size=(4, D))),
        init("wc", rng.normal(size=(D, C))),
        init("bc", rng.normal(size=C)),
        init("wc2", rng.normal(size=(D, C))),
        init("neg", np.asarray(-1.0)),
        init("half", np.asarray(0.5)),
        numpy_helper.from_array(np.asarray([-1, 4], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("Mul", ["flat", "neg"], ["flat_m"]),
    ]
    for k, src in enumerate(["flat", "flat_m"]):
        wc = "wc" if shared or k == 0 else "wc2"
        nodes += [
            helper.make_node("MatMul", [src, "we"], [f"pre{k}"]),
            helper.make_node("Relu", [f"pre{k}"], [f"emb{k}"]),
            helper.make_node("MatMul", [f"emb{k}", wc], [f"logit_mm{k}"]),
            helper.make_node("Add", [f"logit_mm{k}", "bc"], [f"logit{k}"]),
            helper.make_node("Softmax", [f"logit{k}"], [f"sm{k}"], axis=-1),
        ]
    nodes += [
        helper.make_node("Add", ["sm0", "sm1"], ["sm_sum"]),
        helper.make_node("Mul", ["sm_sum", "half"], ["probs"]),
        helper.make_node("Add", ["emb0", "emb1"], ["emb_sum"]),
        helper.make_node("Mul", ["emb_sum", "half"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 2, 2, 1])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, C]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [None, D]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _run(model: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"image": x}), strict=True))


def _images(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 2, 2, 1)).astype(np.float32)


def test_find_classifier_sees_one_shared_head_on_both_branches() -> None:
    site = pg.find_classifier(onnx.load_from_string(_graph()))
    assert (site.weight, site.bias) == ("wc", "bc")
    assert site.branch_inputs == ("emb0", "emb1")


def test_find_classifier_refuses_branches_with_different_heads() -> None:
    with pytest.raises(ValueError, match="share"):
        pg.find_classifier(onnx.load_from_string(_graph(shared=False)))


@pytest.mark.parametrize("sqrt", [False, True])
def test_replace_head_keeps_io_and_computes_the_numpy_head(sqrt: bool) -> None:
    model = _graph()
    x = _images()
    before = _run(model, x)
    rng = np.random.default_rng(2)
    w = rng.normal(size=(D, C)).astype(np.float32)
    b = rng.normal(size=C).astype(np.float32)
    new = pg.replace_head(model, w, b, sqrt=sqrt)
    after = _run(new, x)
    assert list(after) == list(before) == ["probs", "embedding"]
    assert after["probs"].shape == before["probs"].shape == (len(x), C)
    np.testing.assert_array_equal(after["embedding"], before["embedding"])
    assert not np.allclose(after["probs"], before["probs"])
    graph, names = pg.with_branch_outputs(model)
    branches = _run(graph, x)
    emb = np.stack([branches[n] for n in names], axis=1)
    np.testing.assert_allclose(after["probs"], pg.branch_probs(emb, w, b, sqrt=sqrt), atol=1e-5)
    # the shipped head read back reproduces the original graph
    w0, b0 = pg.classifier_params(onnx.load_from_string(model))
    np.testing.assert_allclose(before["probs"], pg.branch_probs(emb, w0, b0), atol=1e-5)


def test_replace_head_refuses_a_head_of_another_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        pg.replace_head(_graph(), np.zeros((D + 1, C), np.float32), np.zeros(C, np.float32))


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    centres = np.eye(C, D, dtype=np.float32) * 6.0
    return (centres[y] + rng.normal(scale=0.5, size=(n, D))).astype(np.float32), y


def test_fit_softmax_separates_separable_data_and_respects_its_prior() -> None:
    x, y = _blobs(400, 0)
    zero = (np.zeros((D, C), np.float32), np.zeros(C, np.float32))
    w, b = ph.fit_softmax(x, y, np.ones(len(y)), l2=1e-4, init=zero)
    xt, yt = _blobs(200, 1)
    assert (np.argmax(xt @ w + b, axis=1) == yt).mean() == 1.0
    # a strong pull towards a prior keeps the weights there
    prior = (np.full((D, C), 0.25, np.float32), np.zeros(C, np.float32))
    wp, _ = ph.fit_softmax(x, y, np.ones(len(y)), l2=1e3, init=prior, prior=prior)
    assert np.abs(wp - prior[0]).max() < 0.01 < np.abs(w - prior[0]).max()


def _data(seed: int = 0) -> ph.Data:
    """Fashion-MNIST-like rows and two views of three items per style (B=2 branches)."""
    rng = np.random.default_rng(seed)
    fx, fy = _blobs(120, seed)
    fm_emb = np.stack([fx, fx + rng.normal(scale=0.1, size=fx.shape)], axis=1).astype(np.float32)
    rows, ys, styles, kinds = [], [], [], []
    for style in STYLES:
        for item in range(3):
            for kind in ("drawing", "product_shot", "augment"):
                label = item % C
                v = np.eye(C, D)[label] * 3.0 + rng.normal(scale=0.5, size=(2, D))
                rows.append(v)
                ys.append(label)
                styles.append(style)
                kinds.append(kind)
    dr = Drawings(
        np.asarray(rows, np.float32),
        np.asarray(ys),
        np.asarray(styles),
        np.asarray([f"i{i}" for i in range(len(ys))]),
        np.asarray(kinds),
    )
    return ph.Data(fm_emb, fy, np.arange(0, 120, 10), dr)


def test_loso_never_fits_on_the_held_out_style() -> None:
    data = _data()
    held: list[str] = []
    calls: list[tuple[str, tuple[str, ...]]] = []

    def log(msg: str) -> None:
        if msg.endswith("]") and ": choosing on" in msg:
            held.append(msg.split()[1].rstrip(":"))

    def spy(d: ph.Data, styles: Sequence[str], *rest: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append((held[-1], tuple(styles)))
        return ph.fit_fold(d, styles, *rest)  # type: ignore[arg-type]

    shipped = (np.zeros((D, C), np.float32), np.zeros(C, np.float32))
    four = list(STYLES)[:4]  # four folds keep the test fast; the rule is the same for seven
    folds = ph.loso(data, shipped, 60, log, styles=four, fit=spy)
    assert held == four
    assert set(folds) == set(four)
    n_inner = len(ph.GRID) * (len(four) - 1)
    assert len(calls) == len(four) * (n_inner + 1)
    for fold, styles in calls:
        assert fold not in styles and set(styles) <= set(four)
        assert len(styles) in (len(four) - 2, len(four) - 1)
    for f in folds.values():
        assert f["new"]["drawing"][1] == 3  # scored on its own drawings only
        assert 0 <= f["new"]["drawing"][0] <= 3
    k, n = ph.pooled(folds, "new", "drawing")
    assert n == 3 * len(four) and k >= n - 3  # the synthetic classes are easy


def test_inner_subset_never_takes_the_val_split() -> None:
    data = _data()
    sub = ph.inner_subset(data, 50)
    assert len(sub) == 50 and not set(sub) & set(data.val_idx)


def test_surgery_on_the_shipped_products_graph() -> None:
    """The committed bundle's graph: two branches share one 256 x 10 classifier, the branch
    embeddings reproduce its probs, and a replaced head changes probs but not the embedding."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "models" / "products" / "model.onnx"
    model = path.read_bytes()
    site = pg.find_classifier(onnx.load_from_string(model))
    w0, b0 = pg.classifier_params(onnx.load_from_string(model))
    assert len(site.branch_inputs) == 2 and w0.shape == (256, 10) and b0.shape == (10,)
    x = np.random.default_rng(3).uniform(0, 255, size=(8, 28, 28, 1)).astype(np.float32)
    before = _run(model, x)
    graph, names = pg.with_branch_outputs(model)
    emb = np.stack([_run(graph, x)[n] for n in names], axis=1)
    np.testing.assert_allclose(before["probs"], pg.branch_probs(emb, w0, b0), atol=1e-5)
    after = _run(pg.replace_head(model, np.zeros_like(w0), b0), x)
    np.testing.assert_array_equal(after["embedding"], before["embedding"])
    expected = np.exp(b0 - b0.max()) / np.exp(b0 - b0.max()).sum()
    np.testing.assert_allclose(after["probs"], np.broadcast_to(expected, (8, 10)), atol=1e-5)
