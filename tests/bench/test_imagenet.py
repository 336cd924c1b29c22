"""bench/imagenet.py: its end-to-end part runs through the real app (round 29: every request
was answered 400 host-not-allowed, so `python -m bench.imagenet` crashed after its first table)."""

from __future__ import annotations

import io

from PIL import Image

from bench.imagenet import end_to_end
from tests.conftest import ROOT


def test_the_end_to_end_timings_come_from_answered_requests() -> None:
    buf = io.BytesIO()
    Image.open(ROOT / "data" / "photos" / "imgaug" / "quokka.jpg").convert("RGB").resize(
        (320, 214)
    ).save(buf, "JPEG")
    timings = end_to_end(ROOT / "models", "imagenet", buf.getvalue(), runs=2)
    assert timings["inference_ms"] > 0 and timings["total_ms"] >= timings["inference_ms"]
