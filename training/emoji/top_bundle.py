"""`santa` v2 from top_ship's run directory: figures, decision rule, served graph, bundle.

Reads the 7 fold files and the final model (training.emoji.top_ship), summarises the folds
(per style at its validation threshold; recall at 1% FPR with each style's own cut and with
one cut over the pooled scores), applies the ship rule, then composes the served graph
(training.emoji.top_graph), checks parity against Keras and writes the bundle with
app.bundle_write plus the fold file the CI check re-scores (top_graph.TOP_FOLDS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.bundle import BundleMetadata, Outputs, Provenance, utc_now
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Section, Table, render_card
from app.metrics import calibrate_threshold
from training.emoji.card import HEADER, _frac, _row, limitations, note_sections, trained_on
from training.emoji.catalog import LABELS_SOURCE, PROJECT_ROOT, STYLES
from training.emoji.config import CardNote
from training.emoji.loso import TASKS, interval, summarise
from training.emoji.top_graph import TOP_FOLDS, fold_deltas, served_graph
from training.emoji.top_report import print_summary
from training.emoji.top_ship import fold_path, load_saved, run_fixed_epoch

logger = logging.getLogger(__name__)

GOAL = 0.85  # issue 14: recall at 1% FPR on held-out drawing styles
V1_PER_STYLE_AT_1PCT = 93  # santa v1: each held-out style's own 1% FPR cut, summed (of 111)
V1_POOLED_AT_1PCT = 89  # santa v1: one cut over the pooled held-out scores (of 111)
V1_SANTAS = 111
LOSO = "leave-one-style-out"
RULE = "max_f1"  # the shipped threshold's rule, as v1: on the pooled held-out scores


def _v1_config() -> Any:
    """santa-emoji.yaml (v1's recipe): its card notes (the lecture's route) stay on the card."""
    from training.emoji.config import EmojiHeadConfig
    from training.recipes import load_config

    return load_config(PROJECT_ROOT / "training" / "configs" / "santa-emoji.yaml", EmojiHeadConfig)


def summarise_folds(run_dir: Path) -> dict[str, Any]:
    """Per style (fine-tuned at the santa-chosen epoch, or the run's fixed one, and frozen =
    epoch 0) and pooled."""
    fixed = run_fixed_epoch(run_dir)
    folds: dict[str, Any] = {}
    acc: dict[str, list[list[Any]]] = {"finetuned": [[], [], []], "frozen": [[], [], []]}
    for style in STYLES:
        arrays, info = load_saved(fold_path(run_dir, style))
        e = int(info["santa"]["epoch"])
        if fixed is not None and e != fixed:
            raise ValueError(f"{run_dir} is a fixed-epoch-{fixed} run but {style} is epoch {e}")
        y = arrays["santa_y"]
        f: dict[str, Any] = {"epoch": e, "validation_style": info["validation_style"]}
        for kind, k in (("finetuned", e), ("frozen", 0)):
            thr = float(info["santa"][f"threshold{k}"])
            s = arrays[f"santa_scores{k}"]
            f[kind] = {**summarise(s, y, thr), "threshold": thr}
            for a, v in zip(acc[kind], (s, y, np.full(len(y), thr)), strict=True):
                a.append(v)
        folds[style] = f
    pooled: dict[str, Any] = {}
    for kind, (s, y, t) in acc.items():
        sc, yy = np.concatenate(s), np.concatenate(y)
        pooled[kind] = summarise(sc, yy, np.concatenate(t))
        k = sum(folds[st][kind]["recall_at_1pct_fpr"]["k"] for st in STYLES)
        pooled[kind]["per_style_cuts"] = interval(k, int((yy == 1).sum()))
        pooled[kind]["scores"], pooled[kind]["y"] = sc, yy
    return {"folds": folds, "pooled": pooled, "fixed_epoch": fixed}


def decide(summary: dict[str, Any]) -> tuple[bool, str]:
    """Ship when recall at 1% FPR, each held-out style cut at its own 1% (what a check on a new
    source of drawings measures), reaches the goal and beats v1's. The pooled one cut (how well
    the 7 fold models' score scales agree) is printed beside it; until 2026-12-02 it also had
    to reach v1's 89 (docs/drawings.md says why that condition was dropped)."""
    p = summary["pooled"]["finetuned"]
    per, one = p["per_style_cuts"], p["recall_at_1pct_fpr"]
    ok = per["estimate"] >= GOAL and per["estimate"] > V1_PER_STYLE_AT_1PCT / V1_SANTAS
    why = (
        f"per-style cuts summed {_frac(per)} (goal >= {GOAL}, v1: {V1_PER_STYLE_AT_1PCT}/"
        f"{V1_SANTAS}); pooled one cut {_frac(one)} (v1: {V1_POOLED_AT_1PCT}/{V1_SANTAS}, "
        f"reported): {'ship' if ok else 'do not ship'}"
    )
    return ok, why


