"""CLI: python -m training {train,export,evaluate,eval-bundles,quantize,teach,lecture,recipes} ...

`train` runs any config through the recipe registry (training/recipes.py)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from app.bundle import Bundle, BundleError
from training.data import BadData, DataNotFound
from training.recipes import CommandError, ConfigError

logger = logging.getLogger("training")


def _train(args: argparse.Namespace) -> int:
    from training.recipes import RunOptions, load_config, run

    cfg = load_config(args.config)
    options = RunOptions(
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        runs_dir=args.runs_dir,
        epochs=args.epochs,
        export=not args.no_export,
        config_path=args.config,
    )
    for line in run(cfg, options).lines():
        print(line)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from training.recipes import recipes

    for r in recipes().values():
        print(f"{r.name:<12} {r.summary} (config {r.config.__name__}, runner {r.runner})")
    return 0


def _keras_model(path: Path, shape: tuple[int, int, int]) -> Any:
    """The Keras model at `path`, taking `shape` (H, W, C) inputs, or ConfigError saying why
    not (round 28: a missing, foreign or mis-shaped file was a traceback, and export left a
    half-written run directory)."""
    import keras

    from training.tta import HorizontalFlip  # noqa: F401  (registers the layer for loading)

    if not path.is_file():
        raise ConfigError(f"{path}: no such Keras model file (.keras)")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zip errors ... by file kind
        raise ConfigError(f"{path}: not a Keras model file this can read: {exc}"[:500]) from None
    got = tuple(model.input_shape[1:])
    if got != shape:
        raise ConfigError(
            f"{path}: the model takes {got} inputs (height, width, channels); this needs {shape}"
        )
    return model


def _export(args: argparse.Namespace) -> int:
    from training.config import ScratchConfig
    from training.datasets import load_arrays
    from training.evaluate import evaluate_and_export
    from training.export import hardware
    from training.recipes import check_outputs, load_config
    from training.runs import start_run

    cfg = load_config(args.config, ScratchConfig)
    check_outputs(cfg, args.out_dir, args.runs_dir, export=True)
    from training.tta import for_export

    shape = (cfg.input.height, cfg.input.width, cfg.input.channels)
    model = for_export(_keras_model(args.keras_model, shape), cfg)
    arrays = load_arrays(cfg, args.data_dir)
    training = {"hardware": hardware()}
    previous = args.keras_model.parent / "metrics.json"
    recorded: dict[str, Any] = {}
    if previous.is_file():  # a run directory: keep what it recorded about training
        recorded = json.loads(previous.read_text(encoding="utf-8"))
        training = recorded.get("training", training)
    _same_classes(model, arrays.class_names, recorded, args.keras_model)
    run_dir = start_run(args.runs_dir, cfg, "-export")
    model.save(run_dir / "model.keras")  # the exact model behind the bundle, for `evaluate`
    result = evaluate_and_export(
        model,
        cfg,
        arrays,
        run_dir=run_dir,
        out_dir=args.out_dir or cfg.export.out_dir,
        training=training,
        config_path=args.config,
    )
    assert result.bundle is not None and result.serving is not None
    print(f"bundle: {result.bundle.path}")
    print(
        f"serving-path accuracy {result.serving.report.accuracy:.4%} (n={result.serving.report.n_samples}), "
        f"agreement with Keras {result.agreement:.4%}; details in {result.metrics_path}"
    )
    return 0


def _same_classes(model: Any, names: tuple[str, ...], recorded: dict[str, Any], path: Path) -> None:
    """The data's classes are the model's (round 44: a 4-class folder for a 3-class model was
    a traceback, and 3 other names in another order wrote a bundle with wrong labels)."""
    units = int(model.output_shape[-1])
    if units != len(names):
        raise ConfigError(
            f"{path}: the model tells {units} classes apart, the data has {len(names)} "
            f"{list(names)[:5]}; give the data (and config) it was trained on"
        )
    reports = [r for r in recorded.get("keras", {}).values() if isinstance(r, dict)]
    trained = [c.get("label") for c in reports[0].get("per_class", [])] if reports else []
    if trained and trained != list(names):
        raise ConfigError(
            f"{path}: its run trained on the classes {trained[:5]}, the data's are "
            f"{list(names)[:5]}; give the data (and config) it was trained on"
        )


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from app.bundle import load_bundle
    from app.metrics import evaluate_probs
    from training.serving_eval import (
        PHOTO_PATH,
        SERVING_PATH,
        claimed_test_metrics,
        evaluate_bundle,
        official_test_split,
    )

    bundle = load_bundle(args.bundle)
    if args.config is not None:
        from training import bundle_eval
        from training.config import PretrainedConfig, TransferConfig
        from training.recipes import load_config

        cfg = load_config(args.config)
        bundle_eval.refuse_other_recipes(cfg, args.config)
        if isinstance(cfg, PretrainedConfig):  # the head's own photos and figures
            measured = bundle_eval.pretrained_metrics(cfg, bundle, args.data_dir)
            print(f"{bundle.name}: the {cfg.head!r} head's photo files -> {PHOTO_PATH}")
            recorded = next((m for m in bundle.metadata.metrics if m.split == "test"), None)
            for line in bundle_eval.metric_lines(measured, recorded):
                print(f"  {line}")
            return 0
        seen = None
        if isinstance(cfg, TransferConfig):
            run = bundle_eval.run_of(bundle, args.runs_dir)
            seen = bundle_eval.trained_pictures(run) if run is not None else None
            if seen is None:
                print(
                    f"note: no record of the run that made {bundle.name} in {args.runs_dir} "
                    "(--runs-dir): the split is drawn again from the folder as it is now; if "
                    "pictures were added since, some of its test pictures may be ones the "
                    "model trained on"
                )
        held_out = bundle_eval.held_out_set(cfg, bundle, args.data_dir, seen)
        x, y, dataset = held_out.x, held_out.y, held_out.dataset
    else:
        data = official_test_split(bundle.metadata, args.data_dir)
        x, y = data.x_test, data.y_test
        dataset = claimed_test_metrics(bundle.metadata).dataset
    if args.limit is not None:
        x, y = x[: args.limit], y[: args.limit]
    result = evaluate_bundle(bundle, x, y)
    r = result.report
    print(f"{bundle.name}: {dataset} test, n={r.n_samples}, via {SERVING_PATH} [{result.provider}]")
    print(
        f"  accuracy {r.accuracy:.4%}  top-{r.top_k} {r.top_k_accuracy:.4%}  macro F1 {r.macro_f1:.4%}"
    )
    for c in r.per_class:
        print(f"  {c.label:<14} P {c.precision:.3f} R {c.recall:.3f} F1 {c.f1:.3f} n={c.support}")
    print(f"  {result.seconds:.1f} s ({result.seconds / max(1, r.n_samples) * 1e3:.2f} ms/image)")
    keras_model = args.keras_model or _find_keras_model(bundle, args.runs_dir)
    if keras_model is not None:
        from training.evaluate import MIN_AGREEMENT, agreement, keras_probs

        spec = bundle.metadata.input
        model = _keras_model(keras_model, (spec.height, spec.width, spec.channels))
        print(f"  Keras model: {keras_model}")
        kp = keras_probs(model, np.asarray(x, dtype=np.float32))
        agree = agreement(kp, result.probs)
        k_acc = evaluate_probs(y, kp, bundle.labels).accuracy
        print(f"  Keras accuracy {k_acc:.4%}; same top-1 as the serving path on {agree:.4%}")
        if agree < MIN_AGREEMENT:
            print(f"FAILED: agreement below {MIN_AGREEMENT:.1%}", file=sys.stderr)
            return 1
    return 0


def _find_keras_model(bundle: Bundle, runs_dir: Path) -> Path | None:
    """The Keras model of the run that produced this exact model.onnx, if still on disk."""
    from training.bundle_eval import run_of

    run = run_of(bundle, runs_dir)
    keras_file = run / "model.keras" if run is not None else None
    return keras_file if keras_file is not None and keras_file.is_file() else None


def _lecture(args: argparse.Namespace) -> int:
    from training.lecture import run_lecture

    run_lecture(
        epochs=args.epochs,
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        doc=args.doc,
        image=args.image,
    )
    return 0


# Commands whose options belong to another module's own command line.
DELEGATED = {
    "teach": "app.teach.cli",
    "quantize": "training.quantize",
    "eval-bundles": "training.serving_eval",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # argparse's own words named this function ("invalid _positive_int")
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _folder(text: str) -> Path:
    """An output folder: it may not exist yet, but it must not be a file (found only after
    a whole training run, at the export, before this check)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    return path


