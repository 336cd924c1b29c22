"""Colour profiles whose structure would make littlecms work for seconds or minutes while it
builds a transform are ignored before it sees them (app/icc_screen.py); real profiles pass.
Round 43: an 844-byte PNG carried a profile whose float tag chained 40,000 stages (all one
60-byte matrix) and took 40 s of a worker's CPU."""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageCms

from app import colour
from app.icc_screen import MAX_CHANNELS, MAX_SEGMENTS, MAX_STAGES, too_complex
from tests.app.test_colour import icc_profile
from tests.cmyk_profile import cmyk_profile


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _matf(offset: float) -> bytes:
    """A 3x3 'matf' stage: the identity plus an offset on red."""
    matrix = struct.pack(">9f", 1, 0, 0, 0, 1, 0, 0, 0, 1) + struct.pack(">3f", offset, 0, 0)
    return b"matf\0\0\0\0" + struct.pack(">HH", 3, 3) + matrix


def _mpet(stages: list[bytes], shared: bool = False) -> bytes:
    """A multiProcessElements tag; `shared`: every position entry points at the first stage."""
    head = 16 + 8 * len(stages)
    table, body = b"", b""
    for stage in stages:
        at = head if shared else head + len(body)
        table += struct.pack(">II", at, len(stage))
        body += b"" if shared and body else stage
    return b"mpet\0\0\0\0" + struct.pack(">HHI", 3, 3, len(stages)) + table + body


def _profile(tags: dict[bytes, bytes]) -> bytes:
    """An ICC v4 RGB display profile holding `tags` beside its description and white point."""
    text = "Test v4 RGB".encode("utf-16-be")
    tags = {
        b"desc": b"mluc\0\0\0\0"
        + struct.pack(">II", 1, 12)
        + b"enUS"
        + struct.pack(">II", len(text), 28)
        + text,
        b"wtpt": b"XYZ \0\0\0\0" + _s15(0.9642) + _s15(1.0) + _s15(0.8249),
        **tags,
    }
    start = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for name, data in tags.items():
        table += name + struct.pack(">II", start + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    header = (
        struct.pack(">I", start + len(body))
        + b"\0" * 4
        + bytes([4, 0x30, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 28
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


def _curve_set(segments: int) -> bytes:
    """A 'cvst' stage of three segmented curves of `segments` formula segments each."""
    breaks = struct.pack(f">{segments - 1}f", *(i / segments for i in range(1, segments)))
    segment = b"parf\0\0\0\0" + struct.pack(">HH", 0, 0) + struct.pack(">4f", 1, 1, 0, 0)
    curve = b"curf\0\0\0\0" + struct.pack(">HH", segments, 0) + breaks + segment * segments
    head = 12 + 8 * 3
    table = b"".join(struct.pack(">II", head + i * len(curve), len(curve)) for i in range(3))
    return b"cvst\0\0\0\0" + struct.pack(">HH", 3, 3) + table + curve * 3


def test_a_chain_of_stages_beyond_the_bound_is_ignored_before_littlecms() -> None:
    bomb = _profile({b"D2B0": _mpet([_matf(0.0001)] * 40_000, shared=True)})
    assert len(bomb) < 400_000
    assert too_complex(bomb) == f"its 'D2B0' tag has 40,000 stages (at most {MAX_STAGES})"
    one_over = _profile({b"D2B0": _mpet([_matf(0.2)] * (MAX_STAGES + 1), shared=True)})
    img = Image.new("RGB", (8, 8), (10, 120, 200))
    assert colour.to_srgb(img, one_over) is img  # ignored: read as sRGB, no transform built


def test_a_short_chain_is_applied() -> None:
    """The same kind of profile within the bound converts (its matrix adds 0.2 to red)."""
    fine = _profile({b"D2B0": _mpet([_matf(0.2)] * 3)})
    assert too_complex(fine) is None
    out = colour.to_srgb(Image.new("RGB", (8, 8), (10, 120, 200)), fine)
    assert out.getpixel((0, 0))[0] > 60


def test_curves_of_many_segments_and_wide_steps_are_ignored() -> None:
    many = _profile({b"D2B0": _mpet([_curve_set(MAX_SEGMENTS + 1), _matf(0.0)])})
    assert too_complex(many) == (
        f"its 'D2B0' tag has a curve of {MAX_SEGMENTS + 1} segments (at most {MAX_SEGMENTS})"
    )
    assert too_complex(_profile({b"D2B0": _mpet([_curve_set(3), _matf(0.0)])})) is None
    wide = b"mft2\0\0\0\0" + bytes([8, 3, 2, 0]) + bytes(64)  # a lut16 of 8 inputs
    assert too_complex(_profile({b"A2B0": wide})) == (
        f"its 'A2B0' tag has a step of 8 inputs and 3 outputs (at most {MAX_CHANNELS})"
    )


def test_real_profiles_pass() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    for profile in (srgb, lab, icc_profile(), cmyk_profile()):
        assert too_complex(profile) is None
    assert ImageCms.ImageCmsProfile(io.BytesIO(icc_profile())).profile.xcolor_space == "RGB "


def test_an_unreadable_structure_is_left_to_littlecms() -> None:
    assert too_complex(b"") is None
    assert too_complex(_profile({b"D2B0": b"mpet"})) is None  # cut short: littlecms refuses
