"""Card sections the recipes share, as data for the one renderer (app/card.py).

TensorFlow-free: tables from app.metrics reports, and the `scratch` recipe's card data (data,
architecture, training, serving-path metrics), every figure taken from the run or the config.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.bundle import Bundle
from app.card import CardData, Section, Table, pct
from app.metrics import EvalReport
from training.config import AugmentConfig, ScratchConfig
from training.runs import reproduce_command


def per_class_table(report: EvalReport) -> Table:
    return Table(
        ("class", "precision", "recall", "F1", "n"),
        tuple(
            (c.label, pct(c.precision), pct(c.recall), pct(c.f1), str(c.support))
            for c in report.per_class
        ),
        caption=f"Per class (n={report.n_samples:,}):",
    )


def confusion_table(report: EvalReport, names: Sequence[str], width: int = 11) -> Table:
    short = tuple(n if len(n) <= width else n[: width - 1] + "." for n in names)
    return Table(
        ("true \\ predicted", *short),
        tuple(
            (f"**{name}** (n={sum(row):,})", *(str(v) for v in row))
            for name, row in zip(names, report.confusion, strict=True)
        ),
        caption="Confusion matrix (rows: true class, columns: predicted):",
    )


def augment_text(a: AugmentConfig) -> str:
    parts = [
        "horizontal flip" if a.flip_horizontal else "",
        f"random translation up to {a.translate:.0%} of the side" if a.translate else "",
        f"rotation up to {a.rotation * 360:.0f} degrees" if a.rotation else "",
        f"zoom up to {a.zoom:.0%}" if a.zoom else "",
        f"contrast +-{a.contrast:.0%}" if a.contrast else "",
        f"random erasing (p={a.erasing})" if a.erasing else "",
        f"mixup (alpha {a.mixup_alpha})" if a.mixup_alpha else "",
    ]
    return ", ".join(p for p in parts if p) or "none"


def _time_text(training: dict[str, Any]) -> str:
    seconds = training.get("train_seconds")
    if seconds is None:
        return "not recorded (exported from a saved Keras model)"
    text = (
        f"{seconds / 60:.1f} min ({training.get('epochs_run', '?')} epochs, best epoch "
        f"{training.get('best_epoch', '?')} restored) on {training.get('hardware', 'unknown hardware')}"
    )
    if "mean_load_avg_1m" in training:
        text += f" (mean 1-minute load average during training {training['mean_load_avg_1m']})"
    return text


def scratch_card_data(
    cfg: ScratchConfig,
    bundle: Bundle,
    *,
    sizes: dict[str, int],
    dataset: str,
    test_split: str,
    serving: EvalReport,
    keras_report: EvalReport,
    agreement: float,
    training: dict[str, Any],
    params: int,
    inverted_accuracy: float | None = None,
    config_path: Path | None = None,
    reproduce: tuple[str, ...] = (),  # more arguments of the command (e.g. --data-dir DIR)
) -> CardData:
    t = cfg.train
    arch = cfg.model.architecture + (
        "(" + ", ".join(f"{k}={v}" for k, v in cfg.model.kwargs.items()) + ")"
        if cfg.model.kwargs
        else ""
    )
    data = Section(
        "Data",
        bullets=(
            f"Source: {dataset}.",
            f"Training: {sizes['train']:,} images; validation (stratified, from the training "
            f"split, picks the checkpoint): {sizes['val']:,}; {test_split} split: {sizes['test']:,}.",
        ),
    )
    train_bullets = [
        f"`{arch}`, trained from random weights (seed {cfg.seed}).",
        f"{t.optimizer} lr {t.learning_rate}, {t.schedule} schedule, weight decay "
        f"{t.weight_decay}, label smoothing {t.label_smoothing}, batch {t.batch_size}, up to "
        f"{t.epochs} epochs, precision {t.precision}.",
        f"Augmentation (training only): {augment_text(cfg.augment)}.",
        f"Training time: {_time_text(training)}.",
    ]
    if cfg.model.flip_tta:
        train_bullets.append(
            "Test-time augmentation in the graph: the prediction (and the embedding) is the "
            "mean over the image and its mirror image."
        )
    rows = [
        ("accuracy (serving path)", pct(serving.accuracy)),
        (f"top-{serving.top_k} accuracy", pct(serving.top_k_accuracy)),
        (
            "macro precision / recall / F1",
            f"{pct(serving.macro_precision)} / {pct(serving.macro_recall)} / {pct(serving.macro_f1)}",
        ),
        ("Keras accuracy on the same images", pct(keras_report.accuracy)),
        ("serving path = Keras top-1", f"{pct(agreement)} of {serving.n_samples:,} images"),
    ]
    if inverted_accuracy is not None:
        rows.append(("accuracy, the same images inverted (`invert: auto`)", pct(inverted_accuracy)))
    evaluation = Section(
        f"Evaluation ({dataset}, {test_split} split, n = {serving.n_samples:,})",
        paragraphs=(
            "Measured through the serving path: each test image encoded as PNG, decoded by "
            "`app.imaging.prepare`, classified by onnxruntime.",
        ),
        tables=(
            Table(("metric", "value"), tuple(rows)),
            per_class_table(serving),
            confusion_table(serving, bundle.labels),
        ),
    )
    return CardData(
        bundle.metadata,
        labels=bundle.labels,
        facts={"Parameters": f"{params:,}"},
        sections=(data, Section("Training", bullets=tuple(train_bullets)), evaluation),
        references=(),
        limitations=tuple(cfg.limitations),
        reproduce=reproduce_command(config_path, *reproduce),
    )
