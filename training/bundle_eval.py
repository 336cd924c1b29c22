"""The test set a config names, for ``python -m training evaluate --bundle DIR --config CONFIG``.

Per recipe, the set its run measured: `scratch`, the config's data set test split
(training.datasets.load_arrays); `transfer`, the image folder's held-out split, cut as the run
cut it (training.transfer.split_folder, same seed and fractions); `pretrained`, the fixed
head's own evaluation photos (training.pretrained_heads). The emoji recipes measure their
bundles inside the run (leave-one-style-out), so their configs are refused with what to run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.bundle import Bundle, Metrics
from training.config import PretrainedConfig, RecipeBase, ScratchConfig, TransferConfig
from training.data import BadData, DataNotFound, load_images
from training.recipes import ConfigError
from training.runs import METRICS_FILE, STAGED_BUNDLES

# What `evaluate --config` accepts; the CLI's own advice (serving_eval) names the same ones.
EVALUATED = ("scratch", "transfer", "pretrained")


@dataclass(frozen=True)
class HeldOutSet:
    x: npt.NDArray[Any]  # raw uint8 images, or float32 inputs already prepared by the server
    y: npt.NDArray[np.int64]
    dataset: str


def _same_labels(bundle: Bundle, names: tuple[str, ...], what: str) -> None:
    if tuple(names) != bundle.labels:
        raise BadData(
            f"{bundle.name}: its labels {list(bundle.labels)[:5]} are not {what}'s classes "
            f"{list(names)[:5]}; give the config (and data) that built the bundle"
        )


def _same_input(bundle: Bundle, cfg: ScratchConfig) -> None:
    spec, want = bundle.metadata.input, cfg.input
    got = (spec.height, spec.width, spec.channels)
    if got != (want.height, want.width, want.channels):
        raise BadData(
            f"{bundle.name}: it takes {got} inputs (height, width, channels), the config "
            f"{(want.height, want.width, want.channels)}; give the config that built the bundle"
        )


def refuse_other_recipes(cfg: RecipeBase, path: Path) -> None:
    """A config whose bundles are not measured on a test set this command can rebuild."""
    if cfg.recipe not in EVALUATED:
        raise ConfigError(
            f"{path}: a {cfg.recipe!r} config; `evaluate --config` takes a "
            f"{', '.join(EVALUATED[:-1])} or {EVALUATED[-1]} config. Its bundles are measured "
            f"by the run itself (leave-one-style-out): python -m training train --config "
            f"{path} --out-dir DIR"
        )


def held_out_set(
    cfg: RecipeBase,
    bundle: Bundle,
    data_dir: Path | None,
    seen: set[tuple[str, str]] | None = None,
) -> HeldOutSet:
    """The held-out split the config's run measured (`data_dir` as for `train`); for a
    transfer run whose record says what it trained on (`seen`), everything else."""
    if isinstance(cfg, ScratchConfig):
        from training.datasets import load_arrays

        _same_input(bundle, cfg)  # before the data is read (round 28: a traceback later)
        arrays = load_arrays(cfg, data_dir)
        _same_labels(bundle, arrays.class_names, arrays.dataset)  # round 28: never checked
        x = arrays.x_test_raw if arrays.x_test_raw is not None else arrays.x_test
        return HeldOutSet(x, arrays.y_test, arrays.dataset)
    if not isinstance(cfg, TransferConfig):
        raise ConfigError(f"{cfg.name}: a {cfg.recipe!r} config names no held-out split")
    from training.transfer import SPLITS, split_folder

    root = data_dir if data_dir is not None else cfg.data.path
    if root is None:
        raise DataNotFound("no image folder: set data.path in the config or pass --data-dir")
    names, paths, labels = split_folder(cfg, root)
    _same_labels(bundle, names, str(root))
    test, y = paths["test"], labels["test"]
    note = "the split drawn again from the folder"
    if seen is not None:
        # Every picture the run neither trained nor validated on: its own test pictures, and
        # any added since; the split drawn again would hand some trained ones to the test
        # when the folder has grown (round 44: 20 of 48 "test" pictures).
        every = [(p, lab) for s in SPLITS for p, lab in zip(paths[s], labels[s], strict=True)]
        kept_pairs = [(p, lab) for p, lab in every if not _seen(p, names, seen)]
        test = [p for p, _ in kept_pairs]
        y = np.asarray([lab for _, lab in kept_pairs], dtype=np.int64)
        note = "every picture the run that made the bundle did not train or validate on"
    # Prepared by the server's ingestion; a file it refuses is dropped, as the run dropped it.
    x, kept = load_images(test, bundle.metadata.input)
    return HeldOutSet(x, y[kept], f"image folder ({len(names)} classes; {note})")


def _key(path: str | Path, classes: tuple[str, ...]) -> tuple[str, str]:
    """A picture's place below its class folder: the same file whatever folder holds the
    classes (a copy of the data, a folder renamed)."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in classes:
            return parts[i], "/".join(parts[i + 1 :])
    return "", str(path)


