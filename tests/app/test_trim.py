"""The trim-and-centre input policy (app/trim.py, InputSpec.trim) on real decoded pictures."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from app import imaging
from app.bundle import InputSpec
from app.decode_guard import DecodeBudget
from app.errors import PayloadTooLarge
from app.imaging import ImageLimits, prepare
from app.polarity import should_invert
from app.trim import (
    FRAME_MAX_PIXELS,
    RING_SAMPLES,
    TOLERANCE,
    _border,
    backdrop,
    background,
    frame_object,
    ink_on_paper,
    light_ink,
    sampled,
    trim_and_centre,
    whiten_background,
)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _shoe_on_white(mode: str = "RGB") -> Image.Image:
    """A dark, wide object in the lower left of a large white picture."""
    img = Image.new(mode, (300, 200), "white")
    ImageDraw.Draw(img).rectangle((20, 120, 139, 179), fill="black")  # 120 x 60
    return img


def test_trim_crops_to_the_object_and_centres_it_in_a_square() -> None:
    out = trim_and_centre(_shoe_on_white())
    assert out.size == (120, 120)
    a = np.asarray(out.convert("L"))
    rows = np.flatnonzero((a < 128).any(axis=1))
    cols = np.flatnonzero((a < 128).any(axis=0))
    assert (cols.min(), cols.max()) == (0, 119)  # the longer side is filled
    assert (rows.min(), rows.max()) == (30, 89)  # centred vertically, padded with white
    assert a[0, 0] == 255


def test_gray_pictures_and_uniform_coloured_backgrounds() -> None:
    out = trim_and_centre(_shoe_on_white("L"))
    assert out.mode == "L" and out.size == (120, 120)
    img = Image.new("RGB", (80, 80), (30, 90, 200))
    ImageDraw.Draw(img).ellipse((50, 50, 69, 59), fill=(255, 255, 0))
    out = trim_and_centre(img)
    assert out.size == (20, 20)
    assert out.getpixel((0, 0)) == (30, 90, 200)


def test_objects_that_already_span_the_picture_are_left_exactly_as_they_are() -> None:
    # Fashion-MNIST-like: the object fills the picture's height, a margin on the sides.
    img = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img).rectangle((8, 0, 19, 27), fill=200)
    assert trim_and_centre(img) is img
    img2 = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(img2).rectangle((8, 4, 19, 23), fill=200)  # 20 of 28 rows: trimmed
    assert trim_and_centre(img2).size == (20, 20)


def test_scenes_and_blank_pictures_are_left_alone() -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert background(noise) is None
    assert trim_and_centre(noise) is noise
    blank = Image.new("RGB", (50, 40), "white")
    assert trim_and_centre(blank) is blank


def test_prepare_applies_trim_only_when_the_bundle_asks() -> None:
    base = {"height": 28, "width": 28, "channels": 1, "color": "gray", "invert": "auto"}
    old = InputSpec.model_validate(base)  # metadata written before the field existed
    assert old.trim is False
    trimmed = InputSpec.model_validate({**base, "trim": True})
    data = _png(_shoe_on_white())
    plain = prepare(data, old, ImageLimits()).array[..., 0]
    fitted = prepare(data, trimmed, ImageLimits()).array[..., 0]
    # Polarity is decided on the whole picture (white border -> inverted) in both cases.
    assert plain[0, 0] < 50 and fitted[0, 0] < 50
    lit = lambda a: int((a > 128).sum())  # noqa: E731 - object pixels after inversion
    assert lit(fitted) > 3 * lit(plain)
    cols = np.flatnonzero((fitted > 128).any(axis=0))
    assert cols.min() <= 1 and cols.max() >= 26  # fitted by its longer side


# --- frame policy (InputSpec.frame): drawings re-framed the way emoji art is -----------------


def _bird_on(canvas: tuple[int, int], at: tuple[int, int], side: int = 60) -> Image.Image:
    """A red disc of `side` pixels at `at` on a white canvas."""
    img = Image.new("RGB", canvas, "white")
    ImageDraw.Draw(img).ellipse((*at, at[0] + side - 1, at[1] + side - 1), fill=(200, 30, 30))
    return img


def _extent(img: Image.Image) -> tuple[int, int, int, int]:
    box = np.asarray(img.convert("L")) < 200
    rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def test_frame_centres_a_small_drawing_at_the_requested_share() -> None:
    out = frame_object(_bird_on((600, 600), (40, 400)), 0.9)
    assert out.size == (67, 67)  # 60 / 0.9
    left, top, right, bottom = _extent(out)
    assert (right - left + 1, bottom - top + 1) == (60, 60)
    assert left in (3, 4) and top in (3, 4)  # centred
    assert out.getpixel((0, 0)) == (255, 255, 255)  # padded with the background


def test_frame_brings_back_a_drawing_the_centre_crop_would_cut() -> None:
    # Filling the height of a 3:1 picture, at its left end: the centre square misses it.
    wide = _bird_on((600, 200), (0, 0), side=200)
    out = frame_object(wide, 0.9)
    assert out.size == (222, 222)
    assert _extent(out)[2] - _extent(out)[0] + 1 == 200
    # Non-square models: the canvas takes the model's aspect (width/height 2).
    out2 = frame_object(_bird_on((300, 300), (10, 10)), 0.9, aspect=2.0)
    assert out2.size == (133, 67)


def test_frame_leaves_framed_drawings_scenes_and_blank_pictures_exactly_as_they_are() -> None:
    framed = _bird_on((100, 100), (10, 10), side=80)  # 0.8 of the view, inside it
    assert frame_object(framed, 0.9) is framed
    # 0.8 of the centre square of a 4:3 picture, inside it: the crop already shows it well.
    assert frame_object(_bird_on((400, 300), (80, 30), side=240), 0.9).size == (400, 300)
    rng = np.random.default_rng(0)
    scene = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    assert frame_object(scene, 0.9) is scene
    blank = Image.new("RGB", (90, 60), "white")
    assert frame_object(blank, 0.9) is blank


def test_frame_bounds_its_work_on_thin_giants() -> None:
    # Too many pixels to look for the object (decoding could not reduce it): as it is.
    thin = Image.new("L", (2_100_000, 2), 255)
    assert frame_object(thin, 0.9) is thin
    # A long object within the pixel cap is shrunk before centring: the canvas stays small.
    line = Image.new("L", (40_000, 20), 255)
    ImageDraw.Draw(line).line([(100, 10), (39_900, 10)], fill=0, width=3)
    out = frame_object(line, 0.5)
    assert max(out.size) <= 2 * 1024 + 2
    # A one-pixel object: a one-pixel canvas, which the resize then scales like any picture.
    dot = Image.new("RGB", (500, 500), "white")
    dot.putpixel((400, 30), (0, 0, 0))
    assert frame_object(dot, 0.88).size == (1, 1)


def test_frame_is_declared_only_for_centre_cropping_models_without_trim() -> None:
    base = {"height": 224, "width": 224, "channels": 3, "color": "rgb"}
    crop = {"mode": "center_crop"}
    assert InputSpec.model_validate({**base, "resize": crop}).frame is None
    assert InputSpec.model_validate({**base, "resize": crop, "frame": 0.88}).frame == 0.88
    for bad in (
        {**base, "frame": 0.88},  # stretch
        {**base, "resize": crop, "frame": 0.88, "trim": True},
        {**base, "resize": crop, "frame": 0.3},
        {**base, "resize": crop, "frame": 1.2},
    ):
        with pytest.raises(ValueError):
            InputSpec.model_validate(bad)


def test_prepare_frames_only_when_the_bundle_asks() -> None:
    base = {"height": 64, "width": 64, "channels": 3, "color": "rgb"}
    spec = {**base, "resize": {"mode": "center_crop"}}
    data = _png(_bird_on((600, 600), (40, 400)))
    plain = prepare(data, InputSpec.model_validate(spec), ImageLimits()).array
    framed = prepare(data, InputSpec.model_validate({**spec, "frame": 0.9}), ImageLimits()).array
    red = lambda a: int(((a[..., 0] > 128) & (a[..., 1] < 100)).sum())  # noqa: E731
    assert red(framed) > 20 * red(plain)


# --- background policy (InputSpec.background = "white") ---------------------------------------


def _ringed_disc(bg: tuple[int, int, int]) -> Image.Image:
    """A red disc with a black outline on `bg`; inside the outline a patch of `bg` colour."""
    img = Image.new("RGB", (64, 64), bg)
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 8, 55, 55), fill=(200, 30, 30), outline=(0, 0, 0), width=2)
    draw.rectangle((28, 28, 35, 35), fill=bg)
    return img


def test_whiten_paints_the_background_touching_the_border_white() -> None:
    out = whiten_background(_ringed_disc((120, 160, 90)))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((63, 5)) == (255, 255, 255)
    assert out.getpixel((20, 32)) == (200, 30, 30)  # the object is untouched,
    assert out.getpixel((31, 31)) == (120, 160, 90)  # its own patch of that colour too
    gray = whiten_background(_ringed_disc((90, 90, 90)).convert("L"))
    assert gray.mode == "L" and gray.getpixel((0, 0)) == 255


def test_whiten_leaves_white_backgrounds_scenes_and_blank_pictures_alone() -> None:
    white = _ringed_disc((255, 255, 255))
    assert whiten_background(white) is white
    rng = np.random.default_rng(1)
    scene = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert whiten_background(scene) is scene


def test_whiten_is_bounded_on_a_maze() -> None:
    """Nested walls with one gap each (a corridor hundreds of pixels long): the flood, capped
    at width + height steps, returns; the open border region is white, no wall pixel changed."""
    a = np.full((101, 101), 60, np.uint8)
    for k in range(2, 50, 4):  # concentric black squares with one gap each
        a[k, k : 101 - k] = a[100 - k, k : 101 - k] = 0
        a[k : 101 - k, k] = a[k : 101 - k, 100 - k] = 0
        a[k, k + 2] = 60
    out = np.asarray(whiten_background(Image.fromarray(a)))
    assert out[0, 0] == 255 and (out == 0).sum() == (a == 0).sum()


def test_prepare_whitens_only_when_the_bundle_asks() -> None:
    spec = {"height": 32, "width": 32, "channels": 3, "color": "rgb"}
    data = _png(_ringed_disc((128, 128, 128)))
    plain = prepare(data, InputSpec.model_validate(spec), ImageLimits()).array
    white = prepare(data, InputSpec.model_validate({**spec, "background": "white"}), ImageLimits())
    assert plain[0, 0].tolist() == [128, 128, 128]
    assert white.array[0, 0].tolist() == [255, 255, 255]
    assert InputSpec.model_validate(spec).background == "as_is"
    with pytest.raises(ValueError):
        InputSpec.model_validate({**spec, "background": "black"})


# A Fashion-MNIST-like bundle: gray, trimmed, inverted when the border is light.
PRODUCTS = {
    "height": 28,
    "width": 28,
    "channels": 1,
    "color": "gray",
    "invert": "auto",
    "trim": True,
    "resize": {"mode": "letterbox", "pad_value": 0},
}


def _shirt_on(backdrop: tuple[int, int, int], shirt: tuple[int, int, int]) -> Image.Image:
    """A 'shirt' (a filled 200x100 rectangle) in the middle of a 600x400 picture on
    `backdrop`: trimmed, it spans its square's width with backdrop above and below."""
    img = Image.new("RGB", (600, 400), backdrop)
    ImageDraw.Draw(img).rectangle((200, 150, 399, 249), fill=shirt)
    return img


