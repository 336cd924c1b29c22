"""fit(cfg): seeded training with callbacks into a run directory, then evaluation and export."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training.architectures import check_arguments, create_model
from training.config import ScratchConfig
from training.datasets import Datasets, make_datasets
from training.evaluate import ExportResult, evaluate_and_export
from training.export import hardware
from training.plots import plot_history, read_history
from training.recipes import ConfigError, RunOptions, RunReport
from training.runs import start_run
from training.tta import for_export

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    model: keras.Model
    datasets: Datasets
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    train_seconds: float
    export: ExportResult | None


class _EpochLog(keras.callbacks.Callback):
    """Adds the learning rate, the epoch's wall time and the load average to the logs (CSV)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        opt = self.model.optimizer
        lr = opt.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(opt.iterations)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        logs["epoch_seconds"] = time.perf_counter() - self._t0
        # The machine may be shared: the 1-minute load average puts epoch times in context.
        logs["load_avg_1m"] = os.getloadavg()[0]


def _optimizer(cfg: ScratchConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = cfg.train
    lr: float | keras.optimizers.schedules.LearningRateSchedule = t.learning_rate
    if t.schedule == "cosine":
        total = steps_per_epoch * t.epochs
        warmup = min(steps_per_epoch * t.warmup_epochs, total - 1)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.learning_rate * (0.1 if warmup else 1.0),
            decay_steps=max(1, total - warmup),
            alpha=t.min_lr_fraction,
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(lr)


def build_model(cfg: ScratchConfig, num_classes: int) -> keras.Model:
    """The config's network; a wrong `model:` section is a ConfigError (one `error:` line)."""
    spec = cfg.input
    try:
        return create_model(
            cfg.model.architecture,
            (spec.height, spec.width, spec.channels),
            num_classes,
            **cfg.model.kwargs,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{cfg.name}: model: {exc}") from exc


def compile_model(model: keras.Model, cfg: ScratchConfig, steps_per_epoch: int) -> None:
    model.compile(
        optimizer=_optimizer(cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
        metrics=["accuracy"],
    )


def _callbacks(cfg: ScratchConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    t = cfg.train
    mode = "max" if t.monitor == "val_accuracy" else "min"
    cbs: list[keras.callbacks.Callback] = [
        _EpochLog(),
        keras.callbacks.ModelCheckpoint(
            run_dir / "best.weights.h5",
            monitor=t.monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        ),
    ]
    if t.schedule == "plateau":
        cbs.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=t.plateau_factor,
                patience=t.plateau_patience,
                min_lr=t.learning_rate * t.min_lr_fraction,
            )
        )
    if t.early_stopping_patience:
        cbs.append(
            keras.callbacks.EarlyStopping(
                monitor=t.monitor, mode=mode, patience=t.early_stopping_patience
            )
        )
    cbs.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv")))
    return cbs


def _float32_copy(model: keras.Model, cfg: ScratchConfig, num_classes: int) -> keras.Model:
    """The same network under the float32 policy (what is evaluated and exported)."""
    keras.mixed_precision.set_global_policy("float32")
    clone = build_model(cfg, num_classes)
    clone.set_weights(model.get_weights())
    return clone


def fit(
    cfg: ScratchConfig,
    *,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    export: bool = True,
    config_path: Path | None = None,
    reproduce: tuple[str, ...] = (),
) -> RunResult:
    """Train `cfg` from scratch, restore the best checkpoint, evaluate, and export the bundle
    (`reproduce`: more arguments the card's Reproduce line needs, e.g. --epochs)."""
    t_start = time.perf_counter()
    try:  # a wrong architecture or option fails before the data is read
        check_arguments(cfg.model.architecture, cfg.model.kwargs)
    except ValueError as exc:
        raise ConfigError(f"{cfg.name}: model: {exc}") from exc
    keras.utils.set_random_seed(cfg.seed)
    data = make_datasets(cfg, data_dir)  # before the run directory: bad data leaves none behind
    keras.mixed_precision.set_global_policy(cfg.train.precision)
    model = build_model(cfg, data.arrays.num_classes)  # so is a model that cannot be built
    run_dir = start_run(runs_dir, cfg)
    logger.info("run directory %s", run_dir)
    compile_model(model, cfg, data.steps_per_epoch)
    logger.info(
        "%s: %s params, %s, hardware %s",
        cfg.model.architecture,
        f"{model.count_params():,}",
        data.arrays.sizes(),
        hardware(),
    )
    t0 = time.perf_counter()
    model.fit(
        data.train,
        validation_data=data.val,
        epochs=cfg.train.epochs,
        callbacks=_callbacks(cfg, run_dir),
        verbose=cfg.train.verbose,
        shuffle=False,  # the pipeline shuffles, seeded
    )
    train_seconds = time.perf_counter() - t0
    model.load_weights(run_dir / "best.weights.h5")  # best validation epoch, not the last
    if cfg.train.precision != "float32":
        model = _float32_copy(model, cfg, data.arrays.num_classes)
    model = for_export(model, cfg)  # what is evaluated and shipped
    model.save(run_dir / "model.keras")

    history = read_history(run_dir / "history.csv")
    monitored = history.get(cfg.train.monitor, [0.0])
    best = int(
        np.argmax(monitored) if cfg.train.monitor == "val_accuracy" else np.argmin(monitored)
    )
    plot_history(history, run_dir / "training_curves.png", f"{cfg.name} ({cfg.model.architecture})")
    training = {
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": best + 1,
        "train_seconds": round(train_seconds, 1),
        "hardware": hardware(),
        "platform": platform.platform(),
        "mean_load_avg_1m": round(float(np.mean(history.get("load_avg_1m", [0.0]))), 2),
        "params": int(model.count_params()),
    }
    result = evaluate_and_export(
        model,
        cfg,
        data.arrays,
        run_dir=run_dir,
        out_dir=out_dir or cfg.export.out_dir,
        training=training,
        export=export,
        config_path=config_path,
        # the folder it read goes into the card's Reproduce line (round 28: it failed without)
        reproduce=(("--data-dir", str(data_dir)) if data_dir is not None else ()) + reproduce,
    )
    logger.info("run finished in %.0f s: %s", time.perf_counter() - t_start, run_dir)
    return RunResult(
        run_dir=run_dir,
        model=model,
        datasets=data,
        history=history,
        epochs_run=training["epochs_run"],
        best_epoch=best + 1,
        train_seconds=train_seconds,
        export=result,
    )


def run(cfg: ScratchConfig, options: RunOptions) -> RunReport:
    """The `scratch` recipe entry point (training.recipes)."""
    if options.epochs is not None:
        cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"epochs": options.epochs})}
        )
    result = fit(
        cfg,
        data_dir=options.data_dir,
        out_dir=options.out_dir,
        runs_dir=options.runs_dir,
        export=options.export,
        config_path=options.config_path,
        # round 44: the card's Reproduce line left out --epochs, so it trained the config's 40
        reproduce=("--epochs", str(options.epochs)) if options.epochs is not None else (),
    )
    ex = result.export
    arrays = result.datasets.arrays
    metrics = []
    if ex is not None:
        metrics.append(ex.keras_test.to_metrics(arrays.dataset, arrays.test_split, "keras"))
        if ex.serving is not None:
            metrics.append(
                ex.serving.report.to_metrics(arrays.dataset, arrays.test_split, "onnxruntime")
            )
    notes = [f"training time: {result.train_seconds / 60:.1f} min, {result.epochs_run} epochs"]
    if ex is not None and ex.agreement is not None:
        notes.append(f"serving path = Keras top-1 on {ex.agreement:.4%} of the test images")
    bundles = [ex.bundle.path] if ex is not None and ex.bundle is not None else []
    return RunReport("scratch", cfg.name, result.run_dir, bundles, metrics, notes)
