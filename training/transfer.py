"""Transfer learning from an image folder (the "Santa" recipe).

folder/<class>/*.jpg -> stratified train/val/test split -> frozen EfficientNet-Lite0 embeddings,
computed once and cached (keyed by file sha256) -> small softmax head trained on the cached
embeddings in seconds -> optional fine-tune of the top blocks at a low learning rate with
BatchNorm frozen -> held-out evaluation of the exported ONNX -> bundle.

Images go through the server's own ingestion (app.imaging), so training sees what serving sees.
CLI: ``python -m training train --config training/configs/santa.yaml --data-dir DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf
import yaml

from app.bundle import Bundle, InputSpec, Metrics, write_bundle
from training.architectures import create_model
from training.architectures.efficientnet_lite import (
    NUM_BLOCKS,
    WEIGHTS_FILE,
    WEIGHTS_LICENSE,
    block_layer_names,
    default_weights_path,
)
from training.export import export_bundle
from training.folder_embeddings import (
    EmbeddingCache,
    EmbedStats,
    embed_files,
    load_images,
    scan_folder,
    stratified_split,
)
from training.pretrained import binary_report, calibrate_threshold, run_onnx
from training.transfer_config import FineTuneConfig, HeadConfig, TransferConfig

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingCache",
    "FineTuneConfig",
    "HeadConfig",
    "TransferConfig",
    "backbone_key",
    "embed_files",
    "fine_tune",
    "train_transfer",
]


def backbone_key(cfg: TransferConfig) -> str:
    """Changes whenever the embedding of a file could change: weights, architecture, input."""
    weights = cfg.backbone.weights
    wpath = default_weights_path() if weights == "imagenet" else Path(weights)
    ident = {
        "architecture": cfg.backbone.architecture,
        "weights_sha256": hashlib.sha256(wpath.read_bytes()).hexdigest(),
        "input": cfg.input.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _class_weights(y: npt.NDArray[np.int64], k: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return {i: float(len(y) / (k * c)) if c else 0.0 for i, c in enumerate(counts)}


def train_head(
    cfg: TransferConfig,
    x_train: npt.NDArray[np.float32],
    y_train: npt.NDArray[np.int64],
    x_val: npt.NDArray[np.float32],
    y_val: npt.NDArray[np.int64],
    num_classes: int,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Dropout + Dense softmax on cached embeddings (the same layers the full model ends with)."""
    h = cfg.head
    inputs = keras.Input(shape=(x_train.shape[1],), name="embedding_in")
    x = keras.layers.Dropout(h.dropout, name="dropout")(inputs)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    outputs = keras.layers.Activation("softmax", name="predictions")(x)
    head = keras.Model(inputs, outputs, name="head")
    head.compile(
        optimizer=keras.optimizers.Adam(h.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    has_val = len(y_val) > 0
    monitor = "val_loss" if has_val else "loss"
    stop = keras.callbacks.EarlyStopping(
        monitor=monitor, patience=h.early_stopping_patience, restore_best_weights=True
    )
    # Class weights as per-sample weights; tf.data (cached) keeps per-epoch overhead to ~ms
    # where numpy inputs cost ~0.2 s per epoch in Keras 3.
    cw = _class_weights(y_train, num_classes) if h.class_weight == "balanced" else None
    sw = (
        np.array([cw[int(c)] for c in y_train], np.float32)
        if cw
        else np.ones(len(y_train), np.float32)
    )
    train = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train, sw))
        .cache()
        .shuffle(len(y_train), seed=cfg.seed, reshuffle_each_iteration=True)
        .batch(h.batch_size)
    )
    val = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(256).cache() if has_val else None
    hist = head.fit(
        train, validation_data=val, epochs=h.epochs, callbacks=[stop], shuffle=False, verbose=0
    )
    return head, {k: [float(v) for v in vals] for k, vals in hist.history.items()}


