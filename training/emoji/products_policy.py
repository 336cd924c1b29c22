"""Declare the trim-and-centre input policy on the shipped `products` bundle, measured.

Same model.onnx; metadata.input.trim = true. Re-measures, through the serving path with the
policy on, Fashion-MNIST's official test split (original and inverted) and the
emoji clothing drawings per style (training.emoji.products_eval: as distributed and as
untrimmed "product shots"), records them in the metadata, and adds a section to the card.
Refuses to write when Fashion-MNIST test accuracy falls below --min-accuracy.
CLI: ``python -m training.emoji.products_policy [--bundle models/products]``.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import Metrics, load_bundle
from app.bundle_write import write_bundle
from app.metrics import EvalReport, wilson_interval
from training.emoji.card import rewrite_bundle
from training.emoji.catalog import PROJECT_ROOT, STYLES
from training.emoji.products_eval import evaluate
from training.serving_eval import SERVING_PATH, evaluate_bundle, official_test_split

SECTION = "## Input policy: trim and centre"


def _fmnist(bundle_dir: Path, untrimmed_dir: Path) -> tuple[Any, Any, float]:
    """Test and inverted-test reports with the policy, and the share of test images whose
    top-1 is the same with and without it."""
    bundle = load_bundle(bundle_dir)
    split = official_test_split(bundle.metadata)
    images, y = split.x_test, split.y_test
    plain = evaluate_bundle(bundle, images, y)
    inverted = evaluate_bundle(bundle, (255 - images).astype(np.uint8), y)
    before = evaluate_bundle(load_bundle(untrimmed_dir), images, y)
    same = float(np.mean(plain.probs.argmax(1) == before.probs.argmax(1)))
    return plain.report, inverted.report, same


def _card_section(
    res: dict[str, Any], plain: EvalReport, inverted: EvalReport, before: float
) -> str:
    """The card's section from what was measured: `res` (products_eval.evaluate), the
    Fashion-MNIST test reports with the policy, and the accuracy recorded without it."""
    pols = res["policies"]
    emoji = res["emoji"]["per_style"]
    per_style = (
        f"{next(iter(emoji.values()))} emoji" if len(set(emoji.values())) == 1 else "the emoji"
    )
    lines = [
        SECTION,
        "",
        "`input.trim: true`: before resizing, the server crops a picture on a uniform background "
        "to the object and centres it in a square (app/trim.py), as Fashion-MNIST's product "
        "photos were prepared. Pictures without a uniform border (scenes) are left as they are.",
        "",
        f"- Fashion-MNIST official test (n={plain.n_samples:,}), serving path with the policy: "
        f"**{100 * plain.accuracy:.2f}%** (inverted, n={inverted.n_samples:,}: "
        f"{100 * inverted.accuracy:.2f}%); without it: {100 * before:.2f}%.",
        f"- Emoji clothing drawings (never trained on; {per_style} mapped to Fashion-MNIST "
        "classes per style; top-1 correct / n):",
        "",
        "| style | drawing as is | drawing, trim | product shot as is | product shot, trim |",
        "|---|---|---|---|---|",
    ]
    keys = ["drawing/as_is", "drawing/trim", "product_shot/as_is", "product_shot/trim"]
    for style in STYLES:
        cells = [pols[k]["per_style"][style] for k in keys]
        lines.append(f"| {style} | " + " | ".join(f"{c['k']}/{c['n']}" for c in cells) + " |")
    pooled = [pols[k]["pooled"] for k in keys]
    lines.append(
        "| pooled (Wilson 95%) | "
        + " | ".join(
            f"{c['k']}/{c['n']} = {100 * c['k'] / c['n']:.1f}% [{100 * c['low']:.1f}, "
            f"{100 * c['high']:.1f}]"
            for c in pooled
        )
        + " |"
    )
    lines += [
        "",
        "A product shot is the drawing at half size in the lower left of a white square (what an "
        "untrimmed, uncentred product picture looks like). Drawings that already fill their "
        "square gain nothing from the policy; line art and high-contrast styles stay weak: the "
        "model has never seen a drawing.",
        "",
    ]
    return "\n".join(lines)


def drawing_metrics(res: dict[str, Any]) -> list[Metrics]:
    """One metrics entry per style with the policy on, from products_eval.evaluate's result."""
    out = []
    for style in STYLES:
        c = res["policies"]["drawing/trim"]["per_style"][style]
        iv = wilson_interval(c["k"], c["n"])
        emoji = res["emoji"]["per_style"][style]
        out.append(
            Metrics(
                dataset=f"emoji clothing drawings, {style} ({emoji} emoji mapped to Fashion-MNIST classes)",
                split="never trained on",
                n_samples=c["n"],
                accuracy=c["k"] / c["n"],
                evaluated_with="onnxruntime",
                notes=f"{SERVING_PATH}, input.trim on; Wilson 95% [{iv.low:.3f}, {iv.high:.3f}]",
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "models" / "products")
    ap.add_argument("--min-accuracy", type=float, default=0.940)
    args = ap.parse_args(argv)
    bundle = load_bundle(args.bundle)
    meta = bundle.metadata
    before = next(
        m.accuracy for m in meta.metrics if m.split == "test" and m.evaluated_with == "onnxruntime"
    )
    staged_meta = meta.model_copy(update={"input": meta.input.model_copy(update={"trim": True})})
    with tempfile.TemporaryDirectory() as tmp:
        staged = write_bundle(
            Path(tmp) / meta.name,
            model_bytes=bundle.model_path.read_bytes(),
            metadata=staged_meta,
            labels=bundle.labels,
        )
        plain, inverted, same = _fmnist(staged.path, bundle.path)
        res = evaluate(staged.path)
    print(
        f"Fashion-MNIST test with trim: {plain.accuracy:.4%} (inverted {inverted.accuracy:.4%}); "
        f"top-1 unchanged by the policy on {same:.2%} of the test images"
    )
    if plain.accuracy < args.min_accuracy:
        print(f"refusing: below {args.min_accuracy:.2%}")
        return 1
    metrics: list[Metrics] = []
    for m in meta.metrics:
        if m.evaluated_with == "onnxruntime" and m.split in ("test", "test inverted"):
            rep = plain if m.split == "test" else inverted
            note = f"{SERVING_PATH}, input.trim on" + (f"; {m.notes}" if m.split != "test" else "")
            extra: dict[str, float] = {}
            if "keras_top1_agreement" in m.extra:
                # Keras agreed with the untrimmed serving path on every image (recorded at
                # export), so its agreement with the trimmed path is the policy's agreement.
                if m.extra["keras_top1_agreement"] != 1.0:
                    raise ValueError("recorded Keras agreement is not 1.0: re-measure with Keras")
                extra["keras_top1_agreement"] = same
                note += "; Keras agreement derived: untrimmed path = Keras on all images"
            metrics.append(rep.to_metrics(m.dataset, m.split, "onnxruntime", notes=note, **extra))
        else:
            metrics.append(m)
    metrics += drawing_metrics(res)
    new_meta = staged_meta.model_copy(update={"metrics": metrics})
    rewrite_bundle(bundle, new_meta, SECTION, _card_section(res, plain, inverted, before))
    print(f"wrote {bundle.path}: input.trim = true")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
