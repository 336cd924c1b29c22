"""Ship `products` fine-tuned on Fashion-MNIST plus the emoji clothing drawings of every style.

Takes the settings and the per-fold results of a leave-one-style-out run of
training.emoji.products_finetune (its --json), trains one more model with those settings on all
seven styles (from the weights of the bundle in --bundle, as every fold did), wraps it with the
in-graph mirror averaging (training.tta), exports it through training.export (parity with Keras
checked on real test images), re-measures Fashion-MNIST test (original and inverted, n=10,000)
through the serving path and writes models/products (same input spec: invert auto, trim; same
labels; outputs probs + embedding) with the measurements and a card, only when the test accuracy
is at least --min-accuracy. The fold models are separate models; their held-out numbers are the
generalisation figures, the shipped model saw every style.
CLI: ``python -m training.emoji.products_ship --loso loso.json [--bundle START] [--out models]``
(START: the starting bundle; models/products v2 was made from v1, sha256 61288c3ff119, which
lives in git history). Without --loso it only trains and stages.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import Bundle, BundleMetadata, Metrics, load_bundle
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Section, Table, pct, render_card
from app.metrics import EvalReport
from training.card import confusion_table, per_class_table
from training.emoji.catalog import LABELS_SOURCE, PROJECT_ROOT, STYLES
from training.emoji.products_finetune import (
    FineTune,
    build_model,
    drawing_views,
    fmnist,
    run_fold,
    tta_probs,
)
from training.emoji.products_views import EVAL_VIEWS
from training.serving_eval import SERVING_PATH, evaluate_bundle, official_test_split

HELD_OUT = "held-out style (leave-one-style-out fold model, not the shipped weights)"


def _iv(r: dict[str, Any]) -> str:
    return f"{r['k']}/{r['n']} = {100 * r['k'] / r['n']:.1f}% [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def loso_metrics(loso: dict[str, Any]) -> list[Metrics]:
    """Each fold's held-out style, as drawn (the metric the issue names), and the pooled figure."""
    out = []
    rows = [(f["held_out"], f["drawing"]) for f in loso["folds"]]
    for style, r in [*rows, ("pooled over 7 styles", loso["pooled"]["drawing"])]:
        out.append(
            Metrics(
                dataset=f"emoji clothing drawings, {style} (emoji mapped to Fashion-MNIST classes)",
                split=HELD_OUT,
                n_samples=r["n"],
                accuracy=r["k"] / r["n"],
                evaluated_with="keras",
                notes=f"drawing as distributed, prepared by app.imaging.prepare (trim on), "
                f"mirror-averaged like the graph; Wilson 95% [{r['low']:.3f}, {r['high']:.3f}]",
            )
        )
    return out