def test_whiten_paints_black_for_a_picture_inverted_for_a_light_on_dark_model() -> None:
    # the background as the model sees it once inverted: white paper is black
    out = whiten_background(_ringed_disc((90, 90, 90)), white=0)
    assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((20, 32)) == (200, 30, 30)
    near_black = _ringed_disc((10, 10, 10))
    assert whiten_background(near_black, white=0) is near_black


def test_whiten_takes_the_background_read_before_trimming() -> None:
    """A trimmed object fills its square: its own border is mostly object, so the colour read on
    the whole picture is what the flood starts from (at the border pixels of that colour)."""
    trimmed = Image.new("RGB", (40, 40), (120, 160, 90))
    ImageDraw.Draw(trimmed).rectangle((0, 5, 39, 34), fill=(20, 20, 200))
    assert background(trimmed) is None
    assert whiten_background(trimmed) is trimmed
    out = whiten_background(trimmed, bg=(120, 160, 90))
    assert out.getpixel((20, 0)) == (255, 255, 255) and out.getpixel((20, 20)) == (20, 20, 200)


def test_a_gray_model_paints_a_coloured_backdrop_black_and_keeps_an_object_of_its_gray() -> None:
    """Fashion-MNIST's product shots were on white, inverted to black. A shirt on a backdrop of
    the same gray level but another colour: painted in colour, the backdrop goes black (the
    model's background) and the shirt stays; painting in gray would take both."""
    backdrop, shirt = (200, 120, 120), (96, 140, 200)  # gray levels 144 and 134

    def gray(c: tuple[int, int, int]) -> int:
        return int(Image.new("RGB", (1, 1), c).convert("L").getpixel((0, 0)))  # type: ignore[arg-type]

    assert abs(gray(backdrop) - gray(shirt)) <= TOLERANCE  # one colour to a gray flood
    data = _png(_shirt_on(backdrop, shirt))
    spec = InputSpec.model_validate({**PRODUCTS, "background": "white"})
    got = prepare(data, spec, ImageLimits())
    a = got.array[..., 0]
    assert got.info.inverted
    assert a[0, 14] == 0 and a[27, 14] == 0  # the backdrop: painted, then black
    assert 100 < a[14, 14] < 140  # the shirt's gray, inverted (255 - 134)
    plain = prepare(data, InputSpec.model_validate(PRODUCTS), ImageLimits()).array[..., 0]
    # without the policy the gray trim sees no object (one gray level): the whole picture,
    # letterboxed, with the backdrop's gray inverted (255 - 144) beside the shirt
    assert 100 < plain[14, 2] < 125