def parity(model_bytes: bytes, final: dict[str, Any], meta: BundleMetadata) -> dict[str, float]:
    """Composed ONNX vs Keras: on cached (float16) cut tensors through the cut subgraph, and
    end to end on rendered pictures through the server's runtime (Keras fed the float32 cut
    tensors of the same pictures from the imagenet graph)."""
    import onnxruntime as ort

    from training.emoji.catalog import data_root, load_catalog
    from training.emoji.render import base_array
    from training.emoji.top_cache import CUT, CutBackbone, cut_features
    from training.emoji.top_graph import cut_subgraph
    from training.emoji.top_ship import keras_santa_scores
    from training.serving_eval import open_model

    cs = cut_features("twemoji", "base")
    cat = {str(p.path.relative_to(data_root())): p for p in load_catalog(styles=["twemoji"])}
    santas = [i for i, r in enumerate(cs.paths) if cat[r].is_santa]
    rows = np.r_[np.arange(0, len(cs.paths), 15), santas]
    cut = cs.cut[rows]
    sub = ort.InferenceSession(cut_subgraph(model_bytes), providers=["CPUExecutionProvider"])
    (p_sub,) = sub.run(["probs"], {CUT: cut.astype(np.float32).transpose(0, 3, 1, 2)})
    d_cut = float(np.abs(p_sub[:, 1] - keras_santa_scores(final, cut)).max())
    pics = [p for p in load_catalog(styles=list(STYLES)) if p.is_santa][::6]
    two = ("noto", "openmoji-black")
    pics += [p for p in load_catalog(styles=list(two)) if p.style in two][::400]
    x = np.stack([base_array(p, 224) for p in pics]).astype(np.float32)
    served = open_model(model_bytes, metadata=meta, labels=TASKS["santa"].labels)
    p_full = served.run(x).probs[:, 1]
    (exact,) = CutBackbone().session.run([CUT], {"image": x})
    d_full = float(np.abs(p_full - keras_santa_scores(final, exact.transpose(0, 2, 3, 1))).max())
    out = {
        "cut_rows": len(rows),
        "cut_max_abs": d_cut,
        "pictures": len(pics),
        "full_max_abs": d_full,
    }
    print(f"parity: cut subgraph vs Keras on {len(rows)} cached twemoji cut tensors: max |dP| "
          f"{d_cut:.2e}; served graph (onnxruntime) vs Keras on {len(pics)} rendered pictures: "
          f"max |dP| {d_full:.2e}")  # fmt: skip
    return out


def save_top_folds(
    path: Path, run_dir: Path, summary: dict[str, Any], final: dict[str, Any]
) -> None:
    """The fold models for the CI check: head, threshold, held-out counts, and the top as
    float16 differences from the imagenet graph (none for a fold whose chosen epoch is 0)."""
    import onnx

    from app.bundle import load_bundle
    from training.emoji.embed import BACKBONE
    from training.emoji.top_graph import onnx_initializers

    bb = load_bundle(BACKBONE)
    imagenet = onnx.load(str(bb.model_path))
    names = sorted(onnx_initializers(imagenet, final))
    arrays: dict[str, Any] = {}
    cols: dict[str, list[Any]] = {
        k: [] for k in ("w", "b", "threshold", "epoch", "tp", "fn", "fp", "tn")
    }
    for i, style in enumerate(STYLES):
        a, _ = load_saved(fold_path(run_dir, style))
        f = summary["folds"][style]
        if f["epoch"] > 0:
            deltas = fold_deltas(imagenet, a)
            arrays.update({f"d{i}_{k}": deltas[n] for k, n in enumerate(names)})
        cols["w"].append(np.asarray(a["head_w"], np.float32))
        cols["b"].append(float(a["head_b"]))
        cols["epoch"].append(f["epoch"])
        m = f["finetuned"]
        cols["threshold"].append(m["threshold"])
        for k in ("tp", "fn", "fp", "tn"):
            cols[k].append(m[k])
    np.savez_compressed(
        path,
        task=np.asarray("santa"),
        backbone_sha256=np.asarray(bb.metadata.artifact.sha256),
        styles=np.asarray(list(STYLES)),
        names=np.asarray(names),
        **{k: np.asarray(v) for k, v in cols.items()},
        **arrays,
    )
    logger.info("%s: %d bytes", path, path.stat().st_size)


