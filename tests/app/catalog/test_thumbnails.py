"""Catalog thumbnails go through the model inputs' decode: same 16-bit and alpha rules, in
colour whatever the model's colour space, never upscaled."""

from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from app import ingest, strip_plans
from app.bundle import InputSpec, ResizeSpec
from app.imaging import ImageLimits
from app.ingest import DecodedThumbnails, prepare_batch, thumbnails
from tests.images import big_png, exif_payload, loaded_sizes, orientation_entry, png_with_exif_chunk


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _open(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG"
    return img


def test_thumbnails_keep_colour_aspect_and_never_upscale() -> None:
    red = _encode(Image.new("RGB", (400, 300), (220, 20, 20)), "JPEG")
    small = _encode(Image.new("RGB", (20, 12), (20, 20, 220)))
    t_red, t_small = thumbnails([red, small], ImageLimits(), 128)
    img = _open(t_red.jpeg)
    assert img.size == (128, 96) and img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(axis=0)
    assert r > 180 and g < 60 and b < 60
    assert (t_red.info.format, t_red.info.width, t_red.info.height) == ("JPEG", 400, 300)
    assert _open(t_small.jpeg).size == (20, 12)


def test_sixteen_bit_and_alpha_follow_the_ingestion_rules() -> None:
    gray16 = Image.fromarray(np.full((64, 64), 32896, dtype=np.uint16))  # 32896 / 257 = 128
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    t16, talpha = thumbnails([_encode(gray16), _encode(clear)], ImageLimits(), 128)
    assert abs(float(np.asarray(_open(t16.jpeg)).mean()) - 128) < 3
    assert float(np.asarray(_open(talpha.jpeg)).min()) > 245  # transparent -> white


@pytest.mark.slow  # 1.5 s: full runs only
def test_a_thin_giants_thumbnail_is_made_without_a_full_size_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 36's attack: a 100x400,000 RGBA PNG with an EXIF orientation, added to a catalog,
    took the tree to 880 MiB: its thumbnail was decoded at full size (the model input already
    kept only what the model sees). Thumbnails letterbox, so a thin giant is reduced by its
    long side while it is decoded in bands, as digits and products do."""
    data = png_with_exif_chunk(
        big_png(100, 400_000, mode="RGBA"), exif_payload([orientation_entry(6)])
    )
    factors: list[int] = []
    real = strip_plans.reduce_and_convert

    def spy(img: Image.Image, factor: int, *args: Any) -> Image.Image:
        factors.append(factor)
        return real(img, factor, *args)

    monkeypatch.setattr(strip_plans, "reduce_and_convert", spy)
    with loaded_sizes() as loaded:
        [thumb] = thumbnails([data], ImageLimits(), 128)
    assert (100, 400_000) not in loaded
    assert factors == [400_000 // 256]  # not 1: a 120 MB RGB picture, made in bands
    assert (thumb.info.width, thumb.info.height, thumb.info.orientation) == (100, 400_000, 6)
    with Image.open(io.BytesIO(thumb.jpeg)) as img:
        assert img.size == (128, 1)  # upright: the long side across


def _photo(w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(w * h)
    small = rng.integers(0, 255, (h // 200 + 2, w // 200 + 2, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.BILINEAR)


def prepare_with_thumbnails(
    data: list[bytes], spec: InputSpec, limits: ImageLimits, size: int
) -> tuple[list[Any], list[Any]]:
    """What CatalogService.add_checked does."""
    made = DecodedThumbnails(len(data), size)
    prepared = prepare_batch(data, spec, limits, on_decoded=made.keep)
    return prepared, made.finish(data, limits)


def _no_second_decode(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("decoded a second time for the thumbnail")


RGB224 = InputSpec(
    height=224, width=224, channels=3, color="rgb", resize=ResizeSpec(mode="center_crop")
)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_an_rgb_models_decode_makes_the_thumbnail(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Round 37: every catalog item was decoded twice, for the model and for the thumbnail (a
    40 MP 16-bit RGBA PNG took 3.5-4.9 s). An RGB model's decode is the whole picture in colour,
    at least the model's side: the thumbnail is made from it, and looks as the other way's."""
    data = [_encode(_photo(1600, 1200), fmt), _encode(_photo(640, 480).rotate(90, expand=True))]
    before = thumbnails(data, ImageLimits(), 128)
    monkeypatch.setattr("app.ingest.decode", _no_second_decode)
    prepared, thumbs = prepare_with_thumbnails(data, RGB224, ImageLimits(), 128)
    assert [p.array.shape for p in prepared] == [(224, 224, 3)] * 2
    for new, old in zip(thumbs, before, strict=True):
        # the same picture; only the size it was decoded at may differ (a JPEG's DCT scale)
        assert replace(new.info, decoded_width=0, decoded_height=0) == replace(
            old.info, decoded_width=0, decoded_height=0
        )
        a, b = np.asarray(_open(new.jpeg), np.float32), np.asarray(_open(old.jpeg), np.float32)
        assert a.shape == b.shape and np.abs(a - b).mean() < 3.0


def test_a_gray_or_cropped_decode_leaves_the_thumbnail_to_its_own() -> None:
    """A gray model's decode is gray and 28-56 px; a thin giant's is cropped to the middle
    square a centre crop sees: the thumbnail is then decoded as before, whole and in colour."""
    gray = InputSpec(height=28, width=28, channels=1, color="gray")
    photo = _encode(_photo(600, 400))
    img = _open(prepare_with_thumbnails([photo], gray, ImageLimits(), 128)[1][0].jpeg)
    assert img.mode == "RGB" and img.size == (128, 85)
    thin = big_png(64, 80_000, mode="RGB")  # decoded whole: only its middle square is kept
    calls: list[int] = []
    real = ingest.decode

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("app.ingest.decode", counted)
        (thumb,) = prepare_with_thumbnails([thin], RGB224, ImageLimits(), 128)[1]
    assert calls == [1] and _open(thumb.jpeg).size == (1, 128)