def test_a_product_filling_the_frame_has_its_backdrop_painted_but_a_drawing_model_does_not() -> (
    None
):
    """A product shot filling the frame touches the border on two sides: 70% of the ring is
    backdrop, under UNIFORM_SHARE. A model that trims (product shots) paints that backdrop
    (the corners' colour, most of the ring); a drawing or photo model keeps 0.9, so the same
    picture, like a photo with sky along most of its border, is left as it is."""
    img = Image.new("RGB", (300, 300), (120, 160, 220))
    ImageDraw.Draw(img).rectangle((60, 0, 239, 299), fill=(40, 40, 40))  # top to bottom
    assert background(img) is None and backdrop(img) == (120, 160, 220)
    data = _png(img)
    a = prepare(data, InputSpec.model_validate({**PRODUCTS, "background": "white"}), ImageLimits())
    assert a.array[14, 1, 0] == 0 and a.array[14, 26, 0] == 0  # backdrop: the model's black
    assert a.array[14, 14, 0] > 200  # the dark product, inverted
    plain = prepare(data, InputSpec.model_validate(PRODUCTS), ImageLimits()).array
    assert plain[14, 1, 0] > 40  # without the policy the backdrop's gray stays
    framed = {
        "height": 32,
        "width": 32,
        "channels": 3,
        "color": "rgb",
        "frame": 0.88,
        "resize": {"mode": "center_crop"},
    }
    spec = InputSpec.model_validate({**framed, "background": "white"})
    kept = prepare(data, spec, ImageLimits()).array
    assert kept[16, 1].tolist() == [120, 160, 220]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_gray_model_on_white_is_prepared_exactly_as_without_the_policy(fmt: str) -> None:
    img = _shirt_on((255, 255, 255), (96, 140, 200))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=90)
    spec = InputSpec.model_validate(PRODUCTS)
    plain = prepare(buf.getvalue(), spec, ImageLimits())
    white = prepare(buf.getvalue(), spec.model_copy(update={"background": "white"}), ImageLimits())
    if fmt == "PNG":  # decoded alike; a JPEG is decoded in colour for the policy (not its luma)
        np.testing.assert_array_equal(plain.array, white.array)
    else:
        assert np.abs(plain.array - white.array).max() <= 2


