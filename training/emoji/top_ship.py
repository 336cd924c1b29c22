"""Ship `santa` (v2, v3) and `bird` (v2): the backbone's top (block15 + head conv) fine-tuned
on emoji art with a two-output head (Santa, bird); one run gives both tasks' fold models.

Settings are top_finetune's 5-epoch run, fixed before this ran (Adam 2e-4, 3,000 negatives
per epoch, seed 0, the shared santa+bird top; per fold the santa epoch and threshold are
chosen on the validation style). Steps, each resumable from the run directory:

1. ``folds``: the 7 leave-one-style-out fold models; per fold the santa-chosen epoch's top
   weights, both heads (folded onto sqrt(embedding + EPS); bird's since 2026-12-02 19:00),
   each task's validation threshold and held-out scores are saved (``fold-<style>.npz``).
   ``--fixed-epoch N``: every fold taken at epoch N
   (the served model's procedure when that is "N epochs, fixed"; recorded in ``run.json``),
   threshold still from the validation style; fold files already there (e.g. copied from a
   run whose validation chose N) are kept only if they are epoch N's.
2. ``final``: the top trained on all 7 styles for the median of the folds' santa epochs (rule
   fixed in advance), saved as ``final.npz``.
3. ``write``: the figures and the ship rule (training.emoji.top_summary, via top_bundle;
   ``--run-dir A B C``: the members of one model, see top_bundle; ``--task bird``: the bird
   bundle); only if the rule passes: the served graph (training.emoji.top_graph), parity
   (top_parity), metadata, card (top_card) and bundle (top_bundle) in
   ``--out`` (models/). ``--candidate --out DIR`` writes it whatever the rule says, never
   into models/.

CLI: ``python -m training.emoji.top_ship [--run-dir runs/santa-top] [--step all]`` (about 15-20
min for the 7 folds + 1 min for the final model on 2 cores, once the cut cache is filled).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from training.emoji.catalog import PROJECT_ROOT, STYLES
from training.emoji.top_cache import CutBackbone, fill_cache
from training.emoji.top_finetune import (
    EPS,
    Data,
    TopState,
    load_data,
    photo_inputs,
    run_fold,
    train_top,
)

logger = logging.getLogger(__name__)

SETTINGS = {"epochs": 5, "n_neg": 3000, "lr": 2e-4, "seed": 0}
TASKS = ("santa", "bird")  # the shared head's columns, in order
HEAD_PREFIX = {"santa": "", "bird": "bird_"}  # santa's keys stay those of v2's fold files


def head_keys(task: str) -> tuple[str, str]:
    """The names a task's folded head is saved under in fold and final files."""
    return f"{HEAD_PREFIX[task]}head_w", f"{HEAD_PREFIX[task]}head_b"


def snapshot(st: TopState) -> dict[str, npt.NDArray[Any]]:
    """The top's conv weights (Keras layout, by layer name) and each task's head folded onto
    sqrt(embedding + EPS): logit = sqrt(e + EPS) @ head_w + head_b (santa: head_w/head_b;
    bird: bird_head_w/bird_head_b; files written before 2026-12-02 19:00 hold santa's only)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for layer in st.top.layers:
        ws = layer.get_weights()
        if ws:
            out[f"{layer.name}.kernel"], out[f"{layer.name}.bias"] = (np.asarray(w) for w in ws)
    wd, bd = (np.asarray(v, np.float64) for v in st.dense.get_weights())
    for col, task in enumerate(TASKS):
        kw, kb = head_keys(task)
        out[kw] = wd[:, col] / st.scale
        out[kb] = np.asarray(bd[col] - float((st.mean / st.scale) @ wd[:, col]))
    return out


def keras_logits(
    weights: dict[str, Any], cut: npt.NDArray[Any], task: str = "santa"
) -> npt.NDArray[np.float64]:
    """The `task` head's logit of saved weights on cut tensors, in Keras."""
    from training.emoji.top_finetune import build_top, embed, top_ops

    top = build_top(top_ops())
    for layer in top.layers:
        if f"{layer.name}.kernel" in weights:
            layer.set_weights([weights[f"{layer.name}.kernel"], weights[f"{layer.name}.bias"]])
    e = embed(top, cut).astype(np.float64)
    kw, kb = head_keys(task)
    return np.asarray(np.sqrt(e + EPS) @ weights[kw] + float(weights[kb]))


