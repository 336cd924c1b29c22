"""CI re-check of the emoji-head bundles on their held-out styles (scripts/eval-bundles).

Each emoji-head bundle keeps its seven leave-one-style-out fold heads (``loso-heads.npz``, a
few KB: the folded weights of the head that never saw that style, its validation threshold
and the counts it scored). This re-runs each fold head on its held-out style through the
serving path (PNG bytes -> app.imaging.prepare -> the imagenet bundle in app.runtime): every
positive of the style and a seeded sample of its negatives. Fails when a style's recall
differs from the recorded one by more than one picture, or when the sample's false positives
are significantly more than the recorded rate predicts (exact binomial tail below 2.5%, the
upper side of a 95% test; a Wilson bound is too loose for counts this small: 3 of 100 at a
recorded 1.01% has a tail of 8%, yet Wilson's lower bound, 1.03%, sits above it).
TensorFlow-free.
CLI: ``python -m training.emoji.check models/santa models/bird [--negatives 100]``.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from app.bundle import Bundle, InputSpec, load_bundle
from app.imaging import ImageLimits, prepare
from training.emoji.catalog import PROJECT_ROOT, STYLES, Picture, load_catalog
from training.emoji.embed import BACKBONE, Backbone
from training.emoji.heads import features
from training.emoji.identity import IdentityHead
from training.emoji.render import base_array
from training.emoji.tasks import MASS_RULE, TASKS

FOLD_HEADS = "loso-heads.npz"


def _head_arrays(heads: list[Any]) -> dict[str, npt.NDArray[Any]]:
    """Linear heads: their folded weights stacked. Identity heads (training.emoji.identity):
    each fold's own arrays (its emoji classes differ), the weights as float16 (exact)."""
    if not isinstance(heads[0], IdentityHead):
        folded = [h.folded() for h in heads]
        return {
            "w": np.stack([w for w, _ in folded]).astype(np.float32),
            "b": np.asarray([b for _, b in folded], np.float64),
        }
    out: dict[str, npt.NDArray[Any]] = {"identity": np.asarray(True)}
    for i, h in enumerate(heads):
        out.update({f"mean_{i}": h.mean, f"scale_{i}": h.scale, f"bias_{i}": h.bias})
        out.update({f"w_{i}": h.weights.astype(np.float16), f"positive_{i}": h.positive})
        if h.transform is not None:  # float16 values already (training.emoji.wccn.whitening)
            out[f"transform_{i}"] = h.transform.astype(np.float16)
    return out