def card(
    meta: BundleMetadata,
    labels: tuple[str, ...],
    loso: dict[str, Any],
    ft: FineTune,
    test: EvalReport,
    inverted: float,
    final: dict[str, Any],
    start: str,
    selection: str | None = None,
) -> str:
    fold_rows = tuple(
        (
            f["held_out"],
            *(f"{f[k]['k']}/{f[k]['n']}" for k in EVAL_VIEWS),
            pct(f["fmnist_val"]),
            pct(f["fmnist_test"]),
        )
        for f in loso["folds"]
    )
    pooled = loso["pooled"]
    fold_rows += (("pooled (Wilson 95%)", *(_iv(pooled[k]) for k in EVAL_VIEWS), "", ""),)
    per_style = "/".join(sorted({str(f["drawing"]["n"]) for f in loso["folds"]}))
    n_dr = round(ft.fm_per_epoch * ft.drawing_share / (1 - ft.drawing_share))
    views = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in ft.train_views().items())
    data = Section(
        "Data",
        bullets=(
            "Fashion-MNIST (Zalando article photos, MIT; Debian dataset-fashion-mnist): 54,000 "
            "training images; the 6,000-image validation split and the official 10,000-image "
            "test split were never trained on.",
            "Emoji clothing drawings mapped to Fashion-MNIST classes (e.g. t-shirt -> "
            f"T-shirt/top, jeans -> Trouser, handbag/purse -> Bag), {per_style} per style, "
            f"{len(STYLES)} styles: "
            + "; ".join(f"{s}: {lic}" for s, (_, lic) in STYLES.items())
            + f". Labels: {LABELS_SOURCE}. Each drawing is used in {views} views "
            "(training.emoji.products_views), each sent through the serving path's "
            "`app.imaging.prepare`.",
            "Input policy (unchanged from the starting bundle): `input.trim` "
            f"{str(meta.input.trim).lower()}: the server crops a picture on a uniform "
            "background to the object and centres it (app/trim.py), as Fashion-MNIST's photos "
            f"were prepared; `input.invert` {meta.input.invert}.",
        ),
    )
    train = Section(
        "Training",
        bullets=(
            f"Fine-tuned from {start} (the same `modern_cnn`; its BatchNorm folded into the "
            "convolutions by the ONNX export, kept folded and frozen).",
            f"{ft.epochs} epoch(s), each {ft.fm_per_epoch:,} Fashion-MNIST training images plus "
            f"{n_dr:,} drawing views ({ft.drawing_share:.0%}), random mirroring; AdamW lr "
            f"{ft.learning_rate:g} (constant), weight decay 0.01, label smoothing "
            f"{ft.label_smoothing}, batch {ft.batch_size}, seed {ft.seed}"
            + (
                f"; Fashion-MNIST targets mix the label with the starting model's softmax "
                f"({ft.distill:.0%} teacher)"
                if ft.distill
                else ""
            )
            + (f"; first {ft.freeze_stages} conv stage(s) frozen" if ft.freeze_stages else "")
            + ".",
            selection
            or "Settings chosen on Fashion-MNIST validation accuracy and an inner split of the "
            "drawing styles (docs/drawings.md), never on a held-out style's score or on the "
            "Fashion-MNIST test split.",
            "Test-time augmentation in the graph: prediction and embedding are the mean over the "
            "image and its mirror image.",
            f"Training time: {final['seconds']:.0f} s on 2 shared, niced CPUs.",
        ),
    )
    evaluation = Section(
        f"Evaluation (Fashion-MNIST, test split, n = {test.n_samples:,})",
        paragraphs=(f"Through the serving path: {SERVING_PATH}, `input.trim` on.",),
        tables=(
            Table(
                ("metric", "value"),
                (
                    ("accuracy", pct(test.accuracy)),
                    ("top-5 accuracy", pct(test.top_k_accuracy)),
                    (
                        "macro precision / recall / F1",
                        f"{pct(test.macro_precision)} / {pct(test.macro_recall)} / "
                        f"{pct(test.macro_f1)}",
                    ),
                    ("the same images inverted (`invert: auto`)", pct(inverted)),
                    (
                        "serving path = Keras top-1",
                        f"{pct(final.get('keras_top1_agreement'))} of {test.n_samples:,} images",
                    ),
                    (
                        "validation split (n=6,000, Keras, mirror-averaged)",
                        pct(final["fmnist_val"]),
                    ),
                ),
            ),
            per_class_table(test),
            confusion_table(test, labels),
        ),
    )
    drawings = Section(
        "Drawings never trained on (leave one style out)",
        paragraphs=(
            "Seven separate fold models, each trained with the settings above on six styles "
            "and scored once on the seventh (14 drawings per style; as drawn and as a 'product "
            "shot': the drawing at half size in the lower left of a white square). The shipped "
            "model trained on all seven styles, so its own score on them is not a "
            "generalisation figure and is not reported. Fold models' Fashion-MNIST accuracies "
            "are Keras, mirror-averaged, on the serving path's prepared images.",
            "Command: see Reproduce below (settings in FineTune, "
            f"training/emoji/products_finetune.py); START is a folder holding {start}, the "
            "starting bundle, from the git history of models/products.",
        ),
        tables=(
            Table(
                ("held-out style", "as drawn", "product shot", "F-MNIST val", "F-MNIST test"),
                fold_rows,
            ),
        ),
    )
    data_card = CardData(
        meta,
        labels=labels,
        sections=(data, train, evaluation, drawings),
        limitations=(
            "Input is 28x28 gray: pictures are trimmed, letterboxed and shrunk to 28x28, so fine "
            "detail is lost.",
            "Trained on Fashion-MNIST (one centred article, light on black) and on 98 emoji "
            "drawings (7 styles x 14); photos of worn clothes, several items or busy "
            "backgrounds are outside what it has seen. Held-out drawing figures rest on 14 "
            "drawings per style: see the intervals.",
            "Shirt vs T-shirt/top vs pullover vs coat is the weakest distinction.",
        ),
        licences=(
            *(Licence(f"emoji drawings, {s}", lic) for s, (_, lic) in STYLES.items()),
            Licence("Fashion-MNIST", "MIT"),
        ),
        reproduce=reproduce_line(ft, meta.version),
    )
    return render_card(data_card)


