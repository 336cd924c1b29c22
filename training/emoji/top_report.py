"""Tables of top_finetune's leave-one-style-out folds: per style and pooled, the frozen head
(epoch 0) and the validation-chosen epoch, each at its own validation threshold; and
top_bundle's santa v2 summary (print_summary)."""

from __future__ import annotations

from typing import Any

import numpy as np

from training.emoji.card import _frac
from training.emoji.loso import summarise


def _fmt(iv: dict[str, Any]) -> str:
    if not iv.get("n"):
        return "0/0"
    pct = [100 * iv[k] for k in ("estimate", "low", "high")]
    return f"{iv['k']}/{iv['n']} = {pct[0]:.1f}% [{pct[1]:.1f}, {pct[2]:.1f}]"


def _brief(sm: dict[str, Any]) -> str:
    """precision, recall, recall at 1% FPR as counts, then ROC AUC."""
    k = sm["recall_at_1pct_fpr"]["k"]
    return f"{sm['tp']}/{sm['tp'] + sm['fp']}, {sm['tp']}/{sm['n_positive']}, {k}/{sm['n_positive']}, {sm['roc_auc']:.3f}"


def _photos(r: dict[str, Any], threshold: float) -> dict[str, int]:
    s, y = r["photo_scores"], r["photo_y"]
    return {
        "birds_found": int((s[y == 1] >= threshold).sum()),
        "birds": int((y == 1).sum()),
        "non_birds_flagged": int((s[y == 0] >= threshold).sum()),
        "non_birds": int((y == 0).sum()),
    }


def report(task: str, folds: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-style and pooled figures: the frozen head (epoch 0) and the validation-chosen epoch,
    each at its own validation-calibrated threshold."""
    out: dict[str, Any] = {"task": task, "folds": {}, "pooled": {}}
    rows: dict[str, tuple[list[Any], list[Any], list[Any]]] = {
        "frozen": ([], [], []),
        "finetuned": ([], [], []),
    }
    print(f"\n{task}: held-out | validation | epoch | s | frozen / fine-tuned: P, R, R@1%FPR, AUC")
    for style, f in folds.items():
        r = f[task]
        res: dict[str, Any] = {"epoch": r["epoch"], "validation_style": f["validation_style"]}
        line = [style, f["validation_style"], str(r["epoch"]), f"{f['seconds']:.0f}"]
        for kind, e in (("frozen", 0), ("finetuned", r["epoch"])):
            thr, s = r[f"threshold{e}"], r[f"scores{e}"]
            res[kind] = {**summarise(s, r["y"], thr), "threshold": thr}
            line.append(_brief(res[kind]))
            for acc, v in zip(rows[kind], (s, r["y"], np.full(len(s), thr)), strict=True):
                acc.append(v)
        if "photo_scores" in r:
            res["photos"] = _photos(r, r[f"threshold{r['epoch']}"])
            line.append(f"photos {res['photos']}")
        out["folds"][style] = {**res, "seconds": f["seconds"]}
        print(" | ".join(line))
    for kind, (s, y, t) in rows.items():
        sm = summarise(np.concatenate(s), np.concatenate(y), np.concatenate(t))
        out["pooled"][kind] = sm
        print(
            f"pooled {kind}: n={sm['n']} positives={sm['n_positive']} "
            f"precision {_fmt(sm['precision'])} recall {_fmt(sm['recall'])} "
            f"recall@1%FPR {_fmt(sm['recall_at_1pct_fpr'])} AUC {sm['roc_auc']:.3f}"
        )
    return out


def print_summary(summary: dict[str, Any], threshold: float | None = None) -> None:
    """Markdown tables (docs/drawings.md): per style, then pooled."""
    print("| held-out | validation | epoch | precision | recall | recall at 1% FPR (own cut) "
          "| ROC AUC | threshold | frozen (epoch 0): P, R, R@1%FPR, AUC |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for style, f in summary["folds"].items():
        m, z = f["finetuned"], f["frozen"]
        frozen = (f"{z['tp']}/{z['tp'] + z['fp']}, {z['tp']}/{z['n_positive']}, "
                  f"{z['recall_at_1pct_fpr']['k']}/{z['n_positive']}, {z['roc_auc']:.3f}")  # fmt: skip
        print(f"| {style} | {f['validation_style']} | {f['epoch']} | {_frac(m['precision'])} | "
              f"{_frac(m['recall'])} | {_frac(m['recall_at_1pct_fpr'])} | {m['roc_auc']:.3f} | "
              f"{m['threshold']:.4f} | {frozen} |")  # fmt: skip
    if summary.get("task") == "bird":  # each fold model on the real photos, at its threshold
        print("\nphotos (fold models): " + "; ".join(
            f"{s} {f['photos']['birds_found']}/{f['photos']['birds']} birds, "
            f"{f['photos']['non_birds_flagged']}/{f['photos']['non_birds']} flagged"
            for s, f in summary["folds"].items()))  # fmt: skip
    print("\n| models | n | positives | precision | recall | R@1% FPR, one pooled cut "
          "| R@1% FPR, per-style cuts summed | ROC AUC |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for kind, p in summary["pooled"].items():
        print(f"| {kind} | {p['n']} | {p['n_positive']} | {_frac(p['precision'])} | "
              f"{_frac(p['recall'])} | {_frac(p['recall_at_1pct_fpr'])} | "
              f"{_frac(p['per_style_cuts'])} | {p['roc_auc']:.3f} |")  # fmt: skip
    if threshold is not None:
        at = summary["at_shipped"]
        print(f"\nat the shipped threshold {threshold:.4f} (chosen on these pooled scores): "
              f"precision {_frac(at['precision'])} recall {_frac(at['recall'])}")  # fmt: skip
    if "served_rule_loso" in summary:
        nested = summary["served_rule_loso"]
        print("the same rule, each style's threshold chosen on the other six styles: precision "
              f"{_frac(nested['precision'])} recall {_frac(nested['recall'])}")  # fmt: skip