def _save(path: Path, arrays: dict[str, Any], info: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, info=np.asarray(json.dumps(info)), **arrays)
    tmp.replace(path)


def load_saved(path: Path) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    z = np.load(path)
    return {k: z[k] for k in z.files if k != "info"}, json.loads(str(z["info"]))


def fold_path(run_dir: Path, style: str) -> Path:
    return run_dir / f"fold-{style}.npz"


RUN_FILE = "run.json"  # run-level choices: {"fixed_epoch": N} after `--fixed-epoch N`


def run_fixed_epoch(run_dir: Path) -> int | None:
    """The epoch every fold of this run directory was taken at (None: validation chose)."""
    path = run_dir / RUN_FILE
    return json.loads(path.read_text()).get("fixed_epoch") if path.is_file() else None


def fixed_epoch_problem(path: Path, fixed_epoch: int) -> str | None:
    """Why a fold file already in the run directory is not a fold model taken at
    `fixed_epoch` (None: it is; e.g. a fold copied from a run whose validation chose that
    epoch: its weights, scores and threshold are then that epoch's)."""
    arrays, info = load_saved(path)
    if int(info["santa"]["epoch"]) != fixed_epoch:
        return f"{path}: santa epoch {info['santa']['epoch']}, not {fixed_epoch}"
    if f"santa_scores{fixed_epoch}" not in arrays or f"threshold{fixed_epoch}" not in info["santa"]:
        return f"{path}: no scores or threshold at epoch {fixed_epoch}"
    return None


def check_fixed(run_dir: Path, fixed_epoch: int | None) -> None:
    """Refuse (before any training) to mix procedures in one run directory: another fixed
    epoch than the one recorded, or a fold file of another epoch; then record the choice."""
    if (run_dir / RUN_FILE).is_file() and run_fixed_epoch(run_dir) != fixed_epoch:
        raise ValueError(f"{run_dir} was run with --fixed-epoch {run_fixed_epoch(run_dir)}")
    if fixed_epoch is None:
        return
    for style in STYLES:  # every fold in the directory, also those not being run now
        path = fold_path(run_dir, style)
        if path.is_file() and (why := fixed_epoch_problem(path, fixed_epoch)):
            raise ValueError(f"{why}: move it away to retrain this fold")
    (run_dir / RUN_FILE).write_text(json.dumps({"fixed_epoch": fixed_epoch}) + "\n")


def with_seed(seed: int | None) -> dict[str, Any]:
    """SETTINGS, with another seed (a member of an ensemble, training.emoji.top_members)."""
    return dict(SETTINGS) if seed is None else dict(SETTINGS, seed=seed)


