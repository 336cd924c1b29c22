"""Content-addressed image storage: originals and thumbnails named by the sha256 of the bytes.

Written with fsync + atomic rename (and a directory fsync) so a file that exists is complete
and survives a crash; the store's commit comes only after.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from PIL import Image, ImageOps

from app.catalog.types import ImageRef
from app.fsutil import TMP_PREFIX, atomic_write, fsync_dir
from app.imaging import ImageLimits, open_image

CONTENT_TYPES: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
THUMBNAIL_TYPE: Final = "image/jpeg"
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")


def make_thumbnail(img: Image.Image, size: int) -> bytes:
    """Upright, alpha flattened on white, longest side <= size (never upscaled), JPEG."""
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba).convert("RGB")
    elif img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = img.point(lambda v: v / 257).convert("L") if img.mode != "F" else img.convert("L")
    elif img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    img = img.copy()
    img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85, optimize=True)
    return buf.getvalue()


@dataclass(frozen=True)
class PendingImage:
    ref: ImageRef
    data: bytes
    thumbnail: bytes


class BlobStore:
    """images/<aa>/<sha256> and thumbs/<aa>/<sha256>.jpg under `root`."""

    def __init__(self, root: Path, thumbnail_px: int = 128) -> None:
        self.root = root
        self.thumbnail_px = thumbnail_px

    def image_path(self, sha256: str) -> Path:
        return self.root / "images" / sha256[:2] / sha256

    def thumbnail_path(self, sha256: str) -> Path:
        return self.root / "thumbs" / sha256[:2] / f"{sha256}.jpg"

    def prepare(self, data: bytes, limits: ImageLimits) -> PendingImage:
        """Digest and thumbnail, computed before any lock is taken. Raises 413/415/422."""
        img, fmt = open_image(data, limits)
        with img:
            width, height = img.size
            thumb = make_thumbnail(img, self.thumbnail_px)
        ref = ImageRef(
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=CONTENT_TYPES[fmt],
            width=width,
            height=height,
        )
        return PendingImage(ref=ref, data=data, thumbnail=thumb)

    def write(self, pending: list[PendingImage]) -> list[ImageRef]:
        """Put the files in place unless they already are (same name, same bytes); durable on
        return: every file and every folder that got a new name is fsynced."""
        touched: set[Path] = set()
        for p in pending:
            sha = p.ref.sha256
            for path, data in (
                (self.thumbnail_path(sha), p.thumbnail),
                (self.image_path(sha), p.data),
            ):
                if not path.is_file():
                    atomic_write(path, data, sync_dir=False)
                    touched.add(path.parent)
        for folder in touched:
            fsync_dir(folder)
            fsync_dir(folder.parent)  # the shard folder itself may be new
        return [p.ref for p in pending]

    def remove(self, sha256: str) -> None:
        for p in (self.image_path(sha256), self.thumbnail_path(sha256)):
            p.unlink(missing_ok=True)

    def stored_digests(self) -> Iterator[str]:
        """Digests of every stored original (or thumbnail left without one)."""
        seen: set[str] = set()
        for folder, suffix in ((self.root / "images", ""), (self.root / "thumbs", ".jpg")):
            if not folder.is_dir():
                continue
            for path in folder.glob("??/*"):
                sha = path.name.removesuffix(suffix)
                if _SHA256.match(sha) and sha not in seen:
                    seen.add(sha)
                    yield sha

    def remove_partial_writes(self) -> None:
        """Temporary files of writes a crash interrupted (never renamed into place)."""
        for folder in (self.root / "images", self.root / "thumbs"):
            if folder.is_dir():
                for path in folder.glob(f"??/{TMP_PREFIX}*"):
                    path.unlink(missing_ok=True)