def fixed_epoch(summary: dict[str, Any]) -> int | None:
    """The epoch every fold model was taken at (top_ship --fixed-epoch), else None."""
    fixed: int | None = summary.get("fixed_epoch")
    return fixed


def _epoch_text(summary: dict[str, Any], final_epochs: int) -> tuple[str, str]:
    """How the folds' epoch was set, and how the served model's epoch count was."""
    fixed = fixed_epoch(summary)
    if fixed is None:
        epochs = ", ".join(f"{s} {f['epoch']}" for s, f in summary["folds"].items())
        return (
            "the next style validates: it chooses the epoch (0 = the head on the frozen "
            f"backbone) and the threshold (max F1). Chosen epochs: {epochs}.",
            f"for {final_epochs} epochs (the median of the folds' chosen epochs, a rule fixed "
            "before they ran)",
        )
    return (
        f"every fold model is taken at epoch {fixed}, the served model's procedure; the next "
        "style validates: it chooses the threshold (max F1) at that epoch.",
        f"for {final_epochs} epochs, fixed",
    )


def _previous_text(prev: dict[str, Any], now: dict[str, Any]) -> str:
    """The first estimate beside this one (a run whose folds chose their own epochs)."""
    a, b = prev["pooled"]["finetuned"], now["pooled"]["finetuned"]
    epochs = ", ".join(str(f["epoch"]) for f in prev["folds"].values())
    return (
        "This is the second estimate. The first took each fold model at the epoch its "
        f"validation style chose ({epochs}), a different procedure from the served model's "
        f"fixed epochs, and its fold models' score scales disagreed: per-style cuts "
        f"{_frac(a['per_style_cuts'])}, one pooled cut {_frac(a['recall_at_1pct_fpr'])}, "
        f"which failed the ship rule (pooled one cut >= v1's {V1_POOLED_AT_1PCT}). This one: "
        f"per-style cuts {_frac(b['per_style_cuts'])}, one pooled cut "
        f"{_frac(b['recall_at_1pct_fpr'])}. A second look after a failed rule is weaker "
        "evidence than a first; both are reported."
    )


def _sections(
    summary: dict[str, Any],
    threshold: float,
    final_info: dict[str, Any],
    previous: dict[str, Any] | None = None,
) -> tuple[Section, ...]:
    folds, p = summary["folds"], summary["pooled"]["finetuned"]
    rows = [_row(s, folds[s]["finetuned"], folds[s]["finetuned"]["threshold"]) for s in STYLES]
    rows.append(_row("pooled (7 fold models)", p, None))
    rows.append(_row("pooled, at the shipped threshold", summary["at_shipped"], threshold))
    fold_epochs, final_epochs = _epoch_text(summary, int(final_info["settings"]["epochs"]))
    v1 = V1_POOLED_AT_1PCT
    return (
        Section("What it was trained on", paragraphs=(trained_on(TASKS["santa"]),)),
        Section(
            "Leave-one-style-out evaluation (drawings)",
            paragraphs=(
                "Seven fold models, one per held-out style: the top of the backbone (block15 and "
                "the head conv) and a logistic head fine-tuned on five styles (Adam 2e-4, every "
                "Santa plus 3,000 freshly drawn negatives per epoch, pictures as drawn plus one "
                f"augmented view, seed 0); {fold_epochs} The held-out style "
                "is scored once. Scores are computed in Keras on "
                "float16 cut tensors; the CI check (`scripts/eval-bundles`) re-scores every "
                "fold model through the served graph with that fold's weights swapped in.",
                "Recall at 1% FPR, two ways: each held-out style with its own cut at 1% false "
                f"positives, summed over the styles: {_frac(p['per_style_cuts'])}; one cut over "
                f"the scores of all 7 fold models pooled: {_frac(p['recall_at_1pct_fpr'])} "
                f"(v1: {V1_PER_STYLE_AT_1PCT}/{V1_SANTAS} and {v1}/{V1_SANTAS}). The first is "
                "the headline and the ship rule: an independent check measures this one served "
                "model on one source of drawings it never saw, cutting on that source's "
                "negatives, i.e. one held-out style with its own cut. The second measures how "
                "well the fold models' score scales agree across styles, that is how well one "
                "threshold travels to a new style: where it is below v1's, the decision "
                "(`is_positive`) suits some styles better than others. On a new source of "
                "drawings, choose the threshold on a few labelled pictures of it (every response "
                "carries P(santa)), or teach your own model.",
                f"The served model is trained on all seven styles {final_epochs}; "
                f"its threshold {threshold:.4f} was chosen by the rule {RULE} on the pooled "
                "held-out scores of the fold models (as v1), so the last row of the table is "
                "optimistic. The served model itself was never scored on a style it did not "
                "train on: every figure here is from the fold models.",
                *((_previous_text(previous, summary),) if previous else ()),
            ),
            tables=(Table(HEADER, tuple(rows)),),
        ),
    )