def test_a_trimming_model_keeps_the_detail_of_a_small_object_in_a_large_picture() -> None:
    """Decoding reduces a picture to no less than twice the model input before the policy; a
    model that trims keeps 4x that, so a thin-lined drawing a third of a 672 px picture's side
    keeps most of its lines through trimming, close to the drawing sent cropped."""
    art = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(art).rectangle((30, 30, 193, 193), outline="black", width=3)
    canvas = Image.new("RGB", (672, 672), "white")
    canvas.paste(art, (224, 224))
    spec = InputSpec.model_validate(PRODUCTS)
    small = prepare(_png(canvas), spec, ImageLimits()).array
    alone = prepare(_png(art), spec, ImageLimits()).array
    # mean |difference| 3.6 gray levels (10.5 when decoding kept only twice the input)
    assert np.abs(small - alone).mean() <= 5


def test_a_backdrop_needs_all_four_corners_and_most_of_the_border() -> None:
    img = Image.new("RGB", (100, 100), (200, 200, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle((30, 0, 69, 99), fill=(30, 30, 90))  # 40% of top and bottom edges
    assert backdrop(img) == (200, 200, 200)
    draw.rectangle((0, 0, 9, 9), fill=(30, 30, 90))  # a corner covered by the object
    assert backdrop(img) is None
    wide = Image.new("RGB", (200, 100), (200, 200, 200))
    ImageDraw.Draw(wide).rectangle((10, 0, 189, 99), fill=(30, 30, 90))  # 90% of the long edges
    assert backdrop(wide) is None  # the corners agree, but that colour is 40% of the ring


def _strokes(
    ink: tuple[int, int, int], paper: tuple[int, int, int], size: int = 200
) -> Image.Image:
    """A line drawing: a circle and a cross in 4 px strokes."""
    img = Image.new("RGB", (size, size), paper)
    d = ImageDraw.Draw(img)
    d.ellipse((40, 40, 160, 160), outline=ink, width=4)
    d.line((60, 100, 140, 100), fill=ink, width=4)
    d.line((100, 60, 100, 140), fill=ink, width=4)
    return img


def test_light_ink_on_a_dark_background_is_recognised_and_nothing_else() -> None:
    assert light_ink(_strokes((255, 255, 255), (0, 0, 0)))  # chalk on a blackboard
    assert light_ink(_strokes((240, 240, 240), (20, 40, 90)))  # white on navy
    assert light_ink(_strokes((255, 255, 255), (0, 0, 0)).convert("L").resize((100, 100)))
    assert not light_ink(_strokes((0, 0, 0), (255, 255, 255)))  # ink on paper already
    assert not light_ink(_strokes((230, 40, 40), (0, 0, 0)))  # coloured lines
    filled = Image.new("RGB", (200, 200), "black")
    ImageDraw.Draw(filled).ellipse((40, 40, 160, 160), fill=(250, 250, 250))
    assert not light_ink(filled)  # a filled shape, not lines
    assert not light_ink(Image.new("RGB", (200, 200), "black"))  # blank
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    assert not light_ink(Image.fromarray(noise))  # a scene: no uniform border
    out = np.asarray(ink_on_paper(_strokes((255, 255, 255), (0, 0, 0))))
    assert out[0, 0].tolist() == [255, 255, 255] and out[100, 100].tolist() == [0, 0, 0]


def test_a_drawing_model_sees_light_ink_as_dark_lines_on_white() -> None:
    """White lines on black, for a model trained on dark drawings on white (background
    "white"): painting the black white had left white lines on white."""
    spec = InputSpec.model_validate(
        {
            "height": 64,
            "width": 64,
            "channels": 3,
            "color": "rgb",
            "resize": {"mode": "center_crop"},
            "frame": 0.88,
            "background": "white",
        }
    )
    chalk = _png(_strokes((255, 255, 255), (0, 0, 0)))
    got = prepare(chalk, spec, ImageLimits())
    paper = prepare(_png(_strokes((0, 0, 0), (255, 255, 255))), spec, ImageLimits())
    assert got.info.inverted and not paper.info.inverted
    assert np.abs(got.array - paper.array).mean() < 4  # the same drawing
    # a model without the drawing policy, or one that inverts itself, is not touched
    plain = prepare(chalk, spec.model_copy(update={"background": "as_is"}), ImageLimits())
    assert not plain.info.inverted and plain.array[0, 0].tolist() == [0, 0, 0]


def test_the_border_ring_of_a_thin_giant_is_sampled() -> None:
    """Round 17: an 8 x 5,000,000 picture's ring was read whole (10 M pixels, a 0.5 s median,
    three times per picture). Each side is sampled to at most RING_SAMPLES pixels; the colour
    found is the same."""
    thin = Image.new("RGB", (8, 200_000), (10, 20, 30))
    ImageDraw.Draw(thin).rectangle((2, 1000, 5, 199_000), fill=(250, 250, 250))
    ring = _border(thin)
    assert len(ring) <= 2 * 8 + 2 * RING_SAMPLES
    assert background(thin) == (10, 20, 30)
    small = Image.new("RGB", (300, 200), (10, 20, 30))
    assert len(_border(small)) == 2 * 300 + 2 * 198  # ordinary pictures: every ring pixel


def test_trimming_and_the_polarity_ring_bound_their_work_on_thin_giants() -> None:
    """Round 20: for `products` an 8 x 5,000,000 picture (one dot every 1,000 rows) cost 1.1 s
    of preparation: trimming searched all 40 M pixels for its object (framing had a pixel cap,
    trimming none) and the polarity rule took the median of its whole 10 M-pixel ring. Trimming
    now leaves a picture over FRAME_MAX_PIXELS as it is, as framing does, and every side of
    the polarity ring is sampled like trimming's."""
    thin = Image.new("L", (8, FRAME_MAX_PIXELS // 8 + 8), 0)
    thin.putpixel((4, 1000), 255)
    assert trim_and_centre(thin) is thin
    within = Image.new("L", (8, FRAME_MAX_PIXELS // 8 - 8), 0)
    within.putpixel((4, 1000), 255)
    assert trim_and_centre(within).size == (1, 1)  # within the cap: trimmed, as before
    side = sampled(thin, (0, 1, 1, thin.height - 1))
    assert side.size == (1, RING_SAMPLES)
    assert sampled(thin, (0, 0, 8, 1)).size == (8, 1)  # short strips are read whole
    spec = InputSpec(height=28, width=28, channels=1, color="gray", invert="auto", trim=True)
    # a light border decided from the samples: inverted, as a light ring read whole would be
    light = Image.new("L", (8, 5_000_000), 255)
    assert should_invert(light, spec) and not should_invert(ImageOps.invert(light), spec)


def test_preparation_counts_against_the_request_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 20: preparing (trimming, framing, painting, resizing) was outside the request's
    CPU budget, which covered decoding only."""

    def slow_trim(img: Image.Image) -> Image.Image:
        t0 = time.thread_time()
        while time.thread_time() - t0 < 0.3:
            pass
        return img

    monkeypatch.setattr(imaging, "trim_and_centre", slow_trim)
    spec = InputSpec(height=28, width=28, channels=1, color="gray", invert="auto", trim=True)
    picture = _png(Image.new("L", (40, 40), 255))
    budget = DecodeBudget(max_pixels=10**9, max_seconds=0.2)
    with pytest.raises(PayloadTooLarge, match="Decoding and preparing"):
        prepare(picture, spec, ImageLimits(), budget)
    assert budget.seconds >= 0.3


def test_a_one_colour_picture_is_reported_blank() -> None:
    """Round 20: white, black and transparent pictures got confident answers ("1" at 0.90 on
    digits) with nothing saying the picture was empty. `blank` says so: one colour as the
    model sees it, JPEG noise included; a drawing, a dot the model sees, a photo are not."""
    gray = InputSpec(height=28, width=28, channels=1, color="gray", invert="auto", trim=True)
    rgb = InputSpec.model_validate(
        {"height": 64, "width": 64, "channels": 3, "color": "rgb", "frame": 0.9,
         "background": "white", "resize": {"mode": "center_crop"}}
    )  # fmt: skip

    def is_blank(img: Image.Image, spec: InputSpec, fmt: str = "PNG") -> bool:
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=60) if fmt == "JPEG" else img.save(buf, format=fmt)
        return prepare(buf.getvalue(), spec, ImageLimits()).info.blank

    for spec in (gray, rgb):
        assert is_blank(Image.new("RGB", (64, 64), "white"), spec)
        assert is_blank(Image.new("RGB", (64, 64), "black"), spec)
        assert is_blank(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), spec)
        assert is_blank(Image.new("RGB", (300, 200), (90, 120, 200)), spec, "JPEG")
        drawn = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(drawn).ellipse((16, 16, 48, 48), outline="black", width=4)
        assert not is_blank(drawn, spec)
        noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        assert not is_blank(Image.fromarray(noise), spec)
    # round 21: what a model that crops sees, not the whole picture: a tall white picture
    # drawn on at the top only is blank to a centre-cropping model, not to one that stretches
    # (and to one that trims, its solid square fills the whole input: blank too, rightly)
    tall = Image.new("RGB", (224, 2000), "white")
    ImageDraw.Draw(tall).rectangle((50, 20, 170, 140), fill="black")
    cropping = InputSpec.model_validate(
        {"height": 224, "width": 224, "channels": 3, "color": "rgb",
         "resize": {"mode": "center_crop"}}
    )  # fmt: skip
    stretching = InputSpec(height=28, width=28, channels=1, color="gray")
    assert is_blank(tall, cropping) and not is_blank(tall, stretching) and is_blank(tall, gray)