def fine_tune(
    cfg: TransferConfig,
    model: keras.Model,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    num_classes: int,
) -> dict[str, list[float]]:
    """Unfreeze the top `blocks` MBConv blocks + head conv + classifier; BatchNorm stays frozen
    (inference mode, moving statistics untouched), which small data sets need."""
    ft = cfg.fine_tune
    unfrozen = set(block_layer_names(model, NUM_BLOCKS - ft.blocks)) | {"logits"}
    for layer in model.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = layer.name in unfrozen and not is_bn
    model.compile(
        optimizer=keras.optimizers.Adam(ft.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    # Random left-right flips, the same augmentation the head saw through the flip embeddings.
    rng = np.random.default_rng(cfg.seed)
    flip = rng.random(len(x)) < 0.5
    x_aug = np.where(flip[:, None, None, None], x[:, :, ::-1, :], x)
    weights = _class_weights(y, num_classes) if cfg.head.class_weight == "balanced" else None
    hist = model.fit(
        x_aug, y, epochs=ft.epochs, batch_size=ft.batch_size, class_weight=weights, verbose=0
    )
    for layer in model.layers:
        layer.trainable = True
    return {k: [float(v) for v in vals] for k, vals in hist.history.items()}


@dataclass(frozen=True)
class TransferResult:
    bundle: Bundle
    test_accuracy: float
    n_train: int
    n_val: int
    n_test: int
    confusion: list[list[int]]
    embed_stats: EmbedStats
    timings_s: dict[str, float]
    run_dir: Path


def train_transfer(
    config_path: Path | str, data_dir: Path | str | None = None, out_dir: Path | str | None = None
) -> TransferResult:
    """The whole recipe; `data_dir`/`out_dir` override the config's data.path / export.out_dir."""
    cfg = TransferConfig.from_yaml(Path(config_path))
    root = Path(data_dir) if data_dir is not None else cfg.data.path
    if root is None:
        raise ValueError("no image folder: set data.path in the config or pass --data-dir")
    bundle_dir = Path(out_dir) if out_dir is not None else cfg.export.out_dir
    return run_transfer(cfg, root, bundle_dir)


def _embed_splits(
    cfg: TransferConfig,
    backbone: keras.Model,
    paths: dict[str, list[Path]],
    labels: dict[str, npt.NDArray[np.int64]],
    cache: EmbeddingCache,
) -> tuple[
    dict[str, npt.NDArray[np.float32]], npt.NDArray[np.float32], npt.NDArray[np.int64], EmbedStats
]:
    """Embeddings of every split (+ mirrored training images), through the cache."""
    emb = {}
    computed = cached = 0
    for split in ("train", "val", "test"):
        emb[split], st = embed_files(backbone, paths[split], cfg.input, cache)
        computed, cached = computed + st.computed, cached + st.cached
    x_train, y_train = emb["train"], labels["train"]
    if cfg.head.flip_augment:
        flipped, st = embed_files(backbone, paths["train"], cfg.input, cache, flip=True)
        computed, cached = computed + st.computed, cached + st.cached
        x_train, y_train = np.concatenate([x_train, flipped]), np.concatenate([y_train, y_train])
    cache.save()
    return emb, x_train, y_train, EmbedStats(computed=computed, cached=cached)


def _int8(
    cfg: TransferConfig,
    bundle: Bundle,
    bundle_dir: Path,
    paths: dict[str, list[Path]],
    x_test: npt.NDArray[np.float32],
    y_test: npt.NDArray[np.int64],
    metrics: Metrics,
) -> dict[str, Any]:
    """Also write `<name>-int8` when it agrees with fp32; its own test metrics, same threshold."""
    from training.quantize import quantize_bundle

    def evaluate(model_bytes: bytes, spec: InputSpec) -> list[Metrics]:
        q_probs, _ = run_onnx(model_bytes, x_test)
        update: dict[str, Any] = {"accuracy": float(np.mean(q_probs.argmax(1) == y_test))}
        if metrics.threshold is not None and metrics.positive_label is not None:
            pos = bundle.labels.index(metrics.positive_label)
            r = binary_report(q_probs[:, pos].astype(np.float64), y_test == pos, metrics.threshold)
            update |= {k: r[k] for k in ("precision", "recall", "f1")}
        return [metrics.model_copy(update=update)]

    calibration = [p for v in paths.values() for p in v]
    q = quantize_bundle(bundle.path, bundle_dir, f"{cfg.name}-int8", calibration, evaluate=evaluate)
    return {
        "agreement_cross": q.agreement_cross,
        "n_photos": q.n_photos,
        "speedup_batch1": q.speedup(1),
        "written": str(q.written.path) if q.written else None,
    }


def run_transfer(cfg: TransferConfig, root: Path, bundle_dir: Path) -> TransferResult:
    """The recipe on an already-validated config (see `train_transfer`)."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    class_names, files = scan_folder(root, cfg.data.limit_per_class)
    paths, labels = stratified_split(files, cfg.data.val_fraction, cfg.data.test_fraction, cfg.seed)
    k = len(class_names)
    size = (cfg.input.height, cfg.input.width, cfg.input.channels)
    model = create_model(
        cfg.backbone.architecture, size, k, weights=cfg.backbone.weights, dropout=cfg.head.dropout
    )
    backbone = keras.Model(model.input, model.get_layer("embedding").output)
    cache = EmbeddingCache.open(cfg.cache_dir, backbone_key(cfg))
    t["setup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    emb, x_train, y_train, stats = _embed_splits(cfg, backbone, paths, labels, cache)
    t["embeddings"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    head, history = train_head(cfg, x_train, y_train, emb["val"], labels["val"], k)
    model.get_layer("logits").set_weights(head.get_layer("logits").get_weights())
    t["head"] = time.perf_counter() - t0
    if cfg.fine_tune.enabled:
        t0 = time.perf_counter()
        x_ft = load_images(paths["train"], cfg.input)
        history |= {
            f"fine_tune_{key}": v
            for key, v in fine_tune(cfg, model, x_ft, labels["train"], k).items()
        }
        t["fine_tune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_test = load_images(paths["test"], cfg.input)
    provenance: dict[str, Any] = {
        "data_source": f"image folder {root} ({k} classes, {sum(len(f) for f in files)} images)",
        "architecture": f"{cfg.backbone.architecture} + softmax head (transfer)",
        "pretrained_weights": f"{WEIGHTS_FILE} (ImageNet-1k)",
        "weights_license": WEIGHTS_LICENSE,
        "epochs": len(history.get("loss", [])),
        "seed": cfg.seed,
    }
    with tempfile.TemporaryDirectory() as tmp:
        draft, _ = export_bundle(
            model,
            out_dir=Path(tmp),
            name=cfg.name,
            labels=class_names,
            input_spec=cfg.input,
            parity_inputs=x_test[:16],
            provenance=provenance,
            description=cfg.description,
            version=cfg.export.version,
            opset=cfg.export.opset,
            atol=cfg.export.parity_atol,
        )
        onnx_bytes = draft.model_path.read_bytes()
    t["export"] = time.perf_counter() - t0

    probs, _ = run_onnx(onnx_bytes, x_test)
    pred = probs.argmax(1)
    y_test = labels["test"]
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_test, pred), 1)
    # Validation scores for the threshold come from the final model (fine-tuned or not).
    if cfg.fine_tune.enabled and len(paths["val"]):
        val_probs = model.predict(load_images(paths["val"], cfg.input), verbose=0)
    else:
        val_probs = head.predict(emb["val"], verbose=0)
    metrics = _metrics(cfg, class_names, probs, labels, val_probs, len(paths["train"]))
    run_dir = cfg.run_dir / cfg.name
    card = _card(cfg, class_names, metrics, confusion, {s: len(p) for s, p in paths.items()})
    meta = draft.metadata.model_copy(
        update={
            "metrics": [metrics],
            "provenance": draft.metadata.provenance.model_copy(
                update={"training_time_s": round(sum(t.values()), 1)}
            ),
        }
    )
    bundle = write_bundle(
        bundle_dir / cfg.name,
        model_bytes=onnx_bytes,
        metadata=meta,
        labels=class_names,
        model_card=card,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    report = {
        "metrics": metrics.model_dump(mode="json"),
        "confusion": confusion.tolist(),
        "class_names": class_names,
        "splits": {s: [str(p) for p in v] for s, v in paths.items()},
        "history": history,
        "timings_s": t,
        "embeddings": {"computed": stats.computed, "cached": stats.cached},
    }
    if cfg.export.int8:
        report["int8"] = _int8(cfg, bundle, bundle_dir, paths, x_test, y_test, metrics)
    (run_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    logger.info(
        "%s: test accuracy %.3f on %d images; bundle %s",
        cfg.name,
        metrics.accuracy,
        len(y_test),
        bundle.path,
    )
    return TransferResult(
        bundle=bundle,
        test_accuracy=float(np.mean(pred == y_test)),
        n_train=len(paths["train"]),
        n_val=len(paths["val"]),
        n_test=len(paths["test"]),
        confusion=confusion.tolist(),
        embed_stats=stats,
        timings_s=t,
        run_dir=run_dir,
    )


def _metrics(
    cfg: TransferConfig,
    class_names: tuple[str, ...],
    probs: npt.NDArray[np.float32],
    labels: dict[str, npt.NDArray[np.int64]],
    val_probs: npt.NDArray[np.float32],
    n_train: int,
) -> Metrics:
    y_test = labels["test"]
    pred = probs.argmax(1)
    common: dict[str, Any] = {
        "dataset": f"image folder ({len(class_names)} classes)",
        "split": "test",
        "n_samples": len(y_test),
        "accuracy": float(np.mean(pred == y_test)),
        "extra": {"n_train": float(n_train), "n_val": float(len(labels["val"]))},
        "notes": f"stratified held-out split (seed {cfg.seed}); classes: {', '.join(class_names)}",
    }
    if cfg.positive_label is None or len(class_names) != 2:
        return Metrics(**common)
    if cfg.positive_label not in class_names:
        raise ValueError(f"positive_label {cfg.positive_label!r} is not one of {class_names}")
    pos = class_names.index(cfg.positive_label)
    threshold = 0.5
    if len(labels["val"]):
        val_scores = val_probs[:, pos].astype(np.float64)
        threshold = calibrate_threshold(val_scores, labels["val"] == pos)
    r = binary_report(probs[:, pos].astype(np.float64), y_test == pos, threshold)
    common["extra"] |= {key: float(r[key]) for key in ("tp", "fp", "fn", "tn")}
    common["notes"] += (
        "; threshold calibrated on the validation split" if len(labels["val"]) else ""
    )
    return Metrics(
        **common,
        precision=r["precision"],
        recall=r["recall"],
        f1=r["f1"],
        threshold=threshold,
        positive_label=cfg.positive_label,
    )


def _card(
    cfg: TransferConfig,
    class_names: tuple[str, ...],
    m: Metrics,
    confusion: npt.NDArray[np.int64],
    sizes: dict[str, int],
) -> str:
    header = "| true \\ predicted | " + " | ".join(class_names) + " |"
    rows = "\n".join(
        f"| {name} (n={int(row.sum())}) | " + " | ".join(str(int(v)) for v in row) + " |"
        for name, row in zip(class_names, confusion, strict=True)
    )
    ft = cfg.fine_tune
    tuned = (
        f"top {ft.blocks} blocks fine-tuned for {ft.epochs} epochs at lr {ft.learning_rate:g}"
        if ft.enabled
        else "backbone frozen"
    )
    decision = (
        f"\n- Decision threshold on P({m.positive_label}): {m.threshold}"
        if m.threshold is not None
        else ""
    )
    limitations = (
        "\n".join(f"- {x}" for x in cfg.limitations)
        or "- Trained on a small folder; see the sample sizes."
    )
    return f"""# {cfg.name}

{cfg.description}

## Recipe
Transfer learning (training/transfer.py): EfficientNet-Lite0 ImageNet features (1280-d),
softmax head trained on cached embeddings; {tuned}. Classes: {", ".join(class_names)}.
Split (stratified, seed {cfg.seed}): train {sizes["train"]}, validation {sizes["val"]}, test {sizes["test"]}.

## Held-out evaluation (onnxruntime, n={m.n_samples})
- accuracy {m.accuracy:.3f}{decision}

{header}
|{"---|" * (len(class_names) + 1)}
{rows}

## Limitations
{limitations}
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Transfer learning from an image folder.")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="folder with one subfolder per class"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="models folder (default: config)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    r = train_transfer(args.config, args.data_dir, args.out_dir)
    print(
        f"{r.bundle.name}: test accuracy {r.test_accuracy:.3f} (n={r.n_test}; train {r.n_train}, "
        f"val {r.n_val}); embeddings computed {r.embed_stats.computed}, cached {r.embed_stats.cached}; "
        f"bundle {r.bundle.path}; run {r.run_dir}"
    )


if __name__ == "__main__":
    main()
