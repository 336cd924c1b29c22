"""training.emoji.top_graph: fine-tuned top weights swapped into the real imagenet graph
(onnxruntime, no TensorFlow), checked against a numpy implementation of block15 + head conv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import ROOT
from tests.images import rectangles
from training.emoji import top_graph as tg
from training.emoji.top_cache import CutBackbone
from training.emoji.top_finetune import top_ops

pytestmark = (
    pytest.mark.slow
)  # fine-tuned tops composed into graphs: out of the fast subset (round 28)

IMAGENET = ROOT / "models" / "imagenet" / "model.onnx"


def _keras_layout_weights(noise: float, seed: int) -> dict[str, np.ndarray]:
    """The imagenet top in Keras layout (as top_finetune.build_top names it), perturbed."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i, o in enumerate(top_ops()):
        if o["op"] == "conv":
            name = f"dw{i}" if o["depthwise"] else f"conv{i}"
            for part in ("kernel", "bias"):
                v = o[part].astype(np.float32)
                out[f"{name}.{part}"] = v + noise * v.std() * rng.standard_normal(v.shape).astype(
                    np.float32
                )
    out["head_w"] = 0.05 * rng.standard_normal(1280)
    out["head_b"] = np.asarray(-1.0)
    return out


def _numpy_top(cut: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, P(positive)) of block15 + head conv + head on NHWC cut tensors, in numpy."""
    emb, z = _numpy_logit(cut, w)
    return emb, 1.0 / (1.0 + np.exp(-z))


def _numpy_logit(cut: np.ndarray, w: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(embedding, logit) of block15 + head conv + head on NHWC cut tensors, in numpy."""
    relu6 = lambda t: np.clip(t, 0.0, 6.0)  # noqa: E731
    x = relu6(cut @ w["conv0.kernel"][0, 0] + w["conv0.bias"])
    k = w["dw2.kernel"][..., 0]  # 3 x 3 x C, 'same' padding
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    y = sum(xp[:, a : a + 7, b : b + 7, :] * k[a, b] for a in range(3) for b in range(3))
    x = relu6(y + w["dw2.bias"])
    x = x @ w["conv4.kernel"][0, 0] + w["conv4.bias"]
    x = relu6(x @ w["conv5.kernel"][0, 0] + w["conv5.bias"])
    emb = x.mean(axis=(1, 2))
    return emb, np.sqrt(emb.astype(np.float64) + tg.EPS) @ w["head_w"] + float(w["head_b"])


@pytest.fixture(scope="module")
def cut_and_images() -> tuple[np.ndarray, np.ndarray]:
    x = rectangles(4, seed=3)
    (cut,) = CutBackbone(threads=1).session.run([tg.CUT], {"image": x})
    return x, cut


def _session(model: bytes | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"]
    )


def test_the_top_convs_are_found_with_their_initializers() -> None:
    params = tg.top_params(onnx.load(str(IMAGENET)))
    assert [p.layer for p in params] == ["conv0", "dw2", "conv4", "conv5"]
    dw = params[1]
    assert dw.depthwise and dw.bias is None and dw.mul and dw.add  # BatchNorm left as Mul, Add