def write(
    run_dir: Path,
    out: Path,
    candidate: bool = False,
    previous_run: Path | None = None,
    card_notes: Sequence[CardNote] = (),
) -> Path | None:
    """Summarise, decide, and (if the rule says ship) write models/santa v2. `candidate`:
    write it whatever the rule says, only outside the project's models/ (to check the
    composition, the card and the CI check on a model that is not shipped). `previous_run`:
    an earlier estimate of the same model, printed and named on the card beside this one.
    `card_notes`: extra card sections (the recipe config's), after v1's.
    Returns the bundle written, or None when the rule said no."""
    if candidate and out.resolve() == (PROJECT_ROOT / "models").resolve():
        raise ValueError("a candidate is never written into models/: give another --out")
    import json

    from app.bundle import load_bundle
    from training.emoji.build import DATASET, _library_versions, _metric  # imports TensorFlow
    from training.emoji.embed import BACKBONE
    from training.export import git_commit, hardware

    previous = None
    if previous_run is not None:
        previous = summarise_folds(previous_run)
        print(f"previous estimate ({previous_run}):")
        print_summary(previous)
        print(f"\nthis estimate ({run_dir}):")
    summary = summarise_folds(run_dir)
    p = summary["pooled"]["finetuned"]
    cal = calibrate_threshold(p["scores"], p["y"] == 1, RULE)
    thr = float(cal.threshold)
    summary["at_shipped"] = summarise(p["scores"], p["y"], thr)
    print_summary(summary, thr)
    ok, why = decide(summary)
    print(why)
    keep = {k: v for k, v in summary.items() if k != "pooled"}
    keep["pooled"] = {
        k: {a: b for a, b in v.items() if a not in ("scores", "y")}
        for k, v in summary["pooled"].items()
    }
    (run_dir / "summary.json").write_text(
        json.dumps({**keep, "decision": why, "threshold": thr}, indent=1, default=str)
    )
    if not ok and not candidate:
        return None
    t0 = time.perf_counter()
    final, finfo = load_saved(run_dir / "final.npz")
    base = load_bundle(BACKBONE)
    model_bytes, values = served_graph(base.model_path, final)
    task = TASKS["santa"]
    pos = task.labels[1]
    fixed = fixed_epoch(summary)
    chosen = "epoch and threshold" if fixed is None else f"epoch {fixed} fixed, threshold"
    pooled_note = (
        f"each style scored by a fold model (top + head fine-tuned on 5 other styles, {chosen} "
        "chosen on the 6th); precision/recall at each fold's validation threshold; "
        f"the shipped threshold was chosen by the same rule ({RULE}) on these pooled held-out "
        "scores; recall_at_1pct_fpr: one cut over the pooled scores; "
        "recall_at_1pct_fpr_per_style_cuts: each style's own cut, summed"
    )
    metrics = [
        _metric(DATASET, f"{LOSO} (pooled over 7 held-out styles)", p, thr, pos, pooled_note)
    ]
    metrics[0].extra["recall_at_1pct_fpr_per_style_cuts"] = float(p["per_style_cuts"]["estimate"])
    for style, f in summary["folds"].items():
        fig = f["finetuned"]
        note = (
            f"fold model trained on 5 other styles (validation {f['validation_style']}, epoch "
            f"{f['epoch']}); threshold {fig['threshold']:.4f} from validation"
        )
        metrics.append(
            _metric(
                f"emoji art, {style}", f"held-out style {style}", fig, fig["threshold"], pos, note
            )
        )
    at_note = "the shipped threshold on the pooled held-out scores it was chosen on (optimistic)"
    # last: metrics[1:8] are the held-out styles
    metrics.append(
        _metric(
            DATASET,
            f"{LOSO} (pooled), at the shipped threshold",
            summary["at_shipped"],
            thr,
            pos,
            at_note,
        )
    )
    metrics = [m.model_copy(update={"evaluated_with": "keras"}) for m in metrics]
    bm = base.metadata
    n_top = int(sum(v.size for v in values.values()))
    meta = BundleMetadata(
        name="santa",
        version="2",
        created_at=utc_now(),
        description="Santa / not-Santa on drawings: EfficientNet-Lite0 (ImageNet weights) with its last block and head conv fine-tuned, and a logistic-regression head, on openly licensed emoji art (Santa, Mrs and Mx Claus in every skin tone vs every other emoji). Not trained or measured on photographs.",
        input=bm.input,
        outputs=Outputs(embedding=bm.outputs.embedding),
        num_classes=2,
        metrics=metrics,
        provenance=Provenance(
            data_source=f"{DATASET}; labels {LABELS_SOURCE}",
            data_version="emoji-datasource 16.0.0, openmoji 17.0.0, fluentui-emoji 1.3.0",
            architecture=f"efficientnet_lite0 (models/{base.name} graph; block15 + head conv, {n_top:,} weights, fine-tuned) + logistic-regression head",
            pretrained_weights=bm.provenance.pretrained_weights,
            weights_license=bm.provenance.weights_license,
            epochs=int(finfo["settings"]["epochs"]),
            seed=int(finfo["settings"]["seed"]),
            training_time_s=round(float(finfo["seconds"]), 1),
            hardware=hardware(),
            library_versions=_library_versions(),
            git_commit=git_commit(),
            opset=bm.provenance.opset,
        ),
        artifact=bm.artifact,  # replaced by write_bundle
    )
    par = parity(model_bytes, final, meta)
    if max(par["cut_max_abs"], par["full_max_abs"]) > 1e-4:
        raise RuntimeError(f"served graph differs from Keras: {par}")
    notes = (f"training.emoji.top_ship, settings {finfo['settings']}; composed onto {base.name} sha256 "
             f"{base.metadata.artifact.sha256[:12]}; parity vs Keras: max |dP| {par['cut_max_abs']:.1e} "
             f"on {par['cut_rows']} cached cut tensors, {par['full_max_abs']:.1e} end to end on "
             f"{par['pictures']} rendered pictures")  # fmt: skip
    meta = meta.model_copy(
        update={"provenance": meta.provenance.model_copy(update={"notes": notes})}
    )
    card = render_card(
        CardData(
            metadata=meta,
            labels=task.labels,
            sections=_sections(summary, thr, finfo, previous)
            + note_sections(_v1_config().card_notes)
            + note_sections(card_notes),
            limitations=(
                *limitations(task),
                "Every held-out figure is from the 7 fold models; the served model (all 7 styles) was never scored on an unseen style.",
            ),
            licences=(
                *tuple(Licence(f"emoji art, {s}", STYLES[s][1]) for s in STYLES),
                Licence("labels", LABELS_SOURCE),
                Licence("backbone weights", str(bm.provenance.weights_license)),
            ),
            reproduce="scripts/fetch-data && python -m training.emoji.top_ship"
            + ("" if fixed is None else f" --fixed-epoch {fixed}"),
        )
    )
    bundle = write_bundle(
        out / "santa", model_bytes=model_bytes, metadata=meta, labels=task.labels, model_card=card
    )
    save_top_folds(bundle.path / TOP_FOLDS, run_dir, summary, final)
    logger.info("wrote %s in %.0f s", bundle.path, time.perf_counter() - t0)
    return bundle.path
