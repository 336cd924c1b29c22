"""`products` (Fashion-MNIST's ten classes) on emoji clothing drawings, per style.

Each mapped clothing emoji (catalog.CLOTHING_TO_FASHION) is rendered on white, encoded as PNG
and sent through the server's ingestion with the bundle's input spec, with and without the
trim-and-centre policy (InputSpec.trim), then scored by the server's runtime
(training.serving_eval.open_model). Two views: the drawing as distributed (it fills its square)
and as a "product shot" (the drawing at half size in the lower left of a white square, as
untrimmed, uncentred pictures are). No training: every style is held out.
CLI: ``python -m training.emoji.products_eval [--bundle models/products]``.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from app.bundle import load_bundle
from app.imaging import ImageLimits, prepare
from app.metrics import wilson_interval
from training.emoji.catalog import PROJECT_ROOT, STYLES, Picture, load_catalog
from training.emoji.render import load_rgba, on_background
from training.serving_eval import open_model, run_prepared

RENDER_SIZE = 224
VIEWS = ("drawing", "product_shot")


def _png(p: Picture, view: str) -> bytes:
    img = load_rgba(p, RENDER_SIZE)
    if view == "product_shot":
        small = img.resize((RENDER_SIZE // 2, RENDER_SIZE // 2), Image.Resampling.BILINEAR)
        img = Image.new("RGBA", img.size, (0, 0, 0, 0))
        img.paste(small, (RENDER_SIZE // 16, RENDER_SIZE * 3 // 8))
    buf = io.BytesIO()
    on_background(img).save(buf, format="PNG")
    return buf.getvalue()


def evaluate(bundle_dir: Path, styles: Sequence[str] = tuple(STYLES)) -> dict[str, Any]:
    """Top-1 per style and pooled, per view and trim policy; `emoji`: how many distinct
    clothing emoji were scored (pooled and per style), for text that quotes the counts."""
    bundle = load_bundle(bundle_dir)
    labels = list(bundle.labels)
    model = open_model(bundle)
    pics = [p for p in load_catalog(styles=styles) if p.fashion_class is not None]
    y = np.array([labels.index(str(p.fashion_class)) for p in pics])
    emoji = {s: len({p.key for p in pics if p.style == s}) for s in styles}
    out: dict[str, Any] = {
        "bundle": bundle.name,
        "n": len(pics),
        "emoji": {"pooled": len({p.key for p in pics}), "per_style": emoji},
        "policies": {},
    }
    for view, trim in [(v, t) for v in VIEWS for t in (False, True)]:
        blobs = [_png(p, view) for p in pics]
        spec = bundle.metadata.input.model_copy(update={"trim": trim})
        x = np.stack([prepare(b, spec, ImageLimits()).array for b in blobs])
        pred = run_prepared(model, x)[0].argmax(axis=1)
        per_style = {}
        for style in styles:
            m = np.array([p.style == style for p in pics])
            if m.any():
                k, n = int((pred[m] == y[m]).sum()), int(m.sum())
                iv = wilson_interval(k, n)
                per_style[style] = {"k": k, "n": n, "low": iv.low, "high": iv.high}
        k, n = int((pred == y).sum()), len(y)
        iv = wilson_interval(k, n)
        out["policies"][f"{view}/{'trim' if trim else 'as_is'}"] = {
            "pooled": {"k": k, "n": n, "low": iv.low, "high": iv.high},
            "per_style": per_style,
        }
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=PROJECT_ROOT / "models" / "products")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    res = evaluate(args.bundle)
    print(
        f"{res['bundle']} on emoji clothing (top-1 correct / n per style; pooled with Wilson 95%)"
    )
    pols = list(res["policies"])
    print(f"{'style':22s} " + " ".join(f"{p:>22s}" for p in pols))
    for style in STYLES:
        cells = []
        for pol in pols:
            r = res["policies"][pol]["per_style"].get(style)
            cells.append(f"{r['k']}/{r['n']}" if r else "-")
        print(f"{style:22s} " + " ".join(f"{c:>22s}" for c in cells))
    for pol in pols:
        r = res["policies"][pol]["pooled"]
        print(
            f"pooled {pol}: {r['k']}/{r['n']} = {100 * r['k'] / r['n']:.1f}% "
            f"[{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
        )
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