def _delegate(module: str, argv: list[str]) -> int:
    import importlib

    return int(importlib.import_module(module).main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a config, evaluate it and export its bundle")
    train.add_argument("--config", type=Path, required=True)
    train.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data root (default ./data or $IMGCLASS_TRAINING_DATA_DIR); for folder configs, the image folder",
    )
    train.add_argument(
        "--out-dir", type=_folder, default=None, help="bundles folder (default models)"
    )
    train.add_argument("--runs-dir", type=_folder, default=Path("runs"))
    train.add_argument(
        "--epochs", type=_positive_int, default=None, help="override the config's epochs"
    )
    train.add_argument("--no-export", action="store_true", help="train and evaluate only")
    train.set_defaults(func=_train)

    export = sub.add_parser("export", help="evaluate and export a saved Keras model")
    export.add_argument("--keras-model", type=Path, required=True)
    export.add_argument("--config", type=Path, required=True)
    export.add_argument("--data-dir", type=Path, default=None)
    export.add_argument("--out-dir", type=_folder, default=None)
    export.add_argument("--runs-dir", type=_folder, default=Path("runs"))
    export.set_defaults(func=_export)

    ev = sub.add_parser("evaluate", help="evaluate a bundle through the serving path")
    ev.add_argument("--bundle", type=Path, required=True)
    ev.add_argument("--limit", type=_positive_int, default=None, help="first N test images only")
    ev.add_argument("--config", type=Path, default=None, help="take the test split from a config")
    ev.add_argument("--keras-model", type=Path, default=None, help="compare with this Keras model")
    ev.add_argument("--data-dir", type=Path, default=None)
    ev.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="where to look for the run that made the bundle (its Keras model, its splits)",
    )
    ev.set_defaults(func=_evaluate)

    rec = sub.add_parser("recipes", help="list the registered recipes")
    rec.set_defaults(func=_recipes)

    check = sub.add_parser(
        "eval-bundles",
        help="re-check bundles' claimed accuracy on their full test splits",
        add_help=False,  # -h goes to training.serving_eval
    )
    check.add_argument(
        "rest", nargs=argparse.REMAINDER, help="see python -m training.serving_eval -h"
    )
    check.set_defaults(func=lambda a: _delegate("training.serving_eval", a.rest))

    quant = sub.add_parser("quantize", help="static INT8 copy of a bundle", add_help=False)
    quant.add_argument("rest", nargs=argparse.REMAINDER, help="see python -m training.quantize -h")
    quant.set_defaults(func=lambda a: _delegate("training.quantize", a.rest))

    teach = sub.add_parser(
        "teach", help="teach a classifier head from a folder of class subfolders (no TensorFlow)"
    )
    teach.add_argument("rest", nargs=argparse.REMAINDER, help="see python -m app.teach.cli -h")
    teach.set_defaults(func=lambda a: _delegate("app.teach.cli", a.rest))

    lec = sub.add_parser("lecture", help="MLP vs lecture CNN on MNIST and shifted MNIST")
    lec.add_argument("--epochs", type=_positive_int, default=None)
    lec.add_argument("--data-dir", type=Path, default=None)
    lec.add_argument("--runs-dir", type=_folder, default=Path("runs"))
    lec.add_argument("--doc", type=Path, default=Path("docs/lecture-cnn-vs-mlp.md"))
    lec.add_argument("--image", type=Path, default=Path("docs/img/lecture-cnn-vs-mlp.png"))
    lec.set_defaults(func=_lecture)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] and argv[0] in DELEGATED:  # own options; argparse REMAINDER would drop them
            return _delegate(DELEGATED[argv[0]], argv[1:])
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        from training.runs import command_line

        with command_line(argv):
            return int(args.func(args))
    except (DataNotFound, BadData, ConfigError, BundleError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
