"""The model card (README.md inside a bundle): data, architecture, metrics with sample sizes."""

from __future__ import annotations

from typing import Any

from training.config import TrainConfig
from training.metrics import EvalReport


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _confusion_table(report: EvalReport, names: tuple[str, ...]) -> list[str]:
    short = [n if len(n) <= 11 else n[:10] + "." for n in names]
    lines = [
        "| true \\ predicted | " + " | ".join(short) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for name, row in zip(names, report.confusion, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _augment_text(cfg: TrainConfig) -> str:
    a = cfg.augment
    parts = []
    if a.flip_horizontal:
        parts.append("horizontal flip")
    if a.translate:
        parts.append(f"random translation up to {a.translate:.0%} of the side")
    if a.rotation:
        parts.append(f"rotation up to {a.rotation * 360:.0f} degrees")
    if a.zoom:
        parts.append(f"zoom up to {a.zoom:.0%}")
    if a.contrast:
        parts.append(f"contrast +-{a.contrast:.0%}")
    if a.erasing:
        parts.append(f"random erasing (p={a.erasing})")
    if a.mixup_alpha:
        parts.append(f"mixup (alpha {a.mixup_alpha})")
    return ", ".join(parts) if parts else "none"


_POLARITY = {
    "False": "",
    "True": "; gray levels inverted before resizing (the model was trained dark on light)",
    "auto": (
        "; polarity `auto`: an image with a light border (a dark object on a light background, "
        "such as ink on paper or a product shot on white) is inverted before resizing, so it "
        "reaches the model light on dark like the training images"
    ),
}


def render_card(
    cfg: TrainConfig,
    *,
    class_names: tuple[str, ...],
    sizes: dict[str, int],
    dataset: str,
    test_split: str,
    serving: EvalReport,
    keras_report: EvalReport,
    agreement: float,
    training: dict[str, Any],
    params: int,
    inverted_accuracy: float | None = None,
) -> str:
    """Markdown for the bundle's README.md."""
    t = cfg.train
    spec = cfg.input
    minutes = training.get("train_seconds")
    time_text = (
        f"{minutes / 60:.1f} min ({training.get('epochs_run', '?')} epochs, best epoch "
        f"{training.get('best_epoch', '?')} restored) on {training.get('hardware', 'unknown hardware')}"
        + (
            f" (mean 1-minute load average during training {training['mean_load_avg_1m']}; "
            "about 2 is this job alone on 2 CPUs, more means other jobs shared the machine)"
            if "mean_load_avg_1m" in training
            else ""
        )
        if minutes is not None
        else "not recorded (exported from a saved Keras model)"
    )
    lines = [
        f"# Model card: `{cfg.name}`",
        "",
        cfg.description or f"{dataset} classifier.",
        "",
        "## Data",
        f"- Source: {dataset}; classes ({len(class_names)}): {', '.join(class_names)}.",
        f"- Training: {sizes['train']:,} images; validation (stratified, from the official "
        f"training split, picks the checkpoint): {sizes['val']:,}; {test_split} split: {sizes['test']:,}.",
        f"- Input: {spec.height}x{spec.width} {spec.color}, pixels 0-255 (scaling is inside the "
        f"graph), resize `{spec.resize.mode}`/{spec.resize.interpolation}"
        + _POLARITY[str(spec.invert)]
        + ".",
        "",
        "## Architecture and training",
        f"- `{cfg.model.architecture}`"
        + (
            "(" + ", ".join(f"{k}={v}" for k, v in cfg.model.kwargs.items()) + ")"
            if cfg.model.kwargs
            else ""
        )
        + f": {params:,} parameters; outputs "
        "`probs` (softmax) and `embedding` (the layer before the classifier).",
        f"- {t.optimizer} lr {t.learning_rate}, {t.schedule} schedule, weight decay {t.weight_decay}, "
        f"label smoothing {t.label_smoothing}, batch {t.batch_size}, up to {t.epochs} epochs, "
        f"seed {cfg.seed}, precision {t.precision}.",
        f"- Augmentation (training only): {_augment_text(cfg)}.",
        *(
            [
                "- Test-time augmentation in the graph: the prediction (and the embedding) is the "
                "mean over the image and its mirror image, so left-right mirroring never changes it."
            ]
            if cfg.model.flip_tta
            else []
        ),
        f"- Training time: {time_text}.",
        f"- Reproduce: `python -m training train --config training/configs/{cfg.name}.yaml`.",
        "",
        f"## Metrics ({dataset}, {test_split} split, n = {serving.n_samples:,})",
        "Measured through the serving path: each test image encoded as PNG, decoded by "
        "`app.imaging.prepare`, classified by onnxruntime.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| accuracy | {_pct(serving.accuracy)} |",
        f"| top-{serving.top_k} accuracy | {_pct(serving.top_k_accuracy)} |",
        f"| macro precision / recall / F1 | {_pct(serving.macro_precision)} / "
        f"{_pct(serving.macro_recall)} / {_pct(serving.macro_f1)} |",
        f"| Keras accuracy on the same images | {_pct(keras_report.accuracy)} |",
        f"| serving path = Keras top-1 | {_pct(agreement)} of {serving.n_samples:,} images |",
        *(
            [
                f"| accuracy, the same images inverted (dark on light; `invert: auto`) "
                f"| {_pct(inverted_accuracy)} |"
            ]
            if inverted_accuracy is not None
            else []
        ),
        "",
        "Per class:",
        "",
        "| class | precision | recall | F1 | n |",
        "|---|---|---|---|---|",
    ]
    for c in serving.per_class:
        lines.append(
            f"| {c.label} | {_pct(c.precision)} | {_pct(c.recall)} | {_pct(c.f1)} | {c.support} |"
        )
    lines += ["", "Confusion matrix (rows: true class, columns: predicted):", ""]
    lines += _confusion_table(serving, class_names)
    lines += ["", "## Limitations", ""]
    limits = list(cfg.limitations) or ["Only evaluated on the data set named above."]
    lines += [f"- {item}" for item in limits]
    return "\n".join(lines) + "\n"
