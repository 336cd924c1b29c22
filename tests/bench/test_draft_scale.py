"""bench.draft_scale compares three real decode plans: exact (full decode), the old 2x rule and
the served one, and leaves app.imaging as it found it."""

from __future__ import annotations

import io

from PIL import Image

from app import imaging, reduction
from app.bundle import InputSpec
from bench.draft_scale import way

SPEC = InputSpec(width=224, height=224, channels=3, color="rgb")


def _decoded(data: bytes) -> tuple[int, int]:
    _, info = imaging.decode(data, SPEC, imaging.ImageLimits())
    return info.decoded_width, info.decoded_height


def test_each_way_decodes_at_its_own_scale_and_the_module_is_restored() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (90, 140, 200)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    want = {"exact": (4000, 3000), "2x": (1000, 750), "served": (500, 375)}
    for name, size in want.items():
        with way(name):
            assert _decoded(data) == size
            img, _ = imaging.decode(data, SPEC, imaging.ImageLimits())
            if name == "exact":  # no box reduction either: one resize from the full decode
                assert img.size == (4000, 3000)
    assert _decoded(data) == (500, 375)
    assert reduction._DRAFT_FACTOR == 2
