"""Emoji pictures -> RGB arrays as the server would see them, plus training augmentation.

PNG styles (64 px) and SVG styles (rasterised with resvg-py at the requested size) are
composited on white and resized with the same rule as ``app.imaging`` (bilinear). Augmentation
varies what differs between drawing styles: colour, line weight, scale/position, background
and resolution.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFilter, ImageOps

from training.emoji.catalog import Picture

WHITE = (255, 255, 255, 255)


def load_rgba(picture: Picture, size: int) -> Image.Image:
    """The picture as an RGBA image of size x size (SVG rendered at that size, PNG resized)."""
    if picture.path.suffix.lower() == ".svg":
        png = _render_svg(str(picture.path), size)
        img = Image.open(io.BytesIO(png)).convert("RGBA")
    else:
        img = Image.open(picture.path).convert("RGBA")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


@lru_cache(maxsize=4)
def _resvg() -> object:
    import resvg_py  # train extra; imported lazily so the catalogue works without it

    return resvg_py


def _render_svg(path: str, size: int) -> bytes:
    mod = _resvg()
    png = mod.svg_to_bytes(  # type: ignore[attr-defined]
        svg_path=path, width=size, height=size, skip_system_fonts=True
    )
    return bytes(png)


def on_background(img: Image.Image, colour: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Composite an RGBA image on a solid colour (white, as the server flattens alpha)."""
    bg = Image.new("RGBA", img.size, (*colour, 255))
    return Image.alpha_composite(bg, img).convert("RGB")


def base_array(picture: Picture, size: int) -> npt.NDArray[np.uint8]:
    """The un-augmented picture on white, size x size x 3 uint8 (the evaluation view)."""
    return np.asarray(on_background(load_rgba(picture, size)), dtype=np.uint8)


def _hue_shift(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    alpha = img.getchannel("A")
    hsv = np.asarray(img.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(rng.integers(0, 256))) % 256
    sat = hsv[..., 1].astype(np.float32) * float(rng.uniform(0.3, 1.3))
    hsv[..., 1] = np.clip(sat, 0, 255).astype(np.uint8)
    out = Image.fromarray(hsv, mode="HSV").convert("RGBA")
    out.putalpha(alpha)
    return out


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    kind = rng.random()
    if kind < 0.4:
        colour = (255, 255, 255)
    elif kind < 0.7:
        colour = tuple(int(v) for v in rng.integers(190, 256, 3))
    elif kind < 0.85:
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    else:  # vertical gradient between two random colours
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        grad = (a * (1 - t) + b * t).astype(np.uint8)
        return Image.fromarray(np.broadcast_to(grad, (size, size, 3)).copy()).convert("RGBA")
    return Image.new("RGBA", (size, size), (*colour, 255))  # type: ignore[arg-type]


def augment(picture: Picture, size: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One random training view of the picture, size x size x 3 uint8."""
    # Resolution: render small and upscale sometimes (the PNG styles are only 64 px).
    render = int(rng.choice([48, 64, 96, size]))
    img = load_rgba(picture, render)
    if rng.random() < 0.5:
        img = _hue_shift(img, rng)
    if rng.random() < 0.15:
        gray = ImageOps.grayscale(img.convert("RGB")).convert("RGBA")
        gray.putalpha(img.getchannel("A"))
        img = gray
    weight = rng.random()
    if weight < 0.2:  # thicker strokes
        img = img.filter(ImageFilter.MaxFilter(3))
    elif weight < 0.3:  # thinner strokes (erodes the alpha mask)
        a = img.getchannel("A").filter(ImageFilter.MinFilter(3))
        img.putalpha(a)
    # Scale and position on the canvas.
    scale = float(rng.uniform(0.55, 1.0))
    side = max(8, round(size * scale))
    img = img.resize((side, side), Image.Resampling.BILINEAR)
    canvas = _background(size, rng)
    off = size - side
    x, y = (int(rng.integers(0, off + 1)), int(rng.integers(0, off + 1))) if off else (0, 0)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(img, (x, y))
    canvas = Image.alpha_composite(canvas, layer)
    if rng.random() < 0.5:
        canvas = ImageOps.mirror(canvas)
    return np.asarray(canvas.convert("RGB"), dtype=np.uint8)
