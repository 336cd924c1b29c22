"""Fine-tune the whole `products` CNN on Fashion-MNIST plus drawing views, leave one style out.

The shipped graph's weights (tf2onnx folded each BatchNorm into its conv) are loaded into the
network its config names (training/configs/products.yaml, `model:`): conv kernels from the ONNX
convs, each BN set to the identity with the folded conv bias as its beta and frozen (so it runs
in inference mode while the kernels and the dense head train). `load_shipped` checks this Keras model against
onnxruntime on the serving path before anything trains.

Per fold, the model starts from the shipped weights and trains a few epochs at a small learning
rate on batches that are mostly Fashion-MNIST training images (the bundle's validation split
excluded) and partly views of the six training styles' clothing drawings (products_views.view:
as drawn, product shot, augments, filled, thicker strokes), every view sent through
`app.imaging.prepare` with the bundle's input spec as serving does. The held-out style is
scored once (its two views as products_eval draws them, flip-TTA as the graph does), together
with the Fashion-MNIST validation and test accuracy of the fold's model (test images through
the serving path). FineTune's defaults are the setting chosen on Fashion-MNIST validation
accuracy and an inner split of the styles (docs/drawings.md), never on a held-out style or the
test split; `--set key=value` overrides them (the first run: epochs=3 fm_per_epoch=12000).
CLI: ``python -m training.emoji.products_finetune [--styles noto ...] [--json out.json]``.
It measures and reports; training.emoji.products_ship trains the final model and writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import numpy_helper

from app.bundle import Bundle, InputSpec, load_bundle
from app.metrics import wilson_interval
from training.emoji.catalog import FASHION_CLASSES, PROJECT_ROOT, STYLES, load_catalog
from training.emoji.products_views import EVAL_VIEWS, PRESENTATIONS, view

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

CONFIG = PROJECT_ROOT / "training" / "configs" / "products.yaml"
TRAIN_VIEWS = {"drawing": 1, "product_shot": 1, "augment": 8, "filled": 4, "thick": 4}
EVAL_KINDS = (*EVAL_VIEWS, *PRESENTATIONS)  # scored on the held-out style


@dataclass(frozen=True)
class FineTune:
    epochs: int = 1
    fm_per_epoch: int = 54_000  # Fashion-MNIST training images per epoch (all 54,000: each once)
    drawing_share: float = 0.2  # share of each epoch's images that are drawing views
    learning_rate: float = 1e-4
    batch_size: int = 128
    label_smoothing: float = 0.1
    distill: float = 0.0  # share of the shipped model's probs in Fashion-MNIST targets
    freeze_stages: int = 0  # conv stages (from the input) kept at the shipped weights
    # Style views per drawing (line art or silhouette, training.emoji.render.style_view) added
    # to TRAIN_VIEWS; 0 = v2's views.
    style_views: int = 0
    seed: int = 0
    # Members trained per model (training seeds seed, seed + 1, ...; the same drawing views),
    # served as the mean of their flip-TTA softmax; 1 = one network (v1-v3).
    members: int = 1

    def train_views(self) -> dict[str, int]:
        return {**TRAIN_VIEWS, "style": self.style_views} if self.style_views else TRAIN_VIEWS


# --- the shipped weights in Keras --------------------------------------------------------------


def onnx_params(model: onnx.ModelProto) -> tuple[list[tuple[F32, F32]], list[tuple[F32, F32]]]:
    """(conv weight OIHW, bias) of one branch's convs in order, and its (embedding, classifier)
    dense (weight, bias) pairs, from a flip-TTA graph whose branches share initializers."""
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs: list[tuple[F32, F32]] = []
    seen: set[str] = set()
    for n in g.node:
        if n.op_type == "Conv" and n.input[1] not in seen:
            seen.add(n.input[1])
            convs.append((inits[n.input[1]], inits[n.input[2]]))
    dense: list[tuple[F32, F32]] = []
    seen.clear()
    for n in g.node:
        if n.op_type == "MatMul" and n.input[1] in inits and n.input[1] not in seen:
            seen.add(n.input[1])
            add = next(c for c in consumers[n.output[0]] if c.op_type == "Add")
            bias = next(i for i in add.input if i in inits)
            dense.append((inits[n.input[1]], inits[bias]))
    return convs, dense


def build_model(bundle: Bundle, config: Path = CONFIG) -> Any:
    """The network of the scratch config that built the bundle (`config`, read by the recipe
    registry's one reader) with the bundle's weights (BN folded; BN layers frozen)."""
    from training.architectures import create_model
    from training.config import ScratchConfig
    from training.recipes import load_config

    net = load_config(config, expect=ScratchConfig).model
    spec = bundle.metadata.input
    model = create_model(
        net.architecture, (spec.height, spec.width, spec.channels), len(bundle.labels), **net.kwargs
    )
    convs, dense = onnx_params(onnx.load(str(bundle.model_path)))
    conv_layers = [lyr for lyr in model.layers if lyr.name.endswith("_conv")]
    if len(conv_layers) != len(convs) or len(dense) != 2:
        raise ValueError(f"graph has {len(convs)} convs/{len(dense)} dense, model differs")
    for lyr, (w, b) in zip(conv_layers, convs, strict=True):
        lyr.set_weights([w.transpose(2, 3, 1, 0)])
        bn = model.get_layer(lyr.name[: -len("_conv")] + "_bn")
        ones = np.ones_like(b)
        bn.set_weights([ones, b, np.zeros_like(b), ones - bn.epsilon])
        bn.trainable = False
    model.get_layer("embedding").set_weights(list(dense[0]))
    model.get_layer("classifier").set_weights(list(dense[1]))
    return model


def tta_probs(model: Any, x: F32, batch: int = 1000) -> F32:
    """What the flip-TTA graph serves: the mean of the image's and its mirror's softmax."""
    out = []
    for s in range(0, len(x), batch):
        xb = x[s : s + batch]
        p = model(xb, training=False) + model(xb[:, :, ::-1], training=False)
        out.append(np.asarray(p, np.float32) / 2)
    return np.concatenate(out)


# --- data through the serving path -------------------------------------------------------------


def prepare_all(images: Sequence[U8] | U8, spec: InputSpec) -> F32:
    from app.imaging import ImageLimits, prepare
    from training.serving_eval import encode_png

    limits = ImageLimits(decode_seconds=600.0)  # offline: a paused process must not fail
    return np.stack([prepare(encode_png(im), spec, limits).array for im in images])


def drawing_views(
    spec: InputSpec, cache: Path, seed: int, views: dict[str, int] = TRAIN_VIEWS
) -> dict[str, npt.NDArray[Any]]:
    """Prepared training views (`views`: kind -> views per drawing), the two eval views and
    the held-out presentations of every mapped clothing drawing, prepared with `spec`."""
    extra = "".join(f"-{k}{n}" for k, n in views.items() if k not in TRAIN_VIEWS)
    spec_tag = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:8]
    path = cache / f"drawing-views-{seed}{extra}-{spec_tag}.npz"
    if not path.is_file():
        rng = np.random.default_rng(seed)
        rows: list[tuple[U8, int, str, str]] = []
        for p in (p for p in load_catalog() if p.fashion_class is not None):
            y = FASHION_CLASSES.index(str(p.fashion_class))
            for kind, n in views.items():
                rows += [(view(p, kind, rng), y, p.style, f"train/{kind}") for _ in range(n)]
            rows += [(view(p, k, rng), y, p.style, f"eval/{k}") for k in EVAL_KINDS]
        x = prepare_all([r[0] for r in rows], spec)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            path, x=x, y=[r[1] for r in rows], style=[r[2] for r in rows], kind=[r[3] for r in rows]
        )
    d = np.load(path)
    return {k: d[k] for k in ("x", "y", "style", "kind")}


def fmnist(bundle: Bundle, cache: Path) -> dict[str, npt.NDArray[Any]]:
    """Fashion-MNIST train (minus the bundle's val split), val and test, every image through
    the serving path (the trim policy re-centres them), cached."""
    from training.data import stratified_split
    from training.serving_eval import official_test_split

    split = official_test_split(bundle.metadata)
    rest, val = stratified_split(split.y_train, 0.1, bundle.metadata.provenance.seed or 0)
    path = cache / "fmnist-prepared.npz"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        spec = bundle.metadata.input
        np.savez(path, x=prepare_all(split.x_train, spec), x_test=prepare_all(split.x_test, spec))
    d = np.load(path)
    return {
        "x_train": d["x"][rest],
        "y_train": split.y_train[rest],
        "x_val": d["x"][val],
        "y_val": split.y_train[val],
        "x_test": d["x_test"],
        "y_test": split.y_test,
    }


# --- fine-tuning -------------------------------------------------------------------------------


def finetune(
    model: Any,
    fm_x: F32,
    fm_y: I64,
    dr_x: F32,
    dr_y: I64,
    ft: FineTune,
    teacher: Any | None = None,
) -> Any:
    """Train in place on mixed epochs: Fashion-MNIST samples plus drawing views (both randomly
    mirrored), cross-entropy with label smoothing, AdamW at a small constant rate. With
    `ft.distill` > 0 the Fashion-MNIST targets mix the one-hot label with `teacher`'s softmax on
    the same (mirrored or not) image, so the model is pulled towards what it served before on
    Fashion-MNIST while the drawings keep their labels (learning without forgetting)."""
    import keras

    rng = np.random.default_rng(ft.seed)
    n_dr = round(ft.fm_per_epoch * ft.drawing_share / (1 - ft.drawing_share)) if len(dr_x) else 0
    for lyr in model.layers:
        stage = lyr.name[1:].split("_")[0] if lyr.name.startswith("s") else ""
        if lyr.name.endswith("_conv") and stage.isdigit() and int(stage) <= ft.freeze_stages:
            lyr.trainable = False
    model.compile(
        optimizer=keras.optimizers.AdamW(ft.learning_rate, weight_decay=0.01),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=ft.label_smoothing),
    )
    if ft.distill > 0 and teacher is None:
        raise ValueError("distill > 0 needs the teacher model")
    for _ in range(ft.epochs):
        i = rng.choice(len(fm_x), min(ft.fm_per_epoch, len(fm_x)), replace=False)
        j = rng.choice(len(dr_x), n_dr, replace=True) if n_dr else np.zeros(0, np.int64)
        x = np.concatenate([fm_x[i], dr_x[j]]).astype(np.float32)
        y = np.concatenate([fm_y[i], dr_y[j]])
        flip = rng.random(len(x)) < 0.5
        x[flip] = x[flip][:, :, ::-1]
        onehot = np.eye(10, dtype=np.float32)[y]
        if ft.distill > 0:
            soft = np.concatenate(
                [
                    np.asarray(teacher.predict(x[s : s + 2000], verbose=0))
                    for s in range(0, len(i), 2000)
                ]
            )[: len(i)]
            onehot[: len(i)] = (1 - ft.distill) * onehot[: len(i)] + ft.distill * soft
        model.fit(x, onehot, batch_size=ft.batch_size, epochs=1, shuffle=True, verbose=0)
    return model


def _score(k: int, n: int) -> dict[str, float]:
    iv = wilson_interval(k, n)
    return {"k": k, "n": n, "low": iv.low, "high": iv.high}


def ensemble_probs(models: Sequence[Any], x: F32) -> F32:
    """What an ensemble serves: the mean of its members' flip-TTA softmax."""
    return np.mean([tta_probs(m, x) for m in models], axis=0).astype(np.float32)


def run_fold(
    bundle: Bundle,
    held_out: str | None,
    fm: dict[str, npt.NDArray[Any]],
    dr: dict[str, npt.NDArray[Any]],
    ft: FineTune,
) -> tuple[list[Any], dict[str, Any]]:
    """Fine-tune `ft.members` networks on every style but `held_out` (all styles when None)
    and score their ensemble (and, with several members, each member alone)."""
    t0 = time.perf_counter()
    train = np.char.startswith(dr["kind"].astype(str), "train/") & (dr["style"] != held_out)
    models = []
    for m in range(ft.members):
        model = build_model(bundle)
        teacher = build_model(bundle) if ft.distill > 0 else None
        member = replace(ft, seed=ft.seed + m)
        finetune(
            model, fm["x_train"], fm["y_train"], dr["x"][train], dr["y"][train], member, teacher
        )
        models.append(model)
    acc = {
        s: float((ensemble_probs(models, fm[f"x_{s}"]).argmax(1) == fm[f"y_{s}"]).mean())
        for s in ("val", "test")
    }
    res: dict[str, Any] = {
        "held_out": held_out,
        "fmnist_val": acc["val"],
        "fmnist_test": acc["test"],
    }
    if held_out is not None:
        for kind in EVAL_KINDS:
            m = (dr["style"] == held_out) & (dr["kind"] == f"eval/{kind}")
            pred = ensemble_probs(models, dr["x"][m]).argmax(1)
            res[kind] = _score(int((pred == dr["y"][m]).sum()), int(m.sum()))
            if ft.members > 1:
                alone = [tta_probs(one, dr["x"][m]).argmax(1) for one in models]
                res[f"{kind}_members"] = [int((a == dr["y"][m]).sum()) for a in alone]
    res["seconds"] = round(time.perf_counter() - t0, 1)
    return models, res


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "models" / "products")
    ap.add_argument("--styles", nargs="*", default=list(STYLES), help="styles to hold out")
    ap.add_argument("--cache", type=Path, default=PROJECT_ROOT / "data" / "products-ft-cache")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--set", nargs="*", default=[], help="FineTune overrides, e.g. distill=0.5")
    args = ap.parse_args(argv)
    log: Callable[[str], None] = lambda s: print(s, flush=True)  # noqa: E731
    types = {k: type(v) for k, v in asdict(FineTune()).items()}
    ft = FineTune(**{k: types[k](v) for k, v in (kv.split("=", 1) for kv in args.set)})
    bundle = load_bundle(args.bundle)
    fm = fmnist(bundle, args.cache)
    dr = drawing_views(bundle.metadata.input, args.cache, ft.seed, ft.train_views())
    base = build_model(bundle)
    base_test = float((tta_probs(base, fm["x_test"]).argmax(1) == fm["y_test"]).mean())
    log(f"settings {asdict(ft)}; shipped weights in Keras: F-MNIST test {base_test:.4f}")
    folds = []
    for style in args.styles:
        _, res = run_fold(bundle, style, fm, dr, ft)
        folds.append(res)
        log(json.dumps(res))
    pooled = {
        kind: _score(sum(f[kind]["k"] for f in folds), sum(f[kind]["n"] for f in folds))
        for kind in EVAL_KINDS
    }
    for kind, r in pooled.items():
        log(f"pooled {kind}: {r['k']}/{r['n']} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]")
    if args.json:
        out = {"settings": asdict(ft), "shipped_test": base_test, "folds": folds, "pooled": pooled}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
