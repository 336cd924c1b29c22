"""Property tests: real images with their bytes mutated never crash ingestion (only our typed
errors) and never get a 5xx or internals from the real app."""

from __future__ import annotations

import functools

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.bundle import InputSpec
from app.errors import ServiceError
from app.imaging import ImageLimits, prepare
from tests.app.hostile.cases import digit, photo
from tests.app.hostile.test_hostile_http import LEAK
from tests.images import encode, exif_payload, heic, orientation_entry


@functools.cache
def seeds() -> list[bytes]:
    """Small real images in every accepted format and the odd modes (fast to decode)."""
    p = photo().resize((96, 96))
    rot = exif_payload([orientation_entry(6)])
    return [
        encode(p, "JPEG", quality=85, exif=rot),
        encode(p, "JPEG", quality=85, progressive=True),
        encode(p.convert("CMYK"), "JPEG"),
        encode(p, "PNG", exif=rot),
        encode(p.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", transparency=3),
        encode(digit().convert("LA"), "PNG"),
        encode(p, "GIF", save_all=True, append_images=[p.rotate(90)]),
        encode(p, "WEBP", quality=80, exif=rot),
        encode(p, "WEBP", lossless=True),
        encode(p, "BMP"),
        encode(p, "TIFF", compression="tiff_lzw"),
        encode(digit(), "TIFF"),
        heic(p, quality=70),
    ]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "zero"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, max(1, len(data) - pos)))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 512))]
        else:
            data[pos : pos + 16] = b"\x00" * 16
        if not data:
            break
    return bytes(data)


SPECS = [
    InputSpec(height=224, width=224, channels=3, color="rgb"),
    InputSpec(height=28, width=28, channels=1, color="gray"),
]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=mutated(), spec=st.sampled_from(SPECS))
def test_mutated_images_raise_only_service_errors(data: bytes, spec: InputSpec) -> None:
    try:
        out = prepare(data, spec, ImageLimits())
    except ServiceError as exc:
        assert exc.status in (413, 415, 422), exc.status
        assert not LEAK.search(exc.detail), exc.detail
    else:
        assert out.array.shape == (spec.height, spec.width, spec.channels)


@pytest.mark.slow  # 3 s: full runs only; the in-process fuzz above stays fast
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=mutated(), model=st.sampled_from(["imagenet", "digits"]))
def test_mutated_images_never_5xx_over_http(
    shipped_client: TestClient, data: bytes, model: str
) -> None:
    r = shipped_client.post(
        f"/v1/models/{model}/predict",
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code < 500, r.text[:300]
    assert not LEAK.search(r.text), r.text[:300]
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json")
