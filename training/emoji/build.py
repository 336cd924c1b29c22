"""The `emoji_head` recipe: LOSO-evaluated head on the imagenet embedding -> served bundle.

``python -m training train --config training/configs/santa-emoji.yaml`` (santa v1) or bird-emoji.yaml:
features from the cache (training.emoji.embed; filled on first use), leave-one-style-out
evaluation (training.emoji.loso), the shipped head on all styles, the head composed onto the
imagenet bundle's graph (training.emoji.compose, parity-checked on real pictures), metadata
with per-style metrics, a card rendered by app/card.py, the bundle written by app/bundle_write.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
from importlib.metadata import version
from typing import Any

import numpy as np

from app.bundle import BundleMetadata, Metrics, Outputs, Provenance, utc_now
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Reference, render_card
from training.emoji.card import card_sections, limitations, note_sections, reproduce
from training.emoji.catalog import LABELS_SOURCE, STYLES
from training.emoji.check import FOLD_HEADS, save_fold_heads
from training.emoji.compose import compose, parity
from training.emoji.config import EmojiHeadConfig
from training.emoji.embed import Backbone
from training.emoji.identity import IdentityHead
from training.emoji.loso import final_head, photo_test, run_loso
from training.emoji.render import base_array
from training.emoji.style_sets import PhotoSet, load_photos, load_sets
from training.emoji.tasks import MASS_RULE, TASKS
from training.emoji.top_bird import PHOTO_SPLIT
from training.emoji.top_summary import POOLED_AT_FOLDS
from training.export import git_commit, hardware
from training.recipes import RunOptions, RunReport
from training.runs import start_run, write_metrics
from training.serving_eval import open_model

logger = logging.getLogger(__name__)
DATASET = "emoji art, 7 drawing styles (Noto, Twemoji, OpenMoji colour + line art, Fluent flat/modern/high-contrast)"


def _metric(
    name: str, split: str, fig: dict[str, Any], threshold: float, pos: str, notes: str
) -> Metrics:
    p, r = fig["precision"], fig["recall"]
    prec = p.get("estimate", 0.0)
    rec = r.get("estimate", 0.0)
    extra = {k: float(fig[k]) for k in ("tp", "fp", "fn", "tn", "n_positive")}
    if "roc_auc" in fig:
        extra["roc_auc"] = float(fig["roc_auc"])
        extra["recall_at_1pct_fpr"] = float(fig["recall_at_1pct_fpr"]["estimate"])
    return Metrics(
        dataset=name,
        split=split,
        n_samples=int(fig["n"]),
        accuracy=(fig["tp"] + fig["tn"]) / fig["n"],
        precision=prec,
        recall=rec,
        f1=2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        threshold=threshold,
        positive_label=pos,
        evaluated_with="onnxruntime",
        notes=notes,
        extra=extra,
    )


def _library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("onnx", "onnxruntime", "numpy", "scikit-learn", "resvg-py", "pillow"):
        out[pkg] = version(pkg)
    return out


def _parity_inputs(
    sets: dict[str, Any], photos: PhotoSet | None, backbone: Backbone
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real pictures for the parity check: positives and negatives of every style (+ photos)."""
    imgs, feats, mass = [], [], []
    for s in sets.values():
        for i in [*np.flatnonzero(s.y == 1)[:2], *np.flatnonzero(s.y == 0)[:2]]:
            imgs.append(base_array(s.pictures[i], 224).astype(np.float32))
            feats.append(s.x_base[i])
            mass.append(s.mass[i])
    return np.stack(imgs), np.stack(feats), np.asarray(mass, np.float32)