def run_folds(
    d: Data,
    run_dir: Path,
    styles: Sequence[str],
    fixed_epoch: int | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Each missing fold: train, keep the santa-chosen epoch's weights, scores and threshold
    (`fixed_epoch`: that epoch for every fold, threshold still from the validation style).
    A fold file already there must have been trained with the same `settings`."""
    settings = dict(SETTINGS) if settings is None else settings
    check_fixed(run_dir, fixed_epoch)
    photos = photo_inputs(CutBackbone())
    for style in styles:
        path = fold_path(run_dir, style)
        if path.is_file():
            if (had := load_saved(path)[1].get("settings")) != settings:
                raise ValueError(f"{path} was trained with {had}, not {settings}")
            continue
        snaps: dict[int, dict[str, npt.NDArray[Any]]] = {}

        def keep(epoch: int, st: TopState, snaps: dict[int, Any] = snaps) -> None:
            snaps[epoch] = snapshot(st)

        fold = run_fold(d, style, photos, **settings, on_epoch=keep, fixed_epoch=fixed_epoch)
        arrays: dict[str, Any] = {}
        info: dict[str, Any] = {"held_out": style, "settings": settings}
        info.update(validation_style=fold["validation_style"], seconds=fold["seconds"])
        for task in ("santa", "bird"):
            r = fold[task]
            info[task] = {"epoch": r["epoch"]}
            for e in sorted({0, r["epoch"]}):
                info[task][f"threshold{e}"] = float(r[f"threshold{e}"])
                arrays[f"{task}_scores{e}"] = r[f"scores{e}"]
            arrays[f"{task}_y"] = r["y"]
            if "photo_scores" in r:
                arrays["bird_photo_scores"], arrays["bird_photo_y"] = (
                    r["photo_scores"],
                    r["photo_y"],
                )
        arrays.update(snaps[fold["santa"]["epoch"]])
        _save(path, arrays, info)
        logger.info("%s: santa epoch %d, %.0f s", style, fold["santa"]["epoch"], fold["seconds"])


def final_epochs(run_dir: Path) -> int:
    """The rule fixed before the folds ran: the median of the 7 folds' santa-chosen epochs."""
    epochs = [load_saved(fold_path(run_dir, s))[1]["santa"]["epoch"] for s in STYLES]
    return int(np.median(epochs))


def run_final(d: Data, run_dir: Path, settings: dict[str, Any] | None = None) -> None:
    path = run_dir / "final.npz"
    if path.is_file():
        return
    epochs = final_epochs(run_dir)
    t0 = time.perf_counter()
    s = dict(SETTINGS if settings is None else settings, epochs=epochs)
    last: dict[str, npt.NDArray[Any]] = {}
    for e, st in train_top(d, np.ones(len(d.style), bool), **s):
        logger.info("final epoch %d: %.0f s", e, time.perf_counter() - t0)
        last = snapshot(st)
    info = {"settings": s, "seconds": time.perf_counter() - t0, "styles": list(STYLES)}
    _save(path, last, info)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--run-dir",
        type=Path,
        nargs="+",
        default=[PROJECT_ROOT / "runs" / "santa-top"],
        help="the run directory; for the write step, several: the members of one model (one "
        "run per seed), served as the mean of their logits",
    )
    ap.add_argument("--version", default="2", help="write step: the bundle's version")
    ap.add_argument(
        "--task",
        choices=list(TASKS),
        default="santa",
        help="write step: which head the bundle serves (both are trained)",
    )
    ap.add_argument("--step", choices=["folds", "final", "train", "write", "all"], default="all")
    ap.add_argument("--styles", nargs="*", default=list(STYLES))
    ap.add_argument(
        "--fixed-epoch",
        type=int,
        default=None,
        help="folds step: take every fold model at this epoch (the final model's procedure) "
        "instead of the validation-chosen one; the threshold is still chosen on validation",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=None,
        help=f"folds/final steps: another seed than {SETTINGS['seed']} (one member of an "
        "ensemble: give each member its own --run-dir; training.emoji.top_members scores them)",
    )
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "models")
    ap.add_argument(
        "--previous-run",
        type=Path,
        default=None,
        help="write step: an earlier run directory of the same model, printed and named on the "
        "card beside this estimate",
    )
    ap.add_argument(
        "--candidate",
        action="store_true",
        help="write the bundle even if the ship rule says no (only with --out outside models/)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    dirs: list[Path] = args.run_dir
    if args.step != "write" and len(dirs) != 1:
        ap.error("only the write step takes several run directories")
    run_dir = dirs[0]
    run_dir.mkdir(parents=True, exist_ok=True)
    if args.step in ("folds", "train", "all"):
        check_fixed(run_dir, args.fixed_epoch)
    if args.step in ("folds", "final", "train", "all"):
        fill_cache()
        d = load_data()
        if args.step in ("folds", "train", "all"):
            run_folds(d, run_dir, args.styles, args.fixed_epoch, with_seed(args.seed))
        if args.step in ("final", "train", "all"):
            run_final(d, run_dir, with_seed(args.seed))
        del d
    if args.step in ("write", "all"):
        from training.emoji.top_bundle import write

        write(
            dirs, args.out, args.candidate, args.previous_run, version=args.version, task=args.task
        )


if __name__ == "__main__":
    main()
