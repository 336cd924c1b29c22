"""Trim-and-centre input policy (InputSpec.trim): how Fashion-MNIST's pictures were made.

Fashion-MNIST's product photos were trimmed to the object, fitted by their longer side and
centred; a real product picture usually is not. For a picture on a uniform background (the
outermost pixel ring nearly one colour) this crops to the object's bounding box and pads the
shorter side with that background colour so the object is centred in a square. Pictures
without a uniform background (photos of scenes), and objects that already span the picture,
are returned unchanged. Pillow only.

The frame policy (InputSpec.frame, `frame_object`) is trim's cousin for models trained on
drawings framed one way (emoji art: the object spans about 0.9 of the picture). A drawing on a
uniform background whose object is small in the model's view, or lies partly outside the
centre crop, is cropped to the object and centred so that it spans `fill` of the model's view;
a picture already framed like that, a photo of a scene and a blank picture are unchanged.
`whiten_background` (InputSpec.background = "white") paints such a picture's background white,
as the emoji were flattened for training (black, white's inverse, for models that invert:
Fashion-MNIST's product shots were on white before the data set inverted them).
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageChops, ImageOps

from app.bundle import InputSpec

# A pixel belongs to the object when any channel differs from the background by more than this.
TOLERANCE: Final = 24
# An object spanning at least this share of the picture along either side is already fitted
# (Fashion-MNIST's own images are): it is left exactly as it is.
FITTED: Final = 0.95
# The border counts as uniform when at least this share of its pixels is within TOLERANCE of
# its median colour.
UNIFORM_SHARE: Final = 0.9
# For the backdrop paint of a model that trims (product shots: InputSpec.trim with background
# "white"), a product photographed filling the frame touches the border on several sides: the
# backdrop is then the colour of all four corners, if it covers at least this share of the
# ring (`backdrop`). Only pixels of that colour connected to the border are painted. Models on
# drawings and photos (frame) keep UNIFORM_SHARE, so a photo's sky is never painted.
BACKDROP_SHARE: Final = 0.5
# The square canvas's side at most (pixels): the models that trim take inputs of tens of
# pixels, and decoding already reduced ordinary pictures far below this.
MAX_SIDE: Final = 2048


# Pixels read per side of the border ring at most: a longer side is sampled evenly (nearest).
# An 8 x 5,000,000 picture's ring is 10 M pixels: its median took 0.5 s, three times per
# picture (fuzz round 17); ordinary pictures are read whole, as before.
RING_SAMPLES: Final = 4096


def sampled(img: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """The strip `box` of `img`, sampled evenly (nearest) to at most RING_SAMPLES pixels along
    each axis, reading only the pixels it keeps (cropping a 1 x 5,000,000 column first took
    0.2 s, fuzz round 20). Ordinary pictures' strips are read whole."""
    w, h = box[2] - box[0], box[3] - box[1]
    if max(w, h) <= RING_SAMPLES:
        return img.crop(box)
    size = (min(w, RING_SAMPLES), min(h, RING_SAMPLES))
    return img.resize(size, Image.Resampling.NEAREST, box=box)


def _side(img: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    return np.asarray(sampled(img, box)).reshape(-1, len(img.getbands()))


def _border(img: Image.Image) -> np.ndarray:
    """The outermost pixel ring, one row per pixel (channels last), each side sampled to at
    most RING_SAMPLES pixels. Only the ring is read: no copy of a (possibly large) picture."""
    w, h = img.size
    boxes = [(0, 0, w, 1), (0, h - 1, w, h)]
    if h > 2:  # a picture one or two rows high is all top and bottom (a thin giant reduced)
        boxes += [(0, 1, 1, h - 1), (w - 1, 1, w, h - 1)]
    return np.concatenate([_side(img, b) for b in boxes], axis=0).astype(np.int16)


def _near(colour: tuple[int, ...], value: int) -> bool:
    """Every channel of `colour` within TOLERANCE of `value`."""
    return max(abs(v - value) for v in colour) <= TOLERANCE


def background(img: Image.Image) -> tuple[int, ...] | None:
    """The background colour if the border is uniform, else None."""
    ring = _border(img)
    median = np.median(ring, axis=0).astype(np.int16)
    close = np.all(np.abs(ring - median) <= TOLERANCE, axis=1)
    if float(close.mean()) < UNIFORM_SHARE:
        return None
    return tuple(int(v) for v in median)


def backdrop(img: Image.Image) -> tuple[int, ...] | None:
    """A product shot's backdrop: the uniform background, or else the colour the four corner
    pixels share when it covers at least BACKDROP_SHARE of the border ring; None otherwise."""
    bg = background(img)
    if bg is not None or img.width < 2 or img.height < 2:
        return bg
    w, h = img.size
    spots = ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))
    corners = np.asarray([img.getpixel(xy) for xy in spots], np.int16).reshape(4, -1)
    median = np.median(corners, axis=0).astype(np.int16)
    if int(np.abs(corners - median).max()) > TOLERANCE:
        return None
    close = np.all(np.abs(_border(img) - median) <= TOLERANCE, axis=1)
    return tuple(int(v) for v in median) if float(close.mean()) >= BACKDROP_SHARE else None


