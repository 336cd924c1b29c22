"""Declare the drawing input policy (InputSpec.frame and .background, app/trim.py) on `santa`
and `bird`, measured.

Same model.onnx; metadata.input.frame = FILL and input.background = "white". The heads learnt
emoji as their packages draw them, flattened on white: the object spans 0.75-1.0 of the picture
(median about 0.9, the training render). A drawing small in a large picture, at one end of a
wide one (where the centre crop cuts it) or on a coloured background is another input. Measured
through the serving path (PNG bytes -> app.imaging.prepare -> onnxruntime), each style scored by
the fold model that never saw it (loso-heads.npz / loso-top.npz), with and without the policy:
- as drawn: every picture of every style is checked for whether the policy changes its model
  input; those it changes are scored both ways, so the recorded leave-one-style-out figures
  with the policy follow exactly;
- small, at one end, on gray, on black (every positive and a seeded sample of negatives per
  style), and as served only: JPEG at quality 40, rendered at 32 px;
- the labelled real photos (training.imagenet.bird_photos) through the served graph.
Prints the figures; --write declares the policy and adds a section to the card.
CLI: ``python -m training.emoji.drawing_policy models/santa models/bird [--negatives 300] [--write]``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.metrics import wilson_interval
from training.emoji.card import rewrite_bundle
from training.emoji.catalog import STYLES, Picture, load_catalog
from training.emoji.check import (
    FoldDecisions,
    Present,
    _Features,
    as_drawn,
    bundles_parser,
    style_sample,
)
from training.emoji.embed import BACKBONE, Backbone
from training.emoji.render import base_array, load_rgba, on_background

FILL = 0.88  # the object's share of the model's view after framing (the training render's)
SECTION = "## Input policy for drawings: frame, white background"
CANVAS = 3  # small: the drawing in a canvas this many times its side; at one end: 3:1


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def small(p: Picture) -> bytes:
    """The picture as drawn (224 px) in the middle of a white canvas three times its side."""
    canvas = Image.new("RGB", (224 * CANVAS, 224 * CANVAS), "white")
    canvas.paste(Image.fromarray(base_array(p, 224)), (224, 224))
    return _png(canvas)


def at_one_end(p: Picture) -> bytes:
    """The picture as drawn at the left end of a white 3:1 canvas."""
    canvas = Image.new("RGB", (224 * CANVAS, 224), "white")
    canvas.paste(Image.fromarray(base_array(p, 224)), (0, 0))
    return _png(canvas)


def _flat(p: Picture, colour: tuple[int, int, int], size: int = 224, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    on_background(load_rgba(p, size), colour).save(buf, format=fmt, quality=40)
    return buf.getvalue()


def on_gray(p: Picture) -> bytes:
    """The picture flattened on mid gray (128) instead of white."""
    return _flat(p, (128, 128, 128))


def on_black(p: Picture) -> bytes:
    """The picture flattened on black (line art drawn in black disappears)."""
    return _flat(p, (0, 0, 0))


def jpeg_q40(p: Picture) -> bytes:
    """The picture on white as a JPEG at quality 40."""
    return _flat(p, (255, 255, 255), fmt="JPEG")


def at_32px(p: Picture) -> bytes:
    """The picture rendered at 32 px on white (the server scales it up)."""
    return _flat(p, (255, 255, 255), size=32)


PRESENTATIONS: dict[str, Present] = {
    "small": small,
    "at one end": at_one_end,
    "on gray": on_gray,
    "on black": on_black,
}
# Measured as served (policy on): shifts the policy does not address.
OTHER: dict[str, Present] = {"JPEG q40": jpeg_q40, "32 px": at_32px}
POLICY: dict[str, Any] = {"frame": FILL, "background": "white"}
NO_POLICY: dict[str, Any] = {"frame": None, "background": "as_is"}


def _count(hit: np.ndarray, n_pos: int) -> tuple[int, int]:
    return int(hit[:n_pos].sum()), int(hit[n_pos:].sum())


def measure(
    bundle_dir: Path, catalog: list[Picture], feats: _Features, negatives: int
) -> dict[str, Any]:
    folds = FoldDecisions(bundle_dir, feats)
    if not folds.same_backbone:
        raise SystemExit(f"{bundle_dir.name}: fold models were trained on another imagenet bundle")
    off = folds.spec.model_copy(update=NO_POLICY)
    on = folds.spec.model_copy(update=POLICY)
    task, out = folds.task, {"styles": {}, "as_drawn": {}}
    for i, style in enumerate(folds.styles):
        t0 = time.perf_counter()
        pics = [p for p in catalog if p.style == style and task.label(p) is not None]
        changed = [p for p in pics if _changes(as_drawn(p), off, on)]
        y = np.asarray([task.label(p) for p in changed], bool)
        flips = {"pictures": len(pics), "reframed": len(changed), "pos_reframed": int(y.sum())}
        if changed:
            before, after = folds(style, changed, off), folds(style, changed, on)
            flips.update(
                found=int((after & ~before & y).sum()),
                lost=int((before & ~after & y).sum()),
                new_fp=int((after & ~before & ~y).sum()),
                fewer_fp=int((before & ~after & ~y).sum()),
            )
        out["as_drawn"][style] = flips
        pos, neg = style_sample(catalog, task, style, i, negatives)
        row = {}
        for name, present in PRESENTATIONS.items():
            for policy, spec in (("off", off), ("on", on)):
                tp, fp = _count(folds(style, pos + neg, spec, present), len(pos))
                row[f"{name}/{policy}"] = {"tp": tp, "pos": len(pos), "fp": fp, "neg": len(neg)}
        for name, present in OTHER.items():
            tp, fp = _count(folds(style, pos + neg, on, present), len(pos))
            row[f"{name}/on"] = {"tp": tp, "pos": len(pos), "fp": fp, "neg": len(neg)}
        out["styles"][style] = row
        print(f"{bundle_dir.name} {style}: {flips} {row} ({time.perf_counter() - t0:.0f} s)")
    out["photos"] = _photos(bundle_dir, off, on)
    return out


def _photos(bundle_dir: Path, off: Any, on: Any) -> dict[str, Any]:
    """The served graph on the labelled real photos, decisions without and with the policy."""
    from training.imagenet import bird_photos
    from training.serving_eval import open_model

    bundle = load_bundle(bundle_dir)
    model = open_model(bundle)
    photos = bird_photos()
    out: dict[str, Any] = {"n": len(photos), "birds": sum(p.is_bird for p in photos)}
    for policy, spec in (("off", off), ("on", on)):
        x = np.stack([prepare(p.path.read_bytes(), spec, ImageLimits()).array for p in photos])
        out[policy] = [bool(v) for v in model.run(x).probs.argmax(1) == 1]
    out["right"] = sum(d == p.is_bird for d, p in zip(out["on"], photos, strict=True))
    out["reframed"] = [p.path.name for p in photos if _changes(p.path.read_bytes(), off, on)]
    return out


def _changes(data: bytes, off: Any, on: Any) -> bool:
    """Whether the policy changes the model input of a picture."""
    a, b = (prepare(data, spec, ImageLimits()).array for spec in (off, on))
    return not np.array_equal(a, b)


def _pooled(res: dict[str, Any], key: str) -> dict[str, int]:
    cells = [row[key] for row in res["styles"].values()]
    return {k: sum(c[k] for c in cells) for k in ("tp", "pos", "fp", "neg")}


def _rate(k: int, n: int) -> str:
    """A count with its share and Wilson 95% interval (two decimals under 1%)."""
    iv = wilson_interval(k, n)
    d = 2 if iv.high < 0.01 else 1
    return f"{k}/{n} = {100 * k / n:.{d}f}% [{100 * iv.low:.{d}f}, {100 * iv.high:.{d}f}]"


def card_section(name: str, res: dict[str, Any], negatives: int) -> str:
    task = "Santas" if name == "santa" else "birds"
    lines = [
        SECTION,
        "",
        f"`input.frame: {FILL}` and `input.background: white` (app/trim.py). Before resizing, "
        "the server re-frames a drawing on a uniform background whose object is small in the "
        "model's view, or partly outside its centre crop: it crops to the object and centres it "
        f"so that it spans {FILL} of the view, as the emoji the model learnt from are drawn. "
        "After resizing, a uniform background that is not white is painted white where it "
        "touches the border, as the emoji were flattened for training. Pictures already "
        "framed like that on white, photos of scenes and blank pictures are left exactly as "
        "they are. Same model.onnx. Measured through the serving path, each style by the fold "
        f"model that never saw it (`python -m training.emoji.drawing_policy`): every "
        f"{task[:-1].lower()} and {negatives} sampled other emoji per style; Wilson 95% "
        "intervals. Small: the picture as drawn (224 px) in the middle of a white canvas 3 "
        "times its side; at one end: at the left end of a white 3:1 canvas; on gray / on "
        "black: flattened on (128, 128, 128) or on black instead of white.",
        "",
        "| presentation | policy | found | false positives |",
        "|---|---|---|---|",
    ]
    for pres in PRESENTATIONS:
        for policy in ("off", "on"):
            c = _pooled(res, f"{pres}/{policy}")
            lines.append(
                f"| {pres} | {policy} | {_rate(c['tp'], c['pos'])} | {_rate(c['fp'], c['neg'])} |"
            )
    lines += ["", "Per held-out style, found without / with the policy:", ""]
    lines += ["| held-out style | " + " | ".join(PRESENTATIONS) + " |"]
    lines += ["|---|" + "---|" * len(PRESENTATIONS)]
    for style, row in res["styles"].items():
        cells = [
            f"{row[f'{p}/off']['tp']} / {row[f'{p}/on']['tp']} of {row[f'{p}/on']['pos']}"
            for p in PRESENTATIONS
        ]
        lines.append(f"| {style} | " + " | ".join(cells) + " |")
    drawn = res["as_drawn"].values()
    total, changed = sum(d["pictures"] for d in drawn), sum(d["reframed"] for d in drawn)
    moved = {k: sum(d.get(k, 0) for d in drawn) for k in ("found", "lost", "new_fp", "fewer_fp")}
    photos = res["photos"]
    flips = sum(a != b for a, b in zip(photos["off"], photos["on"], strict=True))
    lines += [
        "",
        f"As drawn (the leave-one-style-out figures above): the policy changes the model input "
        f"of {changed:,} of {total:,} pictures (objects spanning under 0.7 of the picture); "
        f"scored both ways by their fold models: {moved['found']} more {task} found, "
        f"{moved['lost']} lost, {moved['new_fp']} new false positives, {moved['fewer_fp']} "
        "fewer.",
        f"Real photos ({photos['n']}, {photos['birds']} with a bird): the policy changes "
        f"{len(photos['reframed'])} ({', '.join(photos['reframed']) or 'none'}); decisions "
        f"changed on {flips}; "
        + (
            f"{photos['right']} of {photos['n']} right with the policy."
            if name == "bird"
            else f"{sum(photos['on'])} flagged as Santa with the policy (none shows one)."
        ),
        "",
        "As served, shifts the policy does not address (same samples):",
        "",
        "| presentation | found | false positives | found per held-out style |",
        "|---|---|---|---|",
    ]
    for pres in OTHER:
        c = _pooled(res, f"{pres}/on")
        per = ", ".join(f"{st} {row[f'{pres}/on']['tp']}" for st, row in res["styles"].items())
        lines.append(
            f"| {pres} | {_rate(c['tp'], c['pos'])} | {_rate(c['fp'], c['neg'])} | {per} |"
        )
    lines += [
        "",
        "Heavy JPEG compression and tiny pictures remain weak spots, and so does line art drawn "
        "in black on a black background (the lines touch the background and go white with it). "
        "Light ink on a dark background is drawn as dark ink on white before the policy applies "
        "(`app/trim.py` `light_ink`); docs/drawings.md has its figures.",
        "Reproduce: after training the bundle, "
        f"`python -m training.emoji.drawing_policy models/{name} --write`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = bundles_parser(__doc__, 300)
    ap.add_argument("--write", action="store_true", help="declare the policy, add the card section")
    args = ap.parse_args(argv)
    feats = _Features(Backbone(BACKBONE))
    catalog = load_catalog(styles=list(STYLES))
    for b in args.bundles:
        res = measure(b, catalog, feats, args.negatives)
        section = card_section(b.name, res, args.negatives)
        print(section)
        if not args.write:
            continue
        bundle = load_bundle(b)
        meta = bundle.metadata
        new_meta = meta.model_copy(update={"input": meta.input.model_copy(update=POLICY)})
        rewrite_bundle(bundle, new_meta, SECTION, section)
        print(f"wrote {b}: input.frame = {FILL}, input.background = white")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
