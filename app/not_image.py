"""What an upload that is not an image is, said plainly for the 415 answer: documents, videos,
audio, zip archives, text. Magic bytes only; no HTTP (the catalog routes add where a
zip of class folders goes)."""

from __future__ import annotations

import codecs
from typing import Final

from app.formats import ftyp_brands

# An ftyp naming an AVIF or HEIF brand is read as an image before this (app/formats.py).
_AUDIO_BRANDS: Final = frozenset({b"M4A ", b"M4B ", b"M4P "})


def is_zip(data: bytes) -> bool:
    """A zip archive: a local file header first, or the end record of an empty zip."""
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def describe(data: bytes) -> str:
    """One sentence (no "Accepted" list) saying what the bytes are and what to send instead."""
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "The upload is an HTML document, not an image."
    if head.startswith(b"<?xml") or head.startswith(b"<svg"):
        return "The upload is an XML/SVG document; vector images are not accepted."
    if head.startswith(b"%pdf"):
        return "The upload is a PDF document, not an image."
    if is_zip(data):
        return (
            "The upload is a zip archive; zip archives are not images, send the images themselves."
        )
    if data[4:8] == b"ftyp":
        if ftyp_brands(data) & _AUDIO_BRANDS:
            return "The upload is an audio file (MP4 container), not an image."
        return "The upload is a video (MP4/MOV-style container); videos are not accepted."
    if data[:4] == b"RIFF":  # WebP is read before this; AVI video or WAV audio
        return "The upload is a video or audio file (RIFF container); videos are not accepted."
    if _text(data[:256]):
        if data.lstrip()[:1] in (b"{", b"["):
            return (
                "The upload is JSON text sent without `Content-Type: application/json` (JSON "
                "bodies need that header), not an image."
            )
        return "The upload is text, not an image."
    return "The upload is unrecognised binary data, not an image."


def _text(head: bytes) -> bool:
    """UTF-8 (a character cut at the end allowed) without control characters besides tab,
    line breaks and form feed: NUL bytes and other controls are valid UTF-8, so TAR, ICO,
    PSD and RAR files were called text (round 25)."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return not any((ord(c) < 32 and c not in "\t\n\r\f") or ord(c) == 127 for c in text)