def reproduce_line(ft: FineTune, version: str) -> str:
    """The commands that rebuild this bundle from START: the settings it was trained with that
    differ from FineTune's defaults (round 31: the line named none, so it rebuilt v2's
    settings, not v3's), and the step that declares the backdrop policy."""
    default = asdict(FineTune())
    changed = [f"{k}={v}" for k, v in asdict(ft).items() if v != default[k]]
    sets = f" --set {' '.join(changed)}" if changed else ""
    return (
        f"python -m training.emoji.products_finetune --bundle START{sets} --json loso.json && "
        "python -m training.emoji.products_ship --bundle START --loso loso.json "
        f"--version {version} && python -m training.emoji.products_backdrop --loso loso.json "
        "--write"
    )


def stage(
    start: Bundle,
    ft: FineTune,
    fm: dict[str, Any],
    directory: Path,
    cache: Path,
    start_text: str,
    version: str | None = None,
) -> tuple[Bundle, dict[str, Any]]:
    """Train on all styles and export (parity-checked) into `directory`, or reuse what an
    earlier call with the same settings and starting bundle left there."""
    record = directory / "final.json"
    key = {"settings": asdict(ft), "start_sha256": start.metadata.artifact.sha256}
    if record.is_file() and json.loads(record.read_text())["key"] == key:
        return load_bundle(directory / start.name), json.loads(record.read_text())["final"]
    from training.export import export_bundle
    from training.tta import with_flip_tta

    meta = start.metadata
    dr = drawing_views(meta.input, cache, ft.seed, ft.train_views())
    t0 = time.perf_counter()
    models, final = run_fold(start, None, fm, dr, ft)
    (model,) = models  # main() refuses settings with several members
    if version is None:
        version = str(int(meta.version) + 1) if meta.version.isdigit() else meta.version + "-ft"
    provenance = {
        "data_source": "Fashion-MNIST: train 54000 / val 6000 (stratified) / test 10000; emoji "
        "clothing drawings, 7 styles x 14 (" + ", ".join(STYLES) + ")",
        "data_version": "Debian dataset-fashion-mnist; npm emoji packages as in "
        "training/emoji/catalog.py",
        "architecture": meta.provenance.architecture,
        "pretrained_weights": f"{start_text}, this project's Fashion-MNIST model",
        "weights_license": None,
        "epochs": ft.epochs,
        "seed": ft.seed,
        "training_time_s": round(time.perf_counter() - t0, 1),
        "notes": f"fine-tuned: {json.dumps(asdict(ft))}; leave-one-style-out folds are "
        "separate models",
    }
    staged, parity = export_bundle(
        with_flip_tta(model),
        out_dir=directory,
        name=meta.name,
        labels=start.labels,
        input_spec=meta.input,
        parity_inputs=fm["x_test"][:512],
        provenance=provenance,
        description=meta.description.replace("trained from scratch", "fine-tuned with drawings"),
        version=version,
    )
    final["parity"] = asdict(parity)
    record.write_text(json.dumps({"key": key, "final": final}, indent=2) + "\n")
    return staged, final


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loso", type=Path, help="products_finetune --json output (to write)")
    ap.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "models" / "products")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "models")
    ap.add_argument("--cache", type=Path, default=PROJECT_ROOT / "data" / "products-ft-cache")
    ap.add_argument("--min-accuracy", type=float, default=0.940)
    ap.add_argument(
        "--stage",
        type=Path,
        default=PROJECT_ROOT / "data" / "products-ft-cache" / "stage",
        help="the trained, exported model is kept here and reused while the settings match",
    )
    ap.add_argument(
        "--version", help="the new bundle's version (default: the starting bundle's plus one)"
    )
    ap.add_argument(
        "--selection",
        help="how the settings were chosen, for the card (default: the v2 protocol's sentence)",
    )
    args = ap.parse_args(argv)
    loso = json.loads(args.loso.read_text()) if args.loso else None
    if loso and sorted(f["held_out"] for f in loso["folds"]) != sorted(STYLES):
        raise SystemExit("the leave-one-style-out run must cover every style")
    ft = FineTune(**loso["settings"]) if loso else FineTune()
    if ft.members != 1:
        raise SystemExit(
            "products_ship exports one network; an ensemble of members was measured by "
            "products_finetune only (docs/drawings.md) and is not shipped"
        )
    start = load_bundle(args.bundle)
    meta = start.metadata
    start_text = f"`products` v{meta.version} (sha256 {meta.artifact.sha256[:12]})"
    fm = fmnist(start, args.cache)
    staged, final = stage(start, ft, fm, args.stage, args.cache, start_text, args.version)
    split = official_test_split(meta)
    served = evaluate_bundle(staged, split.x_test, split.y_test)
    test = served.report
    # The trained weights read back from the graph (BN stays folded, as trained) in Keras, on
    # the serving path's prepared images: the export's top-1 agreement on all 10,000.
    keras_top1 = tta_probs(build_model(staged), fm["x_test"]).argmax(1)
    agreement = float(np.mean(keras_top1 == served.probs.argmax(1)))
    inverted = evaluate_bundle(staged, (255 - split.x_test).astype(np.uint8), split.y_test)
    print(
        f"final model: {json.dumps(final)}; serving-path test {test.accuracy:.4f}, inverted "
        f"{inverted.report.accuracy:.4f} (n={test.n_samples}); Keras = serving top-1 {agreement:.4f}",
        flush=True,
    )
    if loso is None:
        print("no --loso: staged only, nothing written")
        return 0
    if test.accuracy < args.min_accuracy:
        print(f"refusing: Fashion-MNIST test below {args.min_accuracy:.2%}; nothing written")
        return 1
    note = f"{SERVING_PATH}, input.trim on"
    metrics = [
        test.to_metrics(
            "Fashion-MNIST",
            "test",
            "onnxruntime",
            notes=note + "; Keras agreement: the graph's weights read back into the Keras model",
            keras_top1_agreement=agreement,
        ),
        inverted.report.to_metrics(
            "Fashion-MNIST",
            "test inverted",
            "onnxruntime",
            notes=note + "; every test image inverted (255 - x) -> input.invert auto",
        ),
        Metrics(
            dataset="Fashion-MNIST",
            split="val",
            n_samples=len(fm["y_val"]),
            accuracy=final["fmnist_val"],
            evaluated_with="keras",
            notes="prepared by app.imaging.prepare, mirror-averaged",
        ),
        *loso_metrics(loso),
    ]
    new_meta = staged.metadata.model_copy(update={"metrics": metrics})
    final = {**final, "keras_top1_agreement": agreement}
    text = card(
        new_meta,
        start.labels,
        loso,
        ft,
        test,
        inverted.report.accuracy,
        final,
        start_text,
        args.selection,
    )
    out = write_bundle(
        args.out / meta.name,
        model_bytes=staged.model_path.read_bytes(),
        metadata=new_meta,
        labels=list(start.labels),
        model_card=text,
    )
    print(f"wrote {out.path} (version {new_meta.version})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