def object_box(
    img: Image.Image,
) -> tuple[int | tuple[int, ...], tuple[int, int, int, int]] | None:
    """(background fill, the object's bounding box) for a picture on a uniform background;
    None for scenes, blank pictures and pictures under 3 pixels a side."""
    if img.width < 3 or img.height < 3:
        return None
    bg = background(img)
    if bg is None:
        return None
    fill: int | tuple[int, ...] = bg[0] if img.mode == "L" else bg
    # A pixel is the object's where any channel differs from the background by more than
    # TOLERANCE: one lookup table per channel, no full-size copy of the background or of the
    # picture's differences (a 40 MP RGB picture is 120 MB).
    mask: Image.Image | None = None
    for i, v in enumerate(bg):
        band = img if img.mode == "L" else img.getchannel(i)
        far = band.point([255 if abs(x - v) > TOLERANCE else 0 for x in range(256)])
        mask = far if mask is None else ImageChops.lighter(mask, far)
    box = mask.getbbox() if mask is not None else None
    if box is None:  # nothing but background
        return None
    return fill, box


def trim_and_centre(img: Image.Image) -> Image.Image:
    """Crop an 'L' or 'RGB' image to its object and centre it in a square of background.
    Like framing, only on pictures up to FRAME_MAX_PIXELS: a thin giant decoding could not
    reduce (8 x 5,000,000) cost 0.56 s to search for its object (fuzz round 20)."""
    if img.width * img.height > FRAME_MAX_PIXELS:
        return img
    found = object_box(img)
    if found is None:
        return img
    fill, box = found
    left, top, right, bottom = box
    if max((right - left) / img.width, (bottom - top) / img.height) >= FITTED:
        return img
    return centred(img, box, fill, max_side=MAX_SIDE)


