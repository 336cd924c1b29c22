"""Emoji pictures -> RGB arrays as the server would see them, plus training augmentation.

PNG styles (64 px) and SVG styles (rasterised with resvg-py at the requested size) are
composited on white and resized with the same rule as ``app.imaging`` (bilinear). Augmentation
varies what differs between drawing styles: colour, line weight, scale/position, background
and resolution. Style views (``style_view``) redraw a picture in another drawing technique: line
art (its outline and colour boundaries in black on white) or a silhouette (its shape filled
black, colour boundaries left white), so a head trained on colour emoji also sees the same
object drawn the way line-art and high-contrast sets draw it.
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


# Style views. A colour boundary is where neighbouring pixels differ by more than this much in
# some RGB channel (0-255); the PNG styles are found at their own 64 px and scaled up, so the
# blur of upscaling does not hide their lines.
EDGE_STEP = 40
PNG_SIZE = 64


def _max_filter(mask: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    if k <= 1:
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MaxFilter(k))
    return np.asarray(im) > 127


def _min_filter(mask: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    im = Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(k))
    return np.asarray(im) > 127


def _boundaries(img: Image.Image) -> npt.NDArray[np.bool_]:
    """Colour boundaries inside the drawing plus its outline, as a boolean map."""
    rgba = np.asarray(img, dtype=np.float32)
    alpha = rgba[..., 3:4] / 255.0
    rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
    step = np.zeros(rgb.shape[:2], np.float32)
    step[:, 1:] = np.abs(np.diff(rgb, axis=1)).max(axis=2)
    step[1:, :] = np.maximum(step[1:, :], np.abs(np.diff(rgb, axis=0)).max(axis=2))
    shape = rgba[..., 3] > 127
    outline = shape & ~_min_filter(shape, 3)
    return np.asarray(((step > EDGE_STEP) & shape) | outline)


def drawing_lines(
    picture: Picture, size: int, img: Image.Image | None = None
) -> npt.NDArray[np.bool_]:
    """The picture's line map at `size` (`img`: the picture already loaded at that size)."""
    if picture.path.suffix.lower() == ".svg":
        return _boundaries(img if img is not None else load_rgba(picture, size))
    small = _boundaries(load_rgba(picture, PNG_SIZE))
    up = Image.fromarray(small.astype(np.uint8) * 255).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(np.asarray(up) > 80)


def line_art(picture: Picture, size: int, weight: int = 1) -> Image.Image:
    """Black lines on a transparent canvas; `weight` thickens them (an odd filter size)."""
    lines = drawing_lines(picture, size)
    out = np.zeros((size, size, 4), np.uint8)
    out[_max_filter(lines, weight)] = (0, 0, 0, 255)
    return Image.fromarray(out, "RGBA")


def silhouette(picture: Picture, size: int, weight: int = 1) -> Image.Image:
    """The shape filled black, inner colour boundaries white (like a high-contrast icon set)."""
    img = load_rgba(picture, size)
    lines = drawing_lines(picture, size, img)
    shape = np.asarray(img)[..., 3] > 127
    inner = _max_filter(lines, weight) & _min_filter(shape, 7)
    out = np.zeros((size, size, 4), np.uint8)
    out[shape] = (0, 0, 0, 255)
    out[inner] = (255, 255, 255, 255)
    return Image.fromarray(out, "RGBA")


def style_view(picture: Picture, size: int, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """One random style view: line art or silhouette (even odds), scaled to 70-100% and placed
    at random on white, mirrored half the time; size x size x 3 uint8."""
    svg = picture.path.suffix.lower() == ".svg"
    if rng.random() < 0.5:
        img = line_art(picture, size, int(rng.choice([1, 3, 3, 5])) if svg else 1)
    else:
        img = silhouette(picture, size, int(rng.choice([1, 3, 3])))
    side = max(8, round(size * float(rng.uniform(0.7, 1.0))))
    img = img.resize((side, side), Image.Resampling.BILINEAR)
    off = size - side
    x, y = (int(rng.integers(0, off + 1)), int(rng.integers(0, off + 1))) if off else (0, 0)
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(img, (x, y))
    canvas = on_background(layer)
    if rng.random() < 0.5:
        canvas = ImageOps.mirror(canvas)
    return np.asarray(canvas, dtype=np.uint8)
