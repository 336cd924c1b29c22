"""Fine-tune the top of the imagenet backbone (last MBConv block + head conv) for santa/bird.

The shipped heads are linear on the frozen 1280-d embedding. Here the imagenet ONNX graph is cut
at the input of its last MBConv block (block15, 7x7x192): that tensor is computed once per
emoji picture through onnxruntime (base view and one augmented view, ``embed.aug_subset``
'aug0') and cached as float16 under ``data/emoji-finetune-cache``. The rest of the network is
rebuilt in Keras from the graph's initializers (BatchNorm already folded by tf2onnx; parity with
onnxruntime is checked) and trained per leave-one-style-out fold with a logistic head.

CLI: ``python -m training.emoji.top_finetune --task santa|bird|both [--epochs 5]`` (fills the
cache first, ~18 min once; then 2-5 min per fold on 2 cores). One shared top is trained for both
tasks; tables by training.emoji.top_report; results in docs/drawings.md. training.emoji.top_ship
trains the same folds through `train_top`/`run_fold` and keeps their weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.emoji.catalog import STYLES, data_root, load_catalog
from training.emoji.embed import BACKBONE
from training.emoji.loso import _selection_score
from training.emoji.tasks import MASS_RULE
from training.emoji.top_cache import CUT, CutBackbone, CutSet, cut_features, fill_cache

logger = logging.getLogger(__name__)


def top_ops(bundle_dir: Path = BACKBONE) -> list[dict[str, Any]]:
    """The graph's nodes from CUT to the global pool as plain ops with numpy weights (NHWC).

    Conv -> {'conv', kernel, bias, depthwise}; a depthwise conv's following Mul/Add by
    constants (its BatchNorm) folded into its kernel and bias; Clip -> 'relu6'; an Add of two
    activations -> 'add' (residual); GlobalAveragePool -> 'pool' (the embedding).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(bundle_dir / "model.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = list(graph.node)
    start = next(i for i, n in enumerate(nodes) if CUT in n.input)
    ops: list[dict[str, Any]] = []
    for n in nodes[start:]:
        ins, out = list(n.input), n.output[0]
        if n.op_type == "Conv":
            w = init[ins[1]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            dw = group > 1
            kernel = w.transpose(2, 3, 0, 1) if dw else w.transpose(2, 3, 1, 0)
            bias = init[ins[2]] if len(ins) > 2 else np.zeros(w.shape[0], np.float32)
            ops.append({"op": "conv", "in": ins[0], "out": out, "kernel": kernel, "bias": bias,
                        "depthwise": dw})  # fmt: skip
        elif n.op_type in ("Mul", "Add") and ins[1] in init:
            prev = ops[-1]
            if prev["op"] != "conv" or prev["out"] != ins[0]:
                raise ValueError(f"cannot fold {n.name}: not after a conv")
            c = init[ins[1]].reshape(-1)
            if n.op_type == "Mul":
                prev["kernel"] = prev["kernel"] * c.reshape(1, 1, -1, 1)
                prev["bias"] = prev["bias"] * c
            else:
                prev["bias"] = prev["bias"] + c
            prev["out"] = out
        elif n.op_type == "Clip":
            ops.append({"op": "relu6", "in": ins[0], "out": out})
        elif n.op_type == "Add":
            ops.append({"op": "add", "in": ins[0], "in2": ins[1], "out": out})
        elif n.op_type == "GlobalAveragePool":
            ops.append({"op": "pool", "in": ins[0], "out": out})
            return ops
        else:
            raise ValueError(f"unexpected {n.op_type} after the cut")
    raise ValueError("no GlobalAveragePool after the cut")


def build_top(ops: list[dict[str, Any]], channels: int = 192) -> Any:
    """Keras model: cut tensor (7 x 7 x channels) -> embedding, weights from `ops`."""
    import keras

    x_in = keras.Input((7, 7, channels), name="cut")
    t: dict[str, Any] = {CUT: x_in}
    for i, o in enumerate(ops):
        x = t[o["in"]]
        if o["op"] == "conv":
            k = o["kernel"]
            if o["depthwise"]:
                layer = keras.layers.DepthwiseConv2D(k.shape[:2], padding="same", name=f"dw{i}")
            else:
                layer = keras.layers.Conv2D(k.shape[-1], 1, name=f"conv{i}")
            t[o["out"]] = layer(x)
            layer.set_weights([k.astype(np.float32), o["bias"].astype(np.float32)])
        elif o["op"] == "relu6":
            t[o["out"]] = keras.layers.ReLU(max_value=6.0)(x)
        elif o["op"] == "add":
            t[o["out"]] = keras.layers.Add()([x, t[o["in2"]]])
        else:
            t[o["out"]] = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    return keras.Model(x_in, t[ops[-1]["out"]], name="top")


def embed(top: Any, cut: npt.NDArray[Any], batch: int = 256) -> npt.NDArray[np.float32]:
    out = [np.asarray(top(cut[s : s + batch].astype(np.float32), training=False))
           for s in range(0, len(cut), batch)]  # fmt: skip
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


EPS = 1e-4  # sqrt(emb + EPS): the shipped heads' power normalisation, finite gradient at 0
C = 0.01  # the initial logistic head's L2 (fixed, not tuned)


@dataclass
class Data:
    """Every style's pictures (base and aug0 views) with both tasks' labels (-1: unlabelled)."""

    style: npt.NDArray[np.str_]
    base: npt.NDArray[np.bool_]
    cut: npt.NDArray[np.float16]
    y: npt.NDArray[np.int64]  # N x 2: santa, bird
    mass: npt.NDArray[np.float32]  # ImageNet bird mass from the frozen (served) graph
    emb: npt.NDArray[np.float32]


def load_data(views: Sequence[str] = ("base", "aug0")) -> Data:
    cat = {str(p.path.relative_to(data_root())): p for p in load_catalog()}
    parts: list[tuple[str, str, CutSet]] = [
        (st, v, cut_features(st, v)) for v in views for st in STYLES
    ]
    ys = []
    for _, _, cs in parts:
        pics = [cat[r] for r in cs.paths]
        bird = [-1 if p.bird_label is None else p.bird_label for p in pics]
        ys.append(np.array([[int(p.is_santa), b] for p, b in zip(pics, bird, strict=True)]))
    return Data(
        np.concatenate([np.full(len(cs.paths), st) for st, _, cs in parts]),
        np.concatenate([np.full(len(cs.paths), v == "base") for _, v, cs in parts]),
        np.concatenate([cs.cut for _, _, cs in parts]),
        np.concatenate(ys).astype(np.int64),
        np.concatenate([cs.bird_mass for _, _, cs in parts]),
        np.concatenate([cs.emb for _, _, cs in parts]),
    )


def _decision(task: int, p: npt.NDArray[np.float64], mass: npt.NDArray[np.float32]) -> Any:
    return np.where(mass >= MASS_RULE, 1.0, p) if task == 1 else p


def validation_style(held_out: str) -> str:
    """The inner validation style for a fold: the next style (high contrast, with 3 Santas,
    is skipped)."""
    names = list(STYLES)
    i = names.index(held_out)
    for k in range(1, len(names)):
        v = names[(i + k) % len(names)]
        if v != "fluent-high-contrast":
            return v
    raise ValueError("no validation style")


@dataclass
class TopState:
    """The Keras top + two-output logistic head (santa, bird) while it trains."""

    model: Any  # cut -> logits (N x 2)
    top: Any  # cut -> embedding (the rebuilt block15 + head conv)
    dense: Any  # the logistic head on (sqrt(embedding + EPS) - mean) / scale
    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]

    def scores(self, cut: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        out = [np.asarray(self.model(cut[s : s + 256].astype(np.float32), training=False))
               for s in range(0, len(cut), 256)]  # fmt: skip
        logits = np.concatenate(out) if out else np.zeros((0, 2), np.float32)
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def train_top(
    d: Data, tr: npt.NDArray[np.bool_], epochs: int, n_neg: int, lr: float, seed: int
) -> Iterator[tuple[int, TopState]]:
    """Train the top + head on the rows `tr`; yields (epoch, state) before training (epoch 0 =
    the logistic heads fitted on the frozen features) and after each epoch of every positive
    view plus `n_neg` freshly sampled negatives, class-balanced per task."""
    import keras
    import tensorflow as tf

    from training.emoji.heads import fit_head

    feats = np.sqrt(d.emb[tr] + EPS)
    ys = [d.y[tr, t] for t in range(2)]
    heads = [fit_head(feats[y >= 0], y[y >= 0], c=C, use_mass=False) for y in ys]
    mean, scale = heads[0].mean, heads[0].scale  # santa's head sees every training row
    keras.utils.set_random_seed(seed)
    top = build_top(top_ops())
    x_in = keras.Input((7, 7, int(d.cut.shape[-1])))
    z = keras.layers.Lambda(lambda e: (keras.ops.sqrt(e + EPS) - mean) / scale)(top(x_in))
    dense = keras.layers.Dense(2, name="logits")
    model = keras.Model(x_in, dense(z))
    # logit = f @ w + b on raw features (every head's own standardisation folded in), as z:
    folded = [h.folded() for h in heads]
    w = np.stack([fw * scale for fw, _ in folded], 1)
    b = np.array([fb + float(mean @ fw) for fw, fb in folded])
    dense.set_weights([w.astype(np.float32), b.astype(np.float32)])
    opt = keras.optimizers.Adam(lr)
    state = TopState(model, top, dense, mean.astype(np.float64), scale.astype(np.float64))

    @tf.function(reduce_retracing=True)
    def step(x: Any, y: Any, sw: Any) -> Any:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            yf = tf.cast(tf.maximum(y, 0), tf.float32)
            loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=yf, logits=logits)
            loss = tf.reduce_sum(loss * sw) / tf.cast(tf.shape(x)[0], tf.float32)
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    chk = np.flatnonzero(tr)[:64]  # the Keras head at epoch 0 is the fitted logistic heads
    want = np.stack([h.score(np.sqrt(d.emb[chk] + EPS)) for h in heads], 1)
    if np.abs(state.scores(d.cut[chk]) - want).max() > 1e-2:
        raise RuntimeError("Keras top + head disagrees with the frozen features' heads")
    rng = np.random.default_rng(seed)
    idx_tr = np.flatnonzero(tr)
    pos = idx_tr[(d.y[idx_tr] == 1).any(axis=1)]
    neg = idx_tr[~(d.y[idx_tr] == 1).any(axis=1)]
    for epoch in range(epochs + 1):
        if epoch:
            ids = np.concatenate([pos, rng.choice(neg, min(n_neg, len(neg)), replace=False)])
            rng.shuffle(ids)
            y = d.y[ids]
            sw = np.zeros(y.shape, np.float32)
            for t in range(2):
                lab = y[:, t] >= 0
                n_p, n_n = max(1, int((y[:, t] == 1).sum())), max(1, int((y[:, t] == 0).sum()))
                sw[:, t] = np.where(y[:, t] == 1, lab.sum() / (2 * n_p), lab.sum() / (2 * n_n))
                sw[~lab, t] = 0.0
            for s in range(0, len(ids), 64):
                sl = slice(s, s + 64)
                step(d.cut[ids[sl]].astype(np.float32), y[sl], sw[sl])
        yield epoch, state


def choose_epoch(selection: Sequence[float], fixed_epoch: int | None = None) -> int:
    """The epoch a fold keeps: the best validation selection score, or `fixed_epoch` (the
    final model's procedure, e.g. "5 epochs, fixed"), which must be one that was trained."""
    if fixed_epoch is None:
        return int(np.argmax(selection))
    if not 0 <= fixed_epoch < len(selection):
        raise ValueError(f"fixed epoch {fixed_epoch} not trained (epochs 0-{len(selection) - 1})")
    return fixed_epoch


def run_fold(
    d: Data,
    held_out: str,
    photos: tuple[Any, ...],
    epochs: int,
    n_neg: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, TopState], None] | None = None,
    fixed_epoch: int | None = None,
) -> dict[str, Any]:
    """Train the top + a two-output logistic head (santa, bird) on five styles, choose the epoch
    (0 = the initial head on frozen features; or `fixed_epoch` for every task) and threshold per
    task on the validation style, score the held-out style (base views) once per epoch; the
    chosen epoch's scores are kept.
    `on_epoch(epoch, state)` sees the model after each epoch (top_ship keeps its weights)."""
    from app.metrics import calibrate_threshold

    t0 = time.perf_counter()
    val = validation_style(held_out)
    tr = (d.style != held_out) & (d.style != val)
    ve, he = (d.style == val) & d.base, (d.style == held_out) & d.base
    history: list[dict[str, Any]] = []
    for epoch, st in train_top(d, tr, epochs, n_neg, lr, seed):
        sv, sh = st.scores(d.cut[ve]), st.scores(d.cut[he])
        sp = st.scores(photos[0]) if photos else None
        history.append({"val": sv, "held": sh, "photo": sp})
        if on_epoch is not None:
            on_epoch(epoch, st)
        logger.info("%s epoch %d: %.0f s", held_out, epoch, time.perf_counter() - t0)
    out: dict[str, Any] = {"validation_style": val, "seconds": time.perf_counter() - t0}
    for t, (name, rule, target) in enumerate(TASK_RULES):
        yv, yh = d.y[ve, t], d.y[he, t]
        lv, lh = yv >= 0, yh >= 0
        sel = [
            _selection_score(_decision(t, h["val"][:, t], d.mass[ve])[lv], yv[lv]) for h in history
        ]
        best = choose_epoch(sel, fixed_epoch)
        res: dict[str, Any] = {"epoch": best, "y": yh[lh]}
        for e in sorted({0, best}):  # the frozen head (epoch 0) is calibrated the same way
            dv = _decision(t, history[e]["val"][:, t], d.mass[ve])[lv]
            res[f"threshold{e}"] = calibrate_threshold(dv, yv[lv] == 1, rule, target).threshold
            res[f"scores{e}"] = _decision(t, history[e]["held"][:, t], d.mass[he])[lh]
        if t == 1 and photos:
            res["photo_scores"] = _decision(t, history[best]["photo"][:, t], photos[1])
            res["photo_y"] = photos[2]
        out[name] = res
    return out


