"""Several top_ship runs of one procedure (seeds) scored alone and as an average, per fold.

Each run directory holds the 7 leave-one-style-out fold files of ``python -m
training.emoji.top_ship --seed K --step folds --fixed-epoch 5``. The ensemble's held-out score
for a picture is the mean of the members' logits (each member's fold model for that style was
trained on the same five styles, validated on the same sixth); its threshold for a fold is the
mean of the members' validation thresholds in logit space (a rule fixed before any ensemble was
scored). Figures per task (santa at the recorded fixed epoch, bird at each fold's chosen epoch):
recall at 1% FPR with each style's own cut, summed, and with one pooled cut; ROC AUC; precision
and recall at the fold thresholds. Nothing here trains or writes a bundle.

CLI: ``python -m training.emoji.top_members runs/santa-top-s0 runs/santa-top-s1 ...``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.metrics import recall_at_fpr, roc_auc
from training.emoji.catalog import STYLES
from training.emoji.loso import MAX_FPR
from training.emoji.top_ship import TASKS, fold_path, load_saved

_CLIP = 1e-7  # float32 probabilities saturate; logits of 0 and 1 are kept finite


def logit(p: npt.ArrayLike) -> npt.NDArray[np.float64]:
    q = np.clip(np.asarray(p, np.float64), _CLIP, 1 - _CLIP)
    return np.asarray(np.log(q / (1 - q)))


@dataclass(frozen=True)
class Fold:
    """One held-out style: labels, held-out logits and the validation threshold (a logit)."""

    style: str
    y: npt.NDArray[np.int64]
    z: npt.NDArray[np.float64]
    threshold: float


def member_folds(run_dir: Path, task: str) -> list[Fold]:
    """A run's 7 folds for `task`, at the epoch each fold file records for it."""
    out = []
    for style in STYLES:
        arrays, info = load_saved(fold_path(run_dir, style))
        e = int(info[task]["epoch"])
        z = logit(arrays[f"{task}_scores{e}"])
        thr = float(logit(info[task][f"threshold{e}"]))
        out.append(Fold(style, np.asarray(arrays[f"{task}_y"], np.int64), z, thr))
    return out


def average(members: Sequence[Sequence[Fold]]) -> list[Fold]:
    """Per fold, the members' mean logit and mean threshold (same pictures in the same order)."""
    out = []
    for folds in zip(*members, strict=True):
        first = folds[0]
        for f in folds[1:]:
            if f.style != first.style or not np.array_equal(f.y, first.y):
                raise ValueError(f"{first.style}: members scored different pictures")
        z = np.mean([f.z for f in folds], axis=0)
        out.append(Fold(first.style, first.y, z, float(np.mean([f.threshold for f in folds]))))
    return out


def figures(folds: Sequence[Fold]) -> dict[str, float | int]:
    """Counts over the pooled folds (see the module docstring)."""
    z = np.concatenate([f.z for f in folds])
    y = np.concatenate([f.y for f in folds]) == 1
    pred = np.concatenate([f.z >= f.threshold for f in folds])
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "per_style_cuts": sum(recall_at_fpr(f.z, f.y == 1, MAX_FPR).tp for f in folds),
        "pooled_cut": recall_at_fpr(z, y, MAX_FPR).tp,
        "roc_auc": roc_auc(z, y),
        "tp": int((pred & y).sum()),
        "flagged": int(pred.sum()),
    }


def _line(name: str, f: dict[str, float | int]) -> str:
    n = f["positives"]
    return (
        f"| {name} | {f['per_style_cuts']}/{n} | {f['pooled_cut']}/{n} | {f['roc_auc']:.4f} | "
        f"{f['tp']}/{f['flagged']} | {f['tp']}/{n} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("run_dirs", type=Path, nargs="+")
    args = ap.parse_args(argv)
    for task in TASKS:
        members = [member_folds(d, task) for d in args.run_dirs]
        ens = average(members)
        f0 = figures(ens)
        print(f"\n{task}: n = {f0['n']}, {f0['positives']} positives")
        print("| fold scores | R@1% FPR, per-style cuts | R@1% FPR, pooled cut | ROC AUC "
              "| precision | recall |")  # fmt: skip
        print("|---|---|---|---|---|---|")
        for d, m in zip(args.run_dirs, members, strict=True):
            print(_line(str(d), figures(m)))
        print(_line(f"mean logit of {len(members)}", f0))
        print("per style, own cut:", ", ".join(
            f"{f.style} {recall_at_fpr(f.z, f.y == 1, MAX_FPR).tp}/{int((f.y == 1).sum())}"
            for f in ens
        ))  # fmt: skip


if __name__ == "__main__":
    main()