def test_swapped_weights_match_a_numpy_top(cut_and_images: tuple[np.ndarray, np.ndarray]) -> None:
    x, cut = cut_and_images
    w = _keras_layout_weights(noise=0.3, seed=0)
    served, values = tg.served_graph(IMAGENET, [w])
    assert len(values) == 9  # 4 kernels, 3 conv biases, the depthwise conv's Mul (1) and Add (bias)
    emb_np, p_np = _numpy_top(cut.transpose(0, 2, 3, 1), w)
    probs, emb = _session(served).run(["probs", "embedding"], {"image": x})
    np.testing.assert_allclose(emb, emb_np, atol=2e-4)
    np.testing.assert_allclose(probs[:, 1], p_np, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    (p_cut,) = _session(tg.cut_subgraph(served)).run(["probs"], {tg.CUT: cut})
    np.testing.assert_allclose(p_cut, probs, atol=1e-6)
    # the layout matters: the depthwise kernel mirrored gives another embedding
    w["dw2.kernel"] = w["dw2.kernel"][::-1, ::-1].copy()
    emb_flip = _session(tg.served_graph(IMAGENET, [w])[0]).run(["embedding"], {"image": x})[0]
    assert np.abs(emb_flip - emb).max() > 1e-2


def test_fold_graph_swaps_a_fold_into_the_served_graph(
    cut_and_images: tuple[np.ndarray, np.ndarray],
) -> None:
    x, cut = cut_and_images
    served = onnx.load_from_string(tg.served_graph(IMAGENET, [_keras_layout_weights(0.3, 0)])[0])
    imagenet = onnx.load(str(IMAGENET))
    fold = _keras_layout_weights(noise=0.2, seed=1)
    deltas = tg.fold_deltas(imagenet, fold)
    assert all(d.dtype == np.float16 for d in deltas.values())
    names = sorted(deltas)
    got = _session(
        tg.fold_graph(served, imagenet, names, [tg.FoldMember(deltas, fold["head_w"], -1.0)])
    )
    _, p_np = _numpy_top(cut.transpose(0, 2, 3, 1), fold)
    np.testing.assert_allclose(got.run(["probs"], {"image": x})[0][:, 1], p_np, atol=1e-3)
    # no differences stored (a fold whose chosen epoch is 0): imagenet's own top
    frozen = _session(
        tg.fold_graph(served, imagenet, names, [tg.FoldMember({}, fold["head_w"], -1.0)])
    )
    want = _session(IMAGENET).run(["embedding"], {"image": x})[0]
    np.testing.assert_array_equal(frozen.run(["embedding"], {"image": x})[0], want)


def test_members_share_the_trunk_and_average_their_logits(
    cut_and_images: tuple[np.ndarray, np.ndarray],
) -> None:
    x, cut = cut_and_images
    members = [_keras_layout_weights(0.3, seed) for seed in (0, 1, 2)]
    members[1]["head_b"] = np.asarray(2.0)  # members disagree in scale, not only in weights
    served, values = tg.served_graph(IMAGENET, members)
    assert len(values) == 27  # 9 per member, each under its own name
    model = onnx.load_from_string(served)
    n_conv = sum(n.op_type == "Conv" for n in model.graph.node)
    n_base = sum(n.op_type == "Conv" for n in onnx.load(str(IMAGENET)).graph.node)
    assert n_conv == n_base + 2 * 4  # two more copies of the top's 4 convs, one trunk
    nhwc = cut.transpose(0, 2, 3, 1)
    embs, zs = zip(*(_numpy_logit(nhwc, w) for w in members), strict=True)
    want_p = 1.0 / (1.0 + np.exp(-np.mean(zs, axis=0)))
    probs, emb = _session(served).run(["probs", "embedding"], {"image": x})
    np.testing.assert_allclose(probs[:, 1], want_p, atol=1e-5)
    np.testing.assert_allclose(emb, np.mean(embs, axis=0), atol=2e-4)
    # no member alone and no mean of probabilities gives that answer
    ps = [1.0 / (1.0 + np.exp(-z)) for z in zs]
    assert min(np.abs(p - want_p).max() for p in [*ps, np.mean(ps, axis=0)]) > 1e-3
    # a fold of three members swapped in: each member's own differences and head
    imagenet = onnx.load(str(IMAGENET))
    folds = [_keras_layout_weights(0.2, seed) for seed in (4, 5, 6)]
    stored = [tg.FoldMember(tg.fold_deltas(imagenet, f), f["head_w"], -1.0) for f in folds]
    names = sorted(stored[0].deltas)
    got = _session(tg.fold_graph(model, imagenet, names, stored))
    z_fold = np.mean([_numpy_logit(nhwc, {**f, "head_b": -1.0})[1] for f in folds], axis=0)
    p_fold = got.run(["probs"], {"image": x})[0][:, 1]
    np.testing.assert_allclose(p_fold, 1.0 / (1.0 + np.exp(-z_fold)), atol=1e-3)


@pytest.mark.slow
def test_bird_keeps_the_original_top_for_the_mass_rule_beside_its_members(
    cut_and_images: tuple[np.ndarray, np.ndarray],
) -> None:
    """bird v2: P(bird) = max(ImageNet bird mass of the untouched imagenet top, sigmoid(mean
    member logit - logit t)); the fold graph puts a fold's members and threshold in."""
    from training.imagenet import BIRD_INDICES

    x, cut = cut_and_images
    members = [_keras_layout_weights(0.3, seed) for seed in (0, 1)]
    for k, m in enumerate(members):  # the bird head's keys (top_ship.head_keys("bird"))
        m["bird_head_w"], m["bird_head_b"] = m.pop("head_w"), np.asarray(0.5 * k)
    (imagenet_probs,) = _session(IMAGENET).run(["probs"], {"image": x})
    mass = imagenet_probs[:, BIRD_INDICES].sum(axis=1)
    nhwc = cut.transpose(0, 2, 3, 1)
    z = np.mean(
        [_numpy_logit(nhwc, {**m, "head_w": m["bird_head_w"], "head_b": m["bird_head_b"]})[1]
         for m in members], axis=0,
    )  # fmt: skip
    keys = ("bird_head_w", "bird_head_b")
    for t in (0.01, 0.999999):  # the head decides / the mass decides
        served, values = tg.served_graph(IMAGENET, members, keys, combine_threshold=t)
        assert len(values) == 18 and all(n.endswith(("__m1", "__m2")) for n in values)
        model = onnx.load_from_string(served)
        n_conv = sum(n.op_type == "Conv" for n in model.graph.node)
        assert n_conv == sum(n.op_type == "Conv" for n in onnx.load(str(IMAGENET)).graph.node) + 8
        head_p = 1.0 / (1.0 + np.exp(-(z - np.log(t / (1 - t)))))
        want = np.maximum(mass, head_p)
        probs, emb = _session(served).run(["probs", "embedding"], {"image": x})
        np.testing.assert_allclose(probs[:, 1], want, atol=1e-5)
        wins = np.abs(probs[:, 1] - mass) < 1e-7
        assert wins.all() if t > 0.5 else not wins.any()
        embs = [_numpy_logit(nhwc, {**m, "head_w": m["bird_head_w"]})[0] for m in members]
        np.testing.assert_allclose(emb, np.mean(embs, axis=0), atol=2e-4)
    # a fold's two members and its own threshold swapped in: positive at 0.5 exactly when the
    # mass reaches 0.5 or the fold's mean logit reaches logit(threshold)
    imagenet = onnx.load(str(IMAGENET))
    folds = [_keras_layout_weights(0.2, seed) for seed in (4, 5)]
    stored = [tg.FoldMember(tg.fold_deltas(imagenet, f), f["head_w"], -1.0) for f in folds]
    names = sorted(stored[0].deltas)
    z_fold = np.mean([_numpy_logit(nhwc, {**f, "head_b": -1.0})[1] for f in folds], axis=0)
    thr = float(1.0 / (1.0 + np.exp(-np.median(z_fold))))
    got = _session(tg.fold_graph(model, imagenet, names, stored, first=1, threshold=thr))
    p = got.run(["probs"], {"image": x})[0][:, 1]
    want = np.maximum(mass, 1.0 / (1.0 + np.exp(-(z_fold - np.log(thr / (1 - thr))))))
    np.testing.assert_allclose(p, want, atol=1e-3)
    assert 0 < (p >= 0.5).sum() < len(p)