def centred(
    img: Image.Image,
    box: tuple[int, int, int, int],
    bg: int | tuple[int, ...],
    *,
    max_side: int,
    fill: float = 1.0,
    aspect: float = 1.0,
) -> Image.Image:
    """The object in `box`, centred on a canvas of background `bg` with width/height `aspect`
    where it spans `fill` of the canvas. An object longer than `max_side` is shrunk first,
    keeping its shape: a long thin one (a line across a 4,000,000x10 picture) would otherwise be
    centred in a canvas of its length, terabytes."""
    obj = img.crop(box)
    if max(obj.size) > max_side:
        obj = obj.reduce(-(-max(obj.size) // max_side))
    height = max(obj.width / aspect, obj.height) / fill
    size = (max(obj.width, round(height * aspect)), max(obj.height, round(height)))
    canvas = Image.new(img.mode, size, bg)
    canvas.paste(obj, ((size[0] - obj.width) // 2, (size[1] - obj.height) // 2))
    return canvas


# An object spanning at least this share of the model's view (and inside it) is framed already.
FRAMED: Final = 0.7
# Framing looks for the object on pictures up to this size (decoding reduced ordinary pictures
# to about twice the model input; a thin giant that could not be reduced is left as it is) and
# shrinks an object longer than FRAME_SIDE before centring it.
FRAME_MAX_PIXELS: Final = 1 << 22
FRAME_SIDE: Final = 1024


def _view(img: Image.Image, aspect: float) -> tuple[float, float, float, float]:
    """The region a centre crop to width/height `aspect` keeps (app.tensorize.resize)."""
    w, h = img.size
    vw, vh = (w, w / aspect) if w / h <= aspect else (h * aspect, h)
    return (w - vw) / 2, (h - vh) / 2, (w + vw) / 2, (h + vh) / 2


def frame_object(img: Image.Image, fill: float, aspect: float = 1.0) -> Image.Image:
    """Centre the object of a picture on a uniform background in a canvas of width/height
    `aspect` where it spans `fill` of the canvas, unless the centre crop already shows it
    whole at `FRAMED` of its size or more. 'L' or 'RGB'."""
    if img.width * img.height > FRAME_MAX_PIXELS:
        return img
    found = object_box(img)
    if found is None:
        return img
    bg, box = found
    left, top, right, bottom = box
    vl, vt, vr, vb = _view(img, aspect)
    inside = left >= vl - 1 and top >= vt - 1 and right <= vr + 1 and bottom <= vb + 1
    if inside and max((right - left) / (vr - vl), (bottom - top) / (vb - vt)) >= FRAMED:
        return img
    return centred(img, box, bg, max_side=FRAME_SIDE, fill=fill, aspect=aspect)


def whiten_background(
    img: Image.Image, white: int = 255, bg: tuple[int, ...] | None = None
) -> Image.Image:
    """Paint a uniform background that is not `white` (255; 0 for a picture already inverted
    for a model trained light-on-dark, where white paper became black) that colour where it
    touches the picture's border (the region of background colour connected to the border
    ring; an object's own pixels of that colour inside its outline stay). `bg`: the background
    colour read on the whole picture before it was cropped to its object (whose border, once
    trimmed, is mostly object); by default this picture's own if its border is uniform. Run at
    model size: the flood grows one pixel a step for at most width + height steps, so a
    maze-like picture costs no more than that."""
    bg = background(img) if bg is None else bg
    if bg is None or _near(bg, white):
        return img
    a = np.asarray(img)
    diff = np.abs(a.astype(np.int16) - np.asarray(bg, np.int16))
    near = (diff.max(axis=-1) if a.ndim == 3 else diff) <= TOLERANCE
    reached = np.zeros_like(near)
    for edge in (np.s_[0, :], np.s_[-1, :], np.s_[:, 0], np.s_[:, -1]):
        reached[edge] = near[edge]
    count = int(reached.sum())
    for _ in range(img.width + img.height):
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown &= near
        new = int(grown.sum())
        if new == count:
            break
        reached, count = grown, new
    out = a.copy()
    out[reached] = white
    return Image.fromarray(out, img.mode)


def to_paint(img: Image.Image, spec: InputSpec) -> tuple[Image.Image, tuple[int, ...] | None]:
    """(the picture to prepare, the background colour to paint at model size or None) for
    InputSpec.background = "white". The colour is read on the whole picture, before trimming
    or framing crop it to its object. None: the policy is off, the picture is a scene, or its
    background is white already. A gray model's colour picture (decode's keep_rgb) stays
    colour only when its background is painted, so that an object of the background's gray
    level survives the flood; otherwise it becomes 'L' exactly as decode would make it."""
    bg = None
    if spec.background == "white":
        bg = backdrop(img) if spec.trim else background(img)
    if bg is None or _near(bg, 255):
        return (img.convert("L") if spec.color == "gray" and img.mode == "RGB" else img), None
    return img, bg


# Light ink on a dark background (chalk on a blackboard, a white-on-black sketch, a 28 px
# bitmap of white strokes): for a model that learnt dark drawings on white (background
# "white", no inversion), painting the dark background white would leave white lines on white.
# The test reads a thumbnail of at most INK_SIDE px: the background's mean under INK_DARK, the
# object (pixels off the background) covering at most INK_COVER of its bounding box (lines,
# not filled shapes such as a colour emoji on black), and its strong pixels (at least half as
# far from the background as the farthest) at least INK_GRAY_SHARE achromatic (channel spread
# at most INK_CHROMA) and INK_LIGHTER brighter than the background (median).
INK_SIDE: Final = 128
INK_DARK: Final = 96
INK_COVER: Final = 0.4
INK_CHROMA: Final = 48
INK_GRAY_SHARE: Final = 0.9
INK_LIGHTER: Final = 96


def light_ink(img: Image.Image) -> bool:
    """Whether `img` is a drawing in light, colourless lines on a uniform dark background."""
    if img.width < 3 or img.height < 3 or img.mode not in ("L", "RGB"):
        return False
    bg = background(img)
    if bg is None or float(np.mean(bg)) > INK_DARK:
        return False
    factor = max(1, -(-max(img.size) // INK_SIDE))
    a = np.asarray(img.reduce(factor) if factor > 1 else img, np.int16)
    if a.ndim == 2:
        a = a[..., None]
    dist = np.abs(a - np.asarray(bg, np.int16)).max(axis=-1)
    obj = dist > TOLERANCE
    if not obj.any():
        return False
    rows, cols = np.nonzero(obj)
    box = obj[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    if float(box.mean()) > INK_COVER:
        return False
    strong = a[dist >= dist.max() / 2]
    gray = (strong.max(axis=-1) - strong.min(axis=-1)) <= INK_CHROMA
    lighter = float(np.median(strong.mean(axis=-1))) - float(np.mean(bg))
    return float(gray.mean()) >= INK_GRAY_SHARE and lighter >= INK_LIGHTER


def ink_on_paper(img: Image.Image) -> Image.Image:
    """A light-ink drawing as dark ink on light paper: gray, inverted, in `img`'s mode."""
    return ImageOps.invert(img.convert("L")).convert(img.mode)
