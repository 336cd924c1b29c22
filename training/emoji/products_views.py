"""Views of the emoji clothing drawings as uploads, and their branch embeddings.

Each view is an RGB upload as a client would send it: the drawing as distributed, as a
product shot, randomly augmented (training.emoji.render.augment), filled or with thicker
strokes. `embed_drawings` sends them through the serving path (products_graph.BranchEmbedder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter, ImageOps

from training.emoji.catalog import FASHION_CLASSES, Picture, load_catalog
from training.emoji.products_graph import BranchEmbedder
from training.emoji.render import augment, load_rgba, on_background, style_view

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


# --- drawing views ---------------------------------------------------------------------------

RENDER = 224
EVAL_VIEWS = ("drawing", "product_shot")  # products_eval's two views
# Held-out presentations scored beside them (never trained on as such): the drawing flattened
# on a mid-gray, a light-gray and a light-blue backdrop instead of white, and small (its side
# a third of a white canvas's, in the middle), as product photos are often taken.
BACKDROPS = {
    "on_gray": (128, 128, 128),
    "on_light_gray": (220, 220, 220),
    "on_blue": (190, 215, 240),
}
PRESENTATIONS = (*BACKDROPS, "small")


def _filled(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The drawing over its filled silhouette in a random colour: line art's enclosed areas
    (white after compositing) become solid, like Fashion-MNIST's filled articles."""
    from scipy.ndimage import binary_fill_holes

    arr = np.asarray(on_background(img))
    ink = np.any(arr < 200, axis=2) | (np.asarray(img.getchannel("A")) > 128)
    mask = binary_fill_holes(ink)
    tone = tuple(int(v) for v in rng.integers(60, 200, 3)) if rng.random() < 0.5 else (128,) * 3
    under = Image.new("RGBA", img.size, (0, 0, 0, 0))
    under.paste(
        Image.new("RGBA", img.size, (*tone, 255)), mask=Image.fromarray(mask.astype(np.uint8) * 255)
    )
    return Image.alpha_composite(under, img)


def _thick(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Dark strokes thickened by a min filter on the picture composited on white."""
    k = int(rng.choice([3, 5, 7]))
    rgb = on_background(img).filter(ImageFilter.MinFilter(k))
    out = rgb.convert("RGBA")
    out.putalpha(img.getchannel("A").filter(ImageFilter.MaxFilter(k)))
    return out


def view(picture: Picture, kind: str, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One view of a drawing as an upload (RGB uint8): 'drawing' (as distributed, on white),
    'product_shot' (half size, lower left), the PRESENTATIONS (BACKDROPS, 'small'),
    'augment' (training.emoji.render.augment),
    'filled' and 'thick' (with random scale and position), 'style' (redrawn as line art or a
    silhouette: training.emoji.render.style_view)."""
    if kind == "style":
        return style_view(picture, RENDER, rng)
    if kind in BACKDROPS:
        return np.asarray(on_background(load_rgba(picture, RENDER), BACKDROPS[kind]), np.uint8)
    if kind == "small":
        canvas = Image.new("RGBA", (3 * RENDER, 3 * RENDER), (0, 0, 0, 0))
        canvas.paste(load_rgba(picture, RENDER), (RENDER, RENDER))
        return np.asarray(on_background(canvas), dtype=np.uint8)
    if kind in ("drawing", "product_shot"):
        img = load_rgba(picture, RENDER)
        if kind == "product_shot":
            small = img.resize((RENDER // 2, RENDER // 2), Image.Resampling.BILINEAR)
            img = Image.new("RGBA", img.size, (0, 0, 0, 0))
            img.paste(small, (RENDER // 16, RENDER * 3 // 8))
        return np.asarray(on_background(img), dtype=np.uint8)
    if kind == "augment":
        return augment(picture, RENDER // 2, rng)
    img = load_rgba(picture, RENDER)
    img = _filled(img, rng) if kind == "filled" else _thick(img, rng)
    side = round(RENDER * float(rng.uniform(0.6, 1.0)))
    canvas = Image.new("RGBA", (RENDER, RENDER), (0, 0, 0, 0))
    off = RENDER - side
    canvas.paste(
        img.resize((side, side), Image.Resampling.BILINEAR),
        (int(rng.integers(0, off + 1)), int(rng.integers(0, off + 1))),
    )
    if rng.random() < 0.5:
        canvas = ImageOps.mirror(canvas)
    return np.asarray(on_background(canvas), dtype=np.uint8)


@dataclass(frozen=True)
class Drawings:
    """Branch embeddings of every view of the mapped clothing drawings."""

    emb: F32  # N x B x D
    y: I64
    style: npt.NDArray[np.str_]
    item: npt.NDArray[np.str_]  # short name
    kind: npt.NDArray[np.str_]


def embed_drawings(embedder: BranchEmbedder, per_kind: dict[str, int], seed: int) -> Drawings:
    pics = [p for p in load_catalog() if p.fashion_class is not None]
    rng = np.random.default_rng(seed)
    images, y, style, item, kind = [], [], [], [], []
    for p in pics:
        for k, n in per_kind.items():
            for _ in range(n):
                images.append(view(p, k, rng))
                y.append(FASHION_CLASSES.index(str(p.fashion_class)))
                style.append(p.style)
                item.append(p.short_name)
                kind.append(k)
    return Drawings(embedder(images), np.array(y), np.array(style), np.array(item), np.array(kind))