def photo_inputs(backbone: CutBackbone) -> tuple[Any, ...]:
    """Cut tensors, ImageNet bird mass and labels of the real photos (never trained on)."""
    from app.bundle import load_bundle
    from app.imaging import ImageLimits, prepare
    from training.imagenet import BIRD_INDICES, bird_photos

    spec = load_bundle(BACKBONE).metadata.input
    photos = bird_photos()
    x = np.stack([prepare(p.path.read_bytes(), spec, ImageLimits()).array for p in photos])
    cut, _, probs = backbone(x.astype(np.float32))
    mass = probs[:, np.asarray(BIRD_INDICES)].sum(axis=1)
    return cut, mass, np.array([int(p.is_bird) for p in photos])


TASK_RULES = (("santa", "max_f1", None), ("bird", "precision", 0.98))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--task",
        choices=["santa", "bird", "both"],
        default="both",
        help="which tables to print (one shared top is trained for both tasks)",
    )
    ap.add_argument("--styles", nargs="*", default=list(STYLES), help="held-out styles to run")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-neg", type=int, default=3000, help="negatives sampled per epoch")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fill-only", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("/tmp/ftb/top_finetune.json"))
    args = ap.parse_args(argv)
    from training.emoji.top_report import report

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    fill_cache()
    if args.fill_only:
        return
    d = load_data()
    photos = photo_inputs(CutBackbone())
    folds = {}
    for style in args.styles:
        folds[style] = run_fold(d, style, photos, args.epochs, args.n_neg, args.lr, args.seed)
        tasks = ["santa", "bird"] if args.task == "both" else [args.task]
        result = {t: report(t, folds) for t in tasks}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=1)
        )


if __name__ == "__main__":
    main()