def _fold_logits(z: Any, i: int, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Fold i's head logits on features x (as saved by save_fold_heads)."""
    if "identity" not in z.files:
        return np.asarray(x.astype(np.float64) @ z["w"][i] + z["b"][i])
    head = IdentityHead(
        mean=z[f"mean_{i}"],
        scale=z[f"scale_{i}"],
        weights=z[f"w_{i}"].astype(np.float32),
        bias=z[f"bias_{i}"],
        positive=z[f"positive_{i}"],
        l2=0.0,
        epochs=0,
        transform=z[f"transform_{i}"].astype(np.float32) if f"transform_{i}" in z.files else None,
    )
    return head.logits(x)


def save_fold_heads(path: Path, task: Any, loso: dict[str, Any], backbone_sha: str) -> None:
    styles = list(loso["folds"])
    f = loso["folds"]
    np.savez(
        path,
        task=np.asarray(task.name),
        backbone_sha256=np.asarray(backbone_sha),
        use_mass=np.asarray(task.use_mass),
        combine_mass=np.asarray(task.combine_mass),
        styles=np.asarray(styles),
        **_head_arrays([f[s]["head"] for s in styles]),
        threshold=np.asarray([f[s]["threshold"] for s in styles], np.float64),
        tp=np.asarray([f[s]["tp"] for s in styles]),
        fn=np.asarray([f[s]["fn"] for s in styles]),
        fp=np.asarray([f[s]["fp"] for s in styles]),
        tn=np.asarray([f[s]["tn"] for s in styles]),
    )


Present = Callable[[Picture], bytes]  # how a picture reaches the server (its file's bytes)


def as_drawn(p: Picture) -> bytes:
    """The evaluation view: the picture at 224 px on white, as a PNG."""
    buf = io.BytesIO()
    Image.fromarray(base_array(p, 224)).save(buf, format="PNG")
    return buf.getvalue()


def prepared(
    pics: Sequence[Picture], spec: InputSpec, present: Present = as_drawn
) -> npt.NDArray[np.float32]:
    """Model inputs for `pics` through the server's ingestion (app.imaging.prepare)."""
    return np.stack([prepare(present(p), spec, ImageLimits()).array for p in pics])


class _Features:
    """Serving-path features per picture, computed once for every bundle checked (per input
    policy and presentation)."""

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        # keyed by the presentation itself, not its name: two closures can share a name
        self.cache: dict[tuple[Path, str, Present], tuple[npt.NDArray[np.float32], float]] = {}

    def __call__(
        self, pics: Sequence[Picture], spec: InputSpec | None = None, present: Present = as_drawn
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = spec or self.backbone.bundle.metadata.input
        tag = (spec.model_dump_json(), present)
        todo = [p for p in pics if (p.path, *tag) not in self.cache]
        for i in range(0, len(todo), 32):
            chunk = todo[i : i + 32]
            emb, mass = self.backbone(prepared(chunk, spec, present))
            for p, e, m in zip(chunk, emb, mass, strict=True):
                self.cache[(p.path, *tag)] = (e, float(m))
        emb = np.stack([self.cache[(p.path, *tag)][0] for p in pics])
        mass = np.asarray([self.cache[(p.path, *tag)][1] for p in pics], np.float32)
        return emb, mass


SIGNIFICANCE = 0.025  # one-sided: the upper half of a two-sided 95% test


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): how surprising k false positives in n negatives are
    for a model whose false-positive rate is p."""
    if k <= 0:
        return 1.0
    below = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k))
    return max(0.0, 1.0 - below)


def style_sample(
    catalog: Sequence[Picture], task: Any, style: str, i: int, negatives: int
) -> tuple[list[Picture], list[Picture]]:
    """Every positive of the style and a sample of its negatives, seeded by the fold index."""
    pics = [p for p in catalog if p.style == style and task.label(p) is not None]
    pos = [p for p in pics if task.label(p) == 1]
    neg_all = [p for p in pics if task.label(p) == 0]
    rng = np.random.default_rng([7, i])
    neg = [neg_all[j] for j in sorted(rng.choice(len(neg_all), negatives, replace=False))]
    return pos, neg


class _TopFolds:
    """A fine-tuned-top bundle's folds (training.emoji.top_graph.TOP_FOLDS): the served graph
    with one fold's top and head swapped in, run on PNG bytes through the server's runtime."""

    def __init__(self, bundle: Bundle, z: Any, backbone: Backbone) -> None:
        import onnx

        from training.serving_eval import open_model

        self.bundle = bundle
        self.served = onnx.load(str(self.bundle.model_path))
        self.imagenet = onnx.load(str(backbone.bundle.model_path))
        self.z = z
        self.open_model = open_model
        self.models: dict[int, Any] = {}  # fold index -> its graph, opened once

    def __call__(
        self, i: int, pics: Sequence[Picture], spec: InputSpec, present: Present = as_drawn
    ) -> npt.NDArray[np.bool_]:
        model = self.models[i] if i in self.models else self._open(i)
        p = []
        for s in range(0, len(pics), 32):
            p.append(model.run(prepared(pics[s : s + 32], spec, present)).probs[:, 1])
        combine = "combine" in self.z.files and bool(self.z["combine"])
        return np.concatenate(p) >= (0.5 if combine else float(self.z["threshold"][i]))

    def _open(self, i: int) -> Any:
        from training.emoji.top_graph import fold_graph, stored_members

        z = self.z
        names = z["names"].tolist()
        thr = float(z["threshold"][i])
        # bird: the members' copies start at 1 (the original top gives the bird mass) and the
        # fold's threshold goes into the graph, which then decides at 0.5
        combine = "combine" in z.files and bool(z["combine"])
        first = int(z["first_member"]) if "first_member" in z.files else 0
        members = stored_members(z, i)
        graph = fold_graph(
            self.served, self.imagenet, names, members, first, thr if combine else None
        )
        self.models[i] = self.open_model(graph, like=self.bundle)
        return self.models[i]


class FoldDecisions:
    """A bundle's leave-one-style-out fold models (loso-heads.npz or loso-top.npz): the
    decisions of the fold that never saw `style` on pictures, through the serving path with
    the bundle's input policy (or `spec`) and a presentation of each picture."""

    def __init__(self, bundle_dir: Path, feats: _Features) -> None:
        from training.emoji.top_graph import TOP_FOLDS

        top = (bundle_dir / TOP_FOLDS).is_file()
        self.z = np.load(bundle_dir / (TOP_FOLDS if top else FOLD_HEADS))
        self.task = TASKS[str(self.z["task"])]
        self.styles: list[str] = self.z["styles"].tolist()
        bundle = load_bundle(bundle_dir)
        self.spec = bundle.metadata.input
        self.feats = feats
        self.same_backbone = str(self.z["backbone_sha256"]) == feats.backbone.sha
        self.top = _TopFolds(bundle, self.z, feats.backbone) if top else None

    def __call__(
        self,
        style: str,
        pics: Sequence[Picture],
        spec: InputSpec | None = None,
        present: Present = as_drawn,
    ) -> npt.NDArray[np.bool_]:
        z, i, spec = self.z, self.styles.index(style), spec or self.spec
        if self.top is not None:
            return self.top(i, pics, spec, present)
        emb, mass = self.feats(pics, spec, present)
        x = features(emb, mass, bool(z["use_mass"]))
        # score >= threshold  <=>  logit >= logit(threshold)
        t = min(float(z["threshold"][i]), 1 - 1e-9)
        hit = _fold_logits(z, i, x) >= np.log(t / (1 - t))
        if "combine_mass" in z.files and bool(z["combine_mass"]):  # mass rule fires alone
            hit = hit | (mass >= MASS_RULE)
        return np.asarray(hit)


def check_bundle(
    bundle_dir: Path,
    catalog: list[Picture],
    feats: _Features,
    negatives: int,
    only: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Re-run each fold head (or fold top + head) on its held-out style (or only `only`)."""
    folds = FoldDecisions(bundle_dir, feats)
    z, task = folds.z, folds.task
    problems = []
    if not folds.same_backbone:
        problems.append(f"{bundle_dir.name}: fold heads were trained on another imagenet bundle")
        return [], problems
    rows = []
    for i, style in enumerate(folds.styles):
        if only is not None and style not in only:
            continue
        pos, neg = style_sample(catalog, task, style, i, negatives)
        hit = folds(style, pos + neg)
        tp, fp = int(hit[: len(pos)].sum()), int(hit[len(pos) :].sum())
        rec_tp, rec_n = int(z["tp"][i]), int(z["tp"][i] + z["fn"][i])
        rec_fpr = int(z["fp"][i]) / max(1, int(z["fp"][i] + z["tn"][i]))
        row = {
            "bundle": bundle_dir.name,
            "style": style,
            "recall": f"{tp}/{len(pos)}",
            "recorded recall": f"{rec_tp}/{rec_n}",
            "FP (sample)": f"{fp}/{len(neg)}",
            "recorded FPR": f"{100 * rec_fpr:.2f}%",
        }
        rows.append(row)
        if len(pos) != rec_n or abs(tp - rec_tp) > 1:
            problems.append(
                f"{bundle_dir.name}/{style}: recall {tp}/{len(pos)} vs recorded {rec_tp}/{rec_n}"
            )
        if binomial_tail(fp, len(neg), rec_fpr) < SIGNIFICANCE:
            problems.append(
                f"{bundle_dir.name}/{style}: false positives {fp}/{len(neg)} on the sample, "
                f"significantly above the recorded {100 * rec_fpr:.2f}%"
            )
    return rows, problems


def _scored(row: dict[str, Any]) -> int:
    return int(str(row["recall"]).split("/")[1]) + int(str(row["FP (sample)"]).split("/")[1])


def bundles_parser(doc: str | None, negatives: int) -> argparse.ArgumentParser:
    """A CLI over emoji-head bundles (santa and bird by default) and a negative sample size."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "bundles",
        nargs="*",
        type=Path,
        default=[PROJECT_ROOT / "models" / n for n in ("santa", "bird")],
    )
    ap.add_argument("--negatives", type=int, default=negatives, help="sampled negatives per style")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundles_parser(__doc__, 100)
    ap.add_argument("--styles", nargs="*", default=None, help="only these held-out styles")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    feats = _Features(Backbone(BACKBONE))
    catalog = load_catalog(styles=args.styles or list(STYLES))
    rows, problems = [], []
    for b in args.bundles:
        r, p = check_bundle(b, catalog, feats, args.negatives, args.styles)
        rows += r
        problems += p
    if rows:
        cols = list(rows[0])
        print("  ".join(f"{c:>22s}" for c in cols))
        for r in rows:
            print("  ".join(f"{r[c]!s:>22s}" for c in cols))
    print(
        f"fold heads on held-out emoji styles, serving path, all positives + {args.negatives} "
        f"sampled negatives per style; {sum(_scored(r) for r in rows)} pictures scored in "
        f"{time.perf_counter() - t0:.0f} s"
    )
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
