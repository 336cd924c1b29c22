"""Content-addressed image storage: originals and thumbnails named by the sha256 of the bytes.

Written with fsync + atomic rename (and a directory fsync) so a file that exists is complete
and survives a crash; the store's commit comes only after.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from app.catalog.types import ImageRef
from app.exif import swaps_axes
from app.fsutil import TMP_PREFIX, atomic_write, fsync_dir
from app.ingest import Thumbnail

CONTENT_TYPES: Final = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "AVIF": "image/avif",
    "HEIF": "image/heic",
}
THUMBNAIL_TYPE: Final = "image/jpeg"
_SHA256: Final = re.compile(r"^[0-9a-f]{64}$")


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

    def pending(self, data: bytes, thumb: Thumbnail) -> PendingImage:
        """Digest and description of an upload and its thumbnail (app.ingest.thumbnails),
        computed before any lock is taken."""
        info = thumb.info
        # the picture as shown, its EXIF orientation applied, as its thumbnail and embedding
        # are (round 44: a JPEG of orientation 6 was described 451x300, shown 300x451)
        turned = swaps_axes(info.orientation)
        ref = ImageRef(
            sha256=hashlib.sha256(data).hexdigest(),
            content_type=CONTENT_TYPES[info.format],
            width=info.height if turned else info.width,
            height=info.width if turned else info.height,
        )
        return PendingImage(ref=ref, data=data, thumbnail=thumb.jpeg)

    def write(self, pending: list[PendingImage]) -> list[ImageRef]:
        """Put the files in place unless they already are (same name, same bytes); durable on
        return: every file and every folder that got a new name is fsynced. A file of that
        name with other bytes (truncated or damaged on disk) is replaced: uploading the image
        again repairs it, where it used to be kept and served as it was."""
        touched: set[Path] = set()
        for p in pending:
            sha = p.ref.sha256
            for path, data in (
                (self.thumbnail_path(sha), p.thumbnail),
                (self.image_path(sha), p.data),
            ):
                if not _holds(path, data):
                    atomic_write(path, data, sync_dir=False)
                    touched.add(path.parent)
        # New shard folders were made durable in their parents by atomic_write
        # (make_dirs_durably); what is left is the new names inside each touched folder.
        for folder in touched:
            fsync_dir(folder)
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
                if _SHA256.fullmatch(sha) and sha not in seen:
                    seen.add(sha)
                    yield sha

    def remove_partial_writes(self) -> None:
        """Temporary files of writes a crash interrupted (never renamed into place)."""
        for folder in (self.root / "images", self.root / "thumbs"):
            if folder.is_dir():
                for path in folder.glob(f"??/{TMP_PREFIX}*"):
                    path.unlink(missing_ok=True)


def _holds(path: Path, data: bytes) -> bool:
    """Whether the file at `path` holds exactly `data` (its size is compared first)."""
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False
