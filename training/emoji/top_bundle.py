"""`santa` and `bird` from top_ship's run directories: decision, served graph, bundle (bird's
own rule, photo test and card text: training.emoji.top_bird).

santa v2 is one run directory; v3 is several (members: the same procedure with other seeds), scored
and served as the mean of their logits (training.emoji.top_members' rule, top_graph's shared
trunk). Reads the 7 fold files and the final model of each (training.emoji.top_ship),
summarises the folds and applies the ship rule (training.emoji.top_summary), then composes
the served graph (training.emoji.top_graph), checks parity against Keras
(training.emoji.top_parity) and writes the bundle with app.bundle_write, its card
(training.emoji.top_card) and the fold file the CI check re-scores (top_graph.TOP_FOLDS).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from app.bundle import BundleMetadata, Outputs, Provenance, utc_now
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Reference, render_card
from app.metrics import calibrate_threshold
from training.emoji.card import limitations, note_sections, reproduce
from training.emoji.catalog import LABELS_SOURCE, PROJECT_ROOT, STYLES
from training.emoji.config import CardNote
from training.emoji.loso import summarise
from training.emoji.tasks import TASKS
from training.emoji.top_card import epoch_text, members_text, santa_sections, v1_config
from training.emoji.top_graph import TOP_FOLDS, delta_key, fold_deltas, served_graph
from training.emoji.top_parity import parity
from training.emoji.top_report import print_summary
from training.emoji.top_ship import fold_path, load_saved
from training.emoji.top_summary import (
    POOLED_AT_FOLDS,
    RULE,
    SERVED_RULE_SPLIT,
    decide,
    fixed_epoch,
    members_of,
    served_rule_loso,
    summarise_folds,
)

logger = logging.getLogger(__name__)

LOSO = "leave-one-style-out"


def save_top_folds(
    path: Path,
    run_dirs: Sequence[Path],
    summary: dict[str, Any],
    finals: Sequence[dict[str, Any]],
    combine: bool = False,
) -> None:
    """The fold models for the CI check: heads, threshold, held-out counts, and each member's
    top as float16 differences from the imagenet graph (none for a fold whose chosen epoch is
    0). One member: santa v2's layout (w: styles x dim); K: w is styles x K x dim
    (top_graph.stored_members reads both). `combine` (bird): the served graph keeps the
    original top beside the members (their copies start at 1) and folds the threshold in."""
    import onnx

    from app.bundle import load_bundle
    from training.emoji.embed import BACKBONE
    from training.emoji.top_graph import onnx_initializers
    from training.emoji.top_ship import head_keys

    task = summary.get("task", "santa")
    kw, kb = head_keys(task)
    bb = load_bundle(BACKBONE)
    imagenet = onnx.load(str(bb.model_path))
    names = sorted(onnx_initializers(imagenet, finals[0]))
    k_members = len(run_dirs)
    arrays: dict[str, Any] = {}
    cols: dict[str, list[Any]] = {
        k: [] for k in ("w", "b", "threshold", "epoch", "tp", "fn", "fp", "tn")
    }
    for i, style in enumerate(STYLES):
        f = summary["folds"][style]
        ws, bs = [], []
        for m, d in enumerate(run_dirs):
            a, _ = load_saved(fold_path(d, style))
            if f["epoch"] > 0:
                deltas = fold_deltas(imagenet, a)
                arrays.update({delta_key(i, m, k, k_members): deltas[n]
                               for k, n in enumerate(names)})  # fmt: skip
            ws.append(np.asarray(a[kw], np.float32))
            bs.append(float(a[kb]))
        cols["w"].append(ws[0] if k_members == 1 else np.stack(ws))
        cols["b"].append(bs[0] if k_members == 1 else np.asarray(bs))
        cols["epoch"].append(f["epoch"])
        m_ = f["finetuned"]
        cols["threshold"].append(m_["threshold"])
        for k in ("tp", "fn", "fp", "tn"):
            cols[k].append(m_[k])
    if combine:  # the CI check sets each fold's threshold in the graph and decides at 0.5
        arrays["first_member"] = np.asarray(1)
        arrays["combine"] = np.asarray(True)
    payload: dict[str, Any] = {
        "task": np.asarray(task),
        "backbone_sha256": np.asarray(bb.metadata.artifact.sha256),
        "styles": np.asarray(list(STYLES)),
        "names": np.asarray(names),
        **{k: np.asarray(v) for k, v in cols.items()},
        **arrays,
    }
    np.savez_compressed(path, **payload)
    logger.info("%s: %d bytes", path, path.stat().st_size)


def write(
    run_dirs: Path | Sequence[Path],
    out: Path,
    candidate: bool = False,
    previous_run: Path | None = None,
    card_notes: Sequence[CardNote] = (),
    version: str = "2",
    summary_dir: Path | None = None,
    task: str = "santa",
    references: Sequence[Reference] = (),
    config_path: Path | None = None,
) -> Path | None:
    """Summarise, decide, and (if the rule says ship) write models/<task> (santa, or bird:
    training.emoji.top_bird). Several run directories: the members of one model (other
    seeds), averaged in logit space; the figures and `summary.json` (in `summary_dir`,
    default: the one run directory, else the members' parent) are the average's. `candidate`:
    write it whatever the rule says, only outside the project's models/ (to check the
    composition, the card and the CI check on a model that is not shipped). `previous_run`:
    an earlier estimate of the same model, printed and named on the card beside this one.
    `card_notes`: extra card sections (the recipe config's), after v1's (santa);
    `references`: figures measured elsewhere that the card quotes (the recipe config's).
    `config_path`: the recipe config that was run, named on the card's Reproduce line (None,
    as from the top_ship command line: training/configs/<task>-emoji-top.yaml).
    Returns the bundle written, or None when the rule said no."""
    if candidate and out.resolve() == (PROJECT_ROOT / "models").resolve():
        raise ValueError("a candidate is never written into models/: give another --out")
    import json

    from app.bundle import load_bundle
    from training.emoji import top_bird
    from training.emoji.build import DATASET, _library_versions, _metric  # imports TensorFlow
    from training.emoji.embed import BACKBONE
    from training.emoji.top_ship import head_keys
    from training.export import git_commit, hardware

    bird = task == "bird"
    dirs = members_of(run_dirs)
    summary_dir = summary_dir or (dirs[0] if len(dirs) == 1 else dirs[0].parent)
    previous = None
    if previous_run is not None:
        previous = summarise_folds(previous_run, task)
        print(f"previous estimate ({previous_run}):")
        print_summary(previous)
        print(f"\nthis estimate ({', '.join(map(str, dirs))}):")
    summary = summarise_folds(dirs, task)
    p = summary["pooled"]["finetuned"]
    rule: Literal["max_f1", "precision"] = top_bird.RULE if bird else RULE
    target = top_bird.TARGET if bird else None
    thr = float(calibrate_threshold(p["scores"], p["y"] == 1, rule, target).threshold)
    summary["at_shipped"] = summarise(p["scores"], p["y"], thr)
    summary["served_rule_loso"] = served_rule_loso(summary, rule, target)
    print_summary(summary, thr)
    ok, why = decide(summary)
    print(why)
    keep = {k: v for k, v in summary.items() if k != "pooled"}
    keep["pooled"] = {
        k: {a: b for a, b in v.items() if a not in ("scores", "y")}
        for k, v in summary["pooled"].items()
    }
    (summary_dir / "summary.json").write_text(
        json.dumps({**keep, "decision": why, "threshold": thr}, indent=1, default=str)
    )
    if not ok and not candidate:
        return None
    t0 = time.perf_counter()
    saved = [load_saved(d / "final.npz") for d in dirs]
    finals, finfo = [a for a, _ in saved], saved[0][1]
    seeds = [int(i["settings"]["seed"]) for _, i in saved]
    missing = [str(d) for d, f in zip(dirs, finals, strict=True) if head_keys(task)[0] not in f]
    if missing:  # runs from before 2026-12-02 19:00 kept santa's head only
        raise ValueError(f"no {task} head saved in {missing}: retrain them (top_ship)")
    if any({**i["settings"], "seed": 0} != {**finfo["settings"], "seed": 0} for _, i in saved):
        raise ValueError(f"members were trained with other settings: {[i for _, i in saved]}")
    base = load_bundle(BACKBONE)
    combine = thr if bird else None
    model_bytes, values = served_graph(base.model_path, finals, head_keys(task), combine)
    labels = TASKS[task].labels
    pos = labels[1]
    fixed = fixed_epoch(summary)
    chosen = "epoch and threshold" if fixed is None else f"epoch {fixed} fixed, threshold"
    by = "a fold model" if len(dirs) == 1 else f"the mean logit of {len(dirs)} fold models"
    pooled_note = (
        top_bird.pooled_note(by, thr)
        if bird
        else f"each style scored by {by} (top + head fine-tuned on 5 other styles, {chosen} "
        "chosen on the 6th); precision/recall at each fold's validation threshold; "
        f"the shipped threshold was chosen by the same rule ({RULE}) on these pooled held-out "
        "scores; recall_at_1pct_fpr: one cut over the pooled scores; "
        "recall_at_1pct_fpr_per_style_cuts: each style's own cut, summed"
    )
    served_thr = 0.5 if bird else thr  # bird: the head threshold is folded into the graph
    metrics = [_metric(DATASET, f"{LOSO} ({POOLED_AT_FOLDS})", p, served_thr, pos, pooled_note)]
    metrics[0].extra["recall_at_1pct_fpr_per_style_cuts"] = float(p["per_style_cuts"]["estimate"])
    for style, f in summary["folds"].items():
        fig = f["finetuned"]
        note = (
            f"{by} trained on 5 other styles (validation {f['validation_style']}, epoch "
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
    nested = summary["served_rule_loso"]
    t_range = f"{min(nested['thresholds'].values()):.4f}-{max(nested['thresholds'].values()):.4f}"
    nested_note = (
        f"the served threshold's rule ({rule}{'' if target is None else f' >= {target}'}) "
        "applied per held-out style to the other six styles' pooled fold scores (thresholds "
        f"{t_range}), never to the scores it was chosen on: how the served threshold does on "
        "a new style"
    )
    metrics.append(
        _metric(
            DATASET,
            f"{LOSO} (pooled), {SERVED_RULE_SPLIT} (per-style thresholds {t_range}; "
            "the served one shown)",
            nested,
            thr,
            pos,
            nested_note,
        )
    )
    metrics = [m.model_copy(update={"evaluated_with": "keras"}) for m in metrics]
    bm = base.metadata
    n_top = int(sum(v.size for v in values.values())) // len(dirs)
    tops = (
        "its last block and head conv fine-tuned, and a logistic-regression head"
        if len(dirs) == 1
        else f"{len(dirs)} fine-tunings of its last block and head conv (seeds "
        f"{', '.join(map(str, seeds))}), each with a logistic-regression head, logits averaged"
    )
    description = (
        top_bird.description(tops)
        if bird
        else f"Santa / not-Santa on drawings: EfficientNet-Lite0 (ImageNet weights) with {tops}, on openly licensed emoji art (Santa, Mrs and Mx Claus in every skin tone vs every other emoji). Not trained or measured on photographs."
    )
    meta = BundleMetadata(
        name=task,
        version=version,
        created_at=utc_now(),
        description=description,
        input=bm.input,
        outputs=Outputs(embedding=bm.outputs.embedding),
        num_classes=2,
        metrics=metrics,
        provenance=Provenance(
            data_source=f"{DATASET}; labels {LABELS_SOURCE}",
            data_version="emoji-datasource 16.0.0, openmoji 17.0.0, fluentui-emoji 1.3.0",
            architecture=f"efficientnet_lite0 (models/{base.name} graph; block15 + head conv, {n_top:,} weights, fine-tuned"
            + ("" if len(dirs) == 1 else f"; {len(dirs)} such tops on one trunk, logits averaged")
            + ("; the graph's own top kept for the ImageNet bird mass" if bird else "")
            + ") + logistic-regression head",
            pretrained_weights=bm.provenance.pretrained_weights,
            weights_license=bm.provenance.weights_license,
            epochs=int(finfo["settings"]["epochs"]),
            seed=int(finfo["settings"]["seed"]),
            training_time_s=round(sum(float(i["seconds"]) for _, i in saved), 1),
            hardware=hardware(),
            library_versions=_library_versions(),
            git_commit=git_commit(),
            opset=bm.provenance.opset,
        ),
        artifact=bm.artifact,  # replaced by write_bundle
    )
    photos = None
    if bird:  # the served graph on the real photos, through the server's path
        photos = top_bird.photo_test(model_bytes, meta)
        note = (
            f"lowest bird score {photos['lowest_bird']:.3f}, highest non-bird "
            f"{photos['highest_non_bird']:.3f}"
        )
        photo_metric = _metric(top_bird.PHOTOS, top_bird.PHOTO_SPLIT, photos, 0.5, pos, note)
        meta = meta.model_copy(update={"metrics": [*meta.metrics, photo_metric]})
        print(f"photos (served graph): {photos['tp']}/{photos['n_positive']} birds found, "
              f"{photos['fp']}/{photos['n'] - photos['n_positive']} non-birds flagged")  # fmt: skip
        if (photos["fn"] or photos["fp"]) and not candidate:  # a bird missed or a non-bird flagged
            print("the served model is wrong on a real photo: not written")
            return None
    par = parity(model_bytes, finals, meta, task, combine)
    if max(par["cut_max_abs"], par["full_max_abs"]) > 1e-4:
        raise RuntimeError(f"served graph differs from Keras: {par}")
    members = "" if len(dirs) == 1 else f" x {len(dirs)} members, seeds {seeds}"
    notes = (f"training.emoji.top_ship, settings {finfo['settings']}{members}; composed onto {base.name} sha256 "
             f"{base.metadata.artifact.sha256[:12]}; parity vs Keras: max |dP| {par['cut_max_abs']:.1e} "
             f"on {par['cut_rows']} cached cut tensors, {par['full_max_abs']:.1e} end to end on "
             f"{par['pictures']} rendered pictures; training time: the served model's "
             f"{len(dirs)} fit(s), not the leave-one-style-out fold models'")  # fmt: skip
    meta = meta.model_copy(
        update={"provenance": meta.provenance.model_copy(update={"notes": notes})}
    )
    fold_seeds, served_members = members_text(seeds, task)
    if bird and photos is not None:
        final_epochs = epoch_text(summary, int(finfo["settings"]["epochs"]))[1]
        sections = top_bird.sections(
            summary,
            thr,
            photos,
            fold_seeds,
            f"The served model is trained on all seven styles {final_epochs}.{served_members} "
            "The imagenet graph's own top stays beside them for the ImageNet bird mass.",
        ) + note_sections(card_notes)
    else:
        sections = (
            santa_sections(summary, thr, finfo, previous, seeds)
            + note_sections(v1_config().card_notes)
            + note_sections(card_notes)
        )
    config = config_path or Path(f"training/configs/{task}-emoji-top.yaml")
    card = render_card(
        CardData(
            metadata=meta,
            labels=labels,
            sections=sections,
            references=tuple(references),
            limitations=(
                *limitations(TASKS[task]),
                "Every held-out figure is from the 7 fold models; the served model (all 7 styles) was never scored on an unseen style.",
            ),
            licences=(
                *tuple(Licence(f"emoji art, {s}", STYLES[s][1]) for s in STYLES),
                Licence("labels", LABELS_SOURCE),
                Licence("backbone weights", str(bm.provenance.weights_license)),
            ),
            reproduce=(
                "scripts/fetch-data && python -m training.emoji.top_ship"
                + ("" if fixed is None else f" --fixed-epoch {fixed}")
                if len(dirs) == 1 and not bird
                else reproduce(config)
            ),
        )
    )
    bundle = write_bundle(
        out / task, model_bytes=model_bytes, metadata=meta, labels=labels, model_card=card
    )
    save_top_folds(bundle.path / TOP_FOLDS, dirs, summary, finals, combine=bird)
    logger.info("wrote %s in %.0f s", bundle.path, time.perf_counter() - t0)
    return bundle.path
