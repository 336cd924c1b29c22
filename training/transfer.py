"""The `transfer` recipe: an image folder -> a classifier on frozen pretrained features.

folder/<class>/* (training.data.list_class_folder) -> stratified train/val/test split
(training.data.stratified_split) -> frozen EfficientNet-Lite0 embeddings, computed once and
cached by file sha256 (training/folder_embeddings.py) -> softmax head trained on the cached
embeddings in seconds, optional fine-tune of the top blocks (training/transfer_head.py) ->
held-out evaluation of the exported ONNX through the server's runtime -> bundle + card.

CLI: ``python -m training train --config training/configs/santa.yaml --data-dir DIR``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.bundle import Bundle, Metrics
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Reference, Section, render_card
from app.metrics import EvalReport, binary_report, evaluate_probs, max_f1_threshold, roc_auc
from app.runtime import OnnxModel
from training.architectures import create_model
from training.architectures.efficientnet_lite import WEIGHTS_FILE, WEIGHTS_LICENSE
from training.card import confusion_table, per_class_table
from training.config import TransferConfig
from training.data import (
    MIN_IMAGES_PER_CLASS,
    BadData,
    DataNotFound,
    list_class_folder,
    load_images,
    stratified_split,
)
from training.export import export_bundle
from training.folder_embeddings import EmbeddingCache, EmbedStats, embed_files
from training.recipes import RunOptions, RunReport
from training.runs import STAGED_BUNDLES, reproduce_command, start_run, write_metrics
from training.serving_eval import open_model, run_prepared
from training.transfer_head import backbone_key, fine_tune, train_head

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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


def run(cfg: TransferConfig, options: RunOptions) -> RunReport:
    """The `transfer` recipe entry point (training.recipes); --data-dir = the image folder."""
    root = options.data_dir if options.data_dir is not None else cfg.data.path
    if root is None:
        raise DataNotFound("no image folder: set data.path in the config or pass --data-dir")
    r = run_transfer(
        cfg, root, options.out_dir or cfg.export.out_dir, options.runs_dir, options.config_path
    )
    notes = [
        f"split: train {r.n_train}, val {r.n_val}, test {r.n_test}; embeddings computed "
        f"{r.embed_stats.computed}, cached {r.embed_stats.cached}"
    ]
    return RunReport(
        cfg.recipe, cfg.name, r.run_dir, [r.bundle.path], r.bundle.metadata.metrics, notes
    )


def split_folder(
    cfg: TransferConfig, root: Path
) -> tuple[tuple[str, ...], dict[str, list[Path]], dict[str, npt.NDArray[np.int64]]]:
    """Class names and the stratified train/val/test files and labels."""
    class_names, files = list_class_folder(root, cfg.data.limit_per_class)
    # Checked before any embedding or training (it used to fail after both, at the metrics).
    label = cfg.positive_label
    if label is not None and len(class_names) == 2 and label not in class_names:
        raise BadData(
            f"positive_label {label!r} is not one of the folder's classes "
            f"{list(class_names)} ({root}); set it to one of them in the config"
        )
    flat = [p for group in files for p in group]
    y = np.asarray([i for i, group in enumerate(files) for _ in group], dtype=np.int64)
    rest, test, val = stratified_split(y, [cfg.data.test_fraction, cfg.data.val_fraction], cfg.seed)
    index = dict(zip(SPLITS, (rest, val, test), strict=True))
    paths = {s: [flat[i] for i in ix] for s, ix in index.items()}
    return class_names, paths, {s: y[ix] for s, ix in index.items()}


def check_decodable(
    class_names: tuple[str, ...],
    planned: dict[str, int],
    labels: dict[str, npt.NDArray[np.int64]],
    root: Path,
) -> None:
    """Every class keeps a picture in every split that was given pictures (`planned`: the
    split's size before decoding) once the files that fail to decode are dropped: a class
    whose files were all truncated was trained, calibrated and exported as if it were there,
    with one warning per file (round 30); a split left with no picture at all ended in a
    traceback after training (round 31). A split given none (`val_fraction: 0`) is fine."""
    short = [
        name
        for c, name in enumerate(class_names)
        if any(planned[s] and not np.any(labels[s] == c) for s in SPLITS)
    ]
    if short:
        raise BadData(
            f"{root}: too few pictures that decode in {short}: each class needs at least "
            f"{MIN_IMAGES_PER_CLASS} (one each for training, validation and test); the "
            "warnings above name the files that could not be read"
        )


def _embed_splits(
    cfg: TransferConfig,
    backbone: keras.Model,
    paths: dict[str, list[Path]],
    labels: dict[str, npt.NDArray[np.int64]],
    cache: EmbeddingCache,
) -> tuple[
    dict[str, npt.NDArray[np.float32]], npt.NDArray[np.float32], npt.NDArray[np.int64], EmbedStats
]:
    """Embeddings of every split (+ mirrored training images), through the cache. Unreadable
    files are dropped from `paths` and `labels` in place."""
    emb = {}
    computed = cached = 0
    for split in SPLITS:
        emb[split], kept, st = embed_files(backbone, paths[split], cfg.input, cache)
        paths[split] = [paths[split][i] for i in kept]
        labels[split] = labels[split][kept]
        computed, cached = computed + st.computed, cached + st.cached
    x_train, y_train = emb["train"], labels["train"]
    if cfg.head.flip_augment:
        flipped, _, st = embed_files(backbone, paths["train"], cfg.input, cache, flip=True)
        computed, cached = computed + st.computed, cached + st.cached
        x_train, y_train = np.concatenate([x_train, flipped]), np.concatenate([y_train, y_train])
    cache.save()
    return emb, x_train, y_train, EmbedStats(computed=computed, cached=cached)


def run_transfer(
    cfg: TransferConfig,
    root: Path,
    bundle_dir: Path,
    runs_dir: Path = Path("runs"),
    config_path: Path | None = None,
) -> TransferResult:
    """The whole recipe on a validated config: folder `root`, bundle into `bundle_dir`."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    class_names, paths, labels = split_folder(cfg, root)  # before the run folder: fail early
    run_dir = start_run(runs_dir, cfg)
    keras.utils.set_random_seed(cfg.seed)
    k = len(class_names)
    size = (cfg.input.height, cfg.input.width, cfg.input.channels)
    model = create_model(
        cfg.backbone.architecture, size, k, weights=cfg.backbone.weights, dropout=cfg.head.dropout
    )
    backbone = keras.Model(model.input, model.get_layer("embedding").output)
    cache = EmbeddingCache.open(cfg.cache_path(runs_dir), backbone_key(cfg))
    t["setup"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    planned = {s: len(labels[s]) for s in SPLITS}
    emb, x_train, y_train, stats = _embed_splits(cfg, backbone, paths, labels, cache)
    check_decodable(class_names, planned, labels, root)
    t["embeddings"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    head, history = train_head(cfg, x_train, y_train, emb["val"], labels["val"], k)
    model.get_layer("logits").set_weights(head.get_layer("logits").get_weights())
    t["head"] = time.perf_counter() - t0
    if cfg.fine_tune.enabled:
        t0 = time.perf_counter()
        x_ft, _ = load_images(paths["train"], cfg.input)
        ft_hist = fine_tune(cfg, model, x_ft, labels["train"], k)
        history |= {f"fine_tune_{key}": v for key, v in ft_hist.items()}
        t["fine_tune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    x_test, _ = load_images(paths["test"], cfg.input)
    n_images = sum(len(v) for v in paths.values())
    provenance: dict[str, Any] = {
        "data_source": f"image folder {root} ({k} classes, {n_images} images)",
        "architecture": f"{cfg.backbone.architecture} + softmax head (transfer)",
        "pretrained_weights": f"{WEIGHTS_FILE} (ImageNet-1k)",
        "weights_license": WEIGHTS_LICENSE,
        "epochs": len(history.get("loss", [])),
        "seed": cfg.seed,
    }
    draft, _ = export_bundle(
        model,
        out_dir=run_dir / STAGED_BUNDLES,
        name=cfg.name,
        labels=class_names,
        input_spec=cfg.input,
        parity_inputs=x_test[: cfg.export.parity_samples],
        provenance=provenance,
        description=cfg.description,
        version=cfg.export.version,
        opset=cfg.export.opset,
        atol=cfg.export.parity_atol,
    )
    t["export"] = time.perf_counter() - t0
    model.save(run_dir / "model.keras")  # the exact model behind the bundle, for `evaluate`

    probs, _ = run_prepared(open_model(draft), x_test)
    report = evaluate_probs(labels["test"], probs, class_names)
    # Validation scores for the threshold come from the final model (fine-tuned or not).
    if cfg.fine_tune.enabled and len(paths["val"]):
        val_probs = model.predict(load_images(paths["val"], cfg.input)[0], verbose=0)
    else:
        val_probs = head.predict(emb["val"], verbose=0)
    metrics = _metrics(cfg, class_names, probs, labels, val_probs, len(paths["train"]))
    meta = draft.metadata.model_copy(
        update={
            "metrics": [metrics],
            "provenance": draft.metadata.provenance.model_copy(
                update={"training_time_s": round(sum(t.values()), 1)}
            ),
        }
    )
    sizes = {s: len(p) for s, p in paths.items()}
    card = render_card(
        card_data(cfg, replace(draft, metadata=meta), report, sizes, root, config_path)
    )
    bundle = write_bundle(
        bundle_dir / cfg.name,
        model_bytes=draft.model_path.read_bytes(),
        metadata=meta,
        labels=class_names,
        model_card=card,
    )
    summary: dict[str, Any] = {
        "name": cfg.name,
        "recipe": cfg.recipe,
        "metrics": metrics.model_dump(mode="json"),
        "report": report.to_dict(),
        "class_names": class_names,
        "splits": {s: [str(p) for p in v] for s, v in paths.items()},
        "history": history,
        "timings_s": t,
        "embeddings": {"computed": stats.computed, "cached": stats.cached},
        "bundle": str(bundle.path),
    }
    if cfg.export.int8:
        summary["int8"] = _int8(cfg, bundle, bundle_dir, paths, x_test, labels["test"], metrics)
    write_metrics(run_dir, summary)
    logger.info(
        "%s: test accuracy %.3f on %d images; bundle %s",
        cfg.name,
        report.accuracy,
        report.n_samples,
        bundle.path,
    )
    return TransferResult(
        bundle=bundle,
        test_accuracy=report.accuracy,
        n_train=sizes["train"],
        n_val=sizes["val"],
        n_test=sizes["test"],
        confusion=report.confusion,
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
    """Test metrics; binary configs get a threshold calibrated (max F1) on the validation split."""
    y_test = labels["test"]
    common: dict[str, Any] = {
        "dataset": f"image folder ({len(class_names)} classes)",
        "split": "test",
        "n_samples": len(y_test),
        "accuracy": float(np.mean(probs.argmax(1) == y_test)),
        "extra": {"n_train": float(n_train), "n_val": float(len(labels["val"]))},
        "notes": f"stratified held-out split (seed {cfg.seed}); classes: {', '.join(class_names)}",
    }
    if cfg.positive_label is None or len(class_names) != 2:
        return Metrics(**common)
    if cfg.positive_label not in class_names:
        raise BadData(f"positive_label {cfg.positive_label!r} is not one of {class_names}")
    pos = class_names.index(cfg.positive_label)
    threshold = 0.5
    if len(labels["val"]):
        threshold = max_f1_threshold(val_probs[:, pos], labels["val"] == pos).threshold
        common["notes"] += (
            f"; threshold calibrated (max F1) on the validation split (n={len(labels['val'])})"
        )
    scores = probs[:, pos].astype(np.float64)
    r = binary_report(scores, y_test == pos, threshold)
    common["extra"] |= {key: float(getattr(r, key)) for key in ("tp", "fp", "fn", "tn")}
    if 0 < r.n_positive < r.n:
        common["extra"]["roc_auc"] = roc_auc(scores, y_test == pos)
    return Metrics(
        **common,
        precision=r.precision,
        recall=r.recall,
        f1=r.f1,
        threshold=threshold,
        positive_label=cfg.positive_label,
    )


def card_data(
    cfg: TransferConfig,
    bundle: Bundle,
    report: EvalReport,
    sizes: dict[str, int],
    root: Path,
    config_path: Path | None = None,
) -> CardData:
    meta = bundle.metadata
    ft = cfg.fine_tune
    tuned = (
        f"top {ft.blocks} blocks fine-tuned for {ft.epochs} epochs at lr {ft.learning_rate:g} "
        "(BatchNorm frozen)"
        if ft.enabled
        else "backbone frozen"
    )
    dim = meta.outputs.embedding.dim if meta.outputs.embedding else None
    recipe = Section(
        "Recipe",
        bullets=(
            f"Transfer learning: `{cfg.backbone.architecture}` ImageNet features ({dim}-d), "
            f"a softmax head (dropout {cfg.head.dropout}) trained on cached embeddings; {tuned}.",
            f"Data: {meta.provenance.data_source}; classes {', '.join(bundle.labels)}.",
            f"Split (stratified per class, seed {cfg.seed}): train {sizes['train']}, "
            f"validation {sizes['val']}, test {sizes['test']}.",
        ),
    )
    held_out = Section(
        f"Held-out evaluation (onnxruntime, n={report.n_samples})",
        tables=(per_class_table(report), confusion_table(report, bundle.labels)),
    )
    return CardData(
        meta,
        labels=bundle.labels,
        sections=(recipe, held_out),
        references=tuple(Reference(**r.model_dump()) for r in cfg.references),
        limitations=tuple(cfg.limitations),
        licences=(Licence("pretrained weights", WEIGHTS_LICENSE),),
        reproduce=reproduce_command(config_path, "--data-dir", str(root)),
    )


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

    def evaluate(model: OnnxModel) -> list[Metrics]:
        q_probs, _ = run_prepared(model, x_test)
        update: dict[str, Any] = {"accuracy": float(np.mean(q_probs.argmax(1) == y_test))}
        if metrics.threshold is not None and metrics.positive_label is not None:
            pos = bundle.labels.index(metrics.positive_label)
            r = binary_report(q_probs[:, pos], y_test == pos, metrics.threshold)
            update |= {"precision": r.precision, "recall": r.recall, "f1": r.f1}
        return [metrics.model_copy(update=update)]

    calibration = [p for v in paths.values() for p in v]
    q = quantize_bundle(bundle.path, bundle_dir, f"{cfg.name}-int8", calibration, evaluate=evaluate)
    return {
        "agreement_cross": q.agreement_cross,
        "n_photos": q.n_photos,
        "speedup_batch1": q.speedup(1),
        "written": str(q.written.path) if q.written else None,
    }