def _digest(path: str | Path) -> tuple[str, str]:
    try:
        return "sha256", hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "", ""


def _seen(path: Path, classes: tuple[str, ...], seen: set[tuple[str, str]]) -> bool:
    """The run trained or validated on this picture: the same place below its class folder,
    or the same bytes (a file renamed since)."""
    return _key(path, classes) in seen or _digest(path) in seen


def run_of(bundle: Bundle, runs_dir: Path) -> Path | None:
    """The run that produced this exact model.onnx (same sha256), if it is still on disk."""
    sha = bundle.metadata.artifact.sha256
    for run in sorted(runs_dir.glob(f"{bundle.name}-*"), reverse=True):
        staged = run / STAGED_BUNDLES / bundle.name / "metadata.json"
        if staged.is_file():
            meta = json.loads(staged.read_text(encoding="utf-8"))
            if meta.get("artifact", {}).get("sha256") == sha:
                return run
    return None


def trained_pictures(run: Path) -> set[tuple[str, str]] | None:
    """The pictures a transfer run trained or validated on, as _key names them (None: the run
    recorded no splits)."""
    try:
        summary = json.loads((run / METRICS_FILE).read_text(encoding="utf-8"))
        splits, classes = summary["splits"], tuple(summary["class_names"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    trained = [p for s in ("train", "val") for p in splits.get(s, [])]
    return {_key(p, classes) for p in trained} | {_digest(p) for p in trained} - {("", "")}


def pretrained_metrics(cfg: PretrainedConfig, bundle: Bundle, data_dir: Path | None) -> Metrics:
    """The fixed head's evaluation (the recipe's own) on the bundle as it is, with its
    recorded resize policy; photos from <data dir>/photos, as `train` reads them."""
    from training.pretrained_heads import HEADS
    from training.serving_eval import open_model

    photos = data_dir / "photos" if data_dir is not None else None
    head = HEADS[cfg.head](cfg, photos, bundle.path.parent)
    _same_labels(bundle, head.labels(), f"the {cfg.head!r} head")
    metric, _ = head.evaluate(open_model(bundle), bundle.metadata.input, "re-evaluated")
    return metric


def metric_lines(measured: Metrics, recorded: Metrics | None) -> list[str]:
    """The measured figures, each beside the bundle's recorded one when it has it."""
    figures = (
        ("accuracy", "accuracy"),
        ("top-5", "top5_accuracy"),
        ("precision", "precision"),
        ("recall", "recall"),
    )
    out = [f"{measured.dataset}, {measured.split} split, n={measured.n_samples}"]
    for label, key in figures:
        value = getattr(measured, key)
        if value is None:
            continue
        before = getattr(recorded, key, None) if recorded is not None else None
        shown = f" (recorded {before:.4%})" if before is not None else ""
        out.append(f"  {label} {value:.4%}{shown}")
    if measured.threshold is not None:
        out.append(f"  threshold {measured.threshold:g} on P({measured.positive_label})")
    return out