def run(cfg: EmojiHeadConfig, options: RunOptions) -> RunReport:
    t0 = time.perf_counter()
    task = TASKS[cfg.task]
    if cfg.cs is not None:
        task = dataclasses.replace(task, cs=tuple(cfg.cs))
    if cfg.hard_weights is not None:
        task = dataclasses.replace(task, hard_weights=tuple(cfg.hard_weights))
    if cfg.head == "identity":
        task = dataclasses.replace(
            task,
            identity=True,
            identity_l2=cfg.identity_l2,
            identity_epochs=cfg.identity_epochs,
            identity_seed=cfg.seed,
            identity_wccn=tuple(cfg.identity_wccn),
        )
    backbone = Backbone(cfg.backbone_bundle)
    if backbone.bundle.metadata.input != cfg.input:
        raise ValueError(f"{cfg.name}: `input` must equal {cfg.backbone_bundle}'s input spec")
    run_dir = start_run(options.runs_dir, cfg)
    sets = load_sets(task, backbone, cfg.views)
    photos = load_photos(task, backbone) if task.with_photos else None  # a test set only
    loso = run_loso(task, sets, None)
    head, cal, c = final_head(task, sets, loso, None)
    photo_fig = photo_test(task, head, photos, cal.threshold) if photos is not None else None
    combine = cal.threshold if task.combine_mass else None
    model_bytes = compose(backbone.bundle.model_path, head, combine)
    # The server applies metrics[0].threshold to P(positive) of the composed graph.
    served = MASS_RULE if combine is not None else cal.threshold
    pos = task.labels[1]
    metrics = [
        _metric(
            DATASET,
            f"leave-one-style-out ({POOLED_AT_FOLDS})",
            loso["pooled"],
            served,
            pos,
            "each style scored by a head trained on the other 6, at the threshold chosen on "
            + (
                "the other 6 styles' held-out scores"
                if task.identity
                else "validation (inner leave-one-style-out over those 6)"
            )
            + "; the shipped threshold was "
            f"chosen by the same rule ({cal.rule}) on these pooled held-out scores"
            + (
                f" (head {cal.threshold:.4f}, folded into the graph: P(bird) = max(ImageNet "
                f"bird mass, head score rescaled so that {cal.threshold:.4f} -> 0.5))"
                if combine is not None
                else ""
            ),
        )
    ]
    for style, fig in loso["folds"].items():
        metrics.append(
            _metric(
                f"emoji art, {style}",
                f"held-out style {style}",
                fig,
                fig["threshold"],
                pos,
                f"head trained on the other 6 styles; threshold {fig['threshold']:.4f} from "
                + ("the other 6 styles' held-out scores" if task.identity else "validation"),
            )
        )
    if photo_fig is not None:
        metrics.append(
            _metric(
                "real photos shipped in PyPI packages (foolbox imagenet/cifar10/cifar100, scikit-image, scikit-learn, matplotlib, imgaug)",
                PHOTO_SPLIT,
                photo_fig,
                served,
                pos,
                f"lowest bird score {photo_fig['lowest_bird']:.3f}, highest non-bird {photo_fig['highest_non_bird']:.3f}",
            )
        )
    base_meta = backbone.bundle.metadata
    meta = BundleMetadata(
        name=cfg.name,
        version=cfg.export.version,
        created_at=utc_now(),
        description=cfg.description,
        input=base_meta.input,
        outputs=Outputs(embedding=base_meta.outputs.embedding),
        num_classes=2,
        metrics=metrics,
        provenance=Provenance(
            data_source=f"{DATASET}; labels {LABELS_SOURCE}"
            + ("; real photos from PyPI packages (scripts/fetch-data)" if photos else ""),
            data_version="emoji-datasource 16.0.0, openmoji 17.0.0, fluentui-emoji 1.3.0",
            architecture=f"efficientnet_lite0 (models/{backbone.bundle.name} graph, frozen) + "
            + ("emoji-identity softmax head" if task.identity else "logistic-regression head"),
            pretrained_weights=base_meta.provenance.pretrained_weights,
            weights_license=base_meta.provenance.weights_license,
            epochs=cfg.identity_epochs if task.identity else 0,  # the logistic head: a solver
            seed=cfg.seed,
            training_time_s=round(time.perf_counter() - t0, 1),
            hardware=hardware(),
            library_versions=_library_versions(),
            git_commit=git_commit(),
            opset=base_meta.provenance.opset,
        ),
        artifact=base_meta.artifact,  # replaced by write_bundle
    )
    # Parity through the server's runtime (staged as a bundle: the I/O contract is checked too).
    imgs, feats, mass = _parity_inputs(sets, photos, backbone)
    model = open_model(model_bytes, metadata=meta, labels=task.labels)
    worst = parity(model, head, imgs, feats, mass, combine)
    if worst > cfg.export.parity_atol:
        raise RuntimeError(f"composed graph differs from the numpy head by {worst:.2e}")
    if isinstance(head, IdentityHead):
        what = (
            f"head: softmax over {head.weights.shape[1]} emoji ({int(head.positive.sum())} "
            f"positive) on sqrt(embedding), {c[0]} augmented view(s), L2 {c[1]:g}, "
            f"{head.epochs} epochs"
        )
    else:
        what = (
            f"head: {c[0]} augmented view(s), C={c[1]:g}, hard-negative weight {c[2]:g}, on a "
            f"{head.weights.shape[0]}-d PCA projection of sqrt(embedding)"
        )
    prov = meta.provenance.model_copy(
        update={
            "notes": f"{what}; composed onto {backbone.bundle.name} sha256 {backbone.sha[:12]}; "
            f"parity vs the numpy head on {len(imgs)} real pictures: max |dP| {worst:.1e}"
        }
    )
    meta = meta.model_copy(update={"provenance": prov})
    card = render_card(
        CardData(
            metadata=meta,
            labels=task.labels,
            sections=card_sections(task, loso, photo_fig, cal, cfg.views)
            + note_sections(cfg.card_notes),
            limitations=tuple(cfg.limitations) or limitations(task),
            references=tuple(Reference(**r.model_dump()) for r in cfg.references),
            licences=(
                *tuple(Licence(f"emoji art, {s}", STYLES[s][1]) for s in STYLES),
                Licence("labels", LABELS_SOURCE),
                Licence("backbone weights", str(base_meta.provenance.weights_license)),
            ),
            reproduce=reproduce(options.config_path),
        )
    )
    out_dir = options.out_dir or cfg.export.out_dir
    bundle = write_bundle(
        out_dir / cfg.name,
        model_bytes=model_bytes,
        metadata=meta,
        labels=task.labels,
        model_card=card,
    )
    save_fold_heads(bundle.path / FOLD_HEADS, task, loso, backbone.sha)
    folds = {h: {k: v for k, v in f.items() if k != "head"} for h, f in loso["folds"].items()}
    summary: dict[str, Any] = {"task": task.name, "folds": folds, "pooled": loso["pooled"]}
    summary.update(
        {"c": c, "calibration": cal.to_dict(), "photos": photo_fig, "parity_max_abs": worst}
    )
    write_metrics(run_dir, summary)
    (run_dir / "loso.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    notes = [_line(style, f) for style, f in loso["folds"].items()] + [
        _line("pooled", loso["pooled"])
    ]
    if photo_fig is not None:
        notes.append(_line("photos (test)", photo_fig))
    return RunReport(cfg.recipe, cfg.name, run_dir, [bundle.path], metrics, notes)


def _line(what: str, f: dict[str, Any]) -> str:
    p, r = f["precision"], f["recall"]
    at = f.get("recall_at_1pct_fpr", {})
    pct = lambda d: f"{d['k']}/{d['n']}" if d.get("n") else "-"  # noqa: E731
    return f"{what:22s} n={f['n']:5d} precision {pct(p):>8s} recall {pct(r):>8s} recall@1%FPR {pct(at):>8s}"
