"""Labelled images from a folder or a zip file (class = top-level folder name) into a catalog.

One path for the CLI (`python -m training teach --data-dir DIR`) and the zip upload
(POST /v1/catalogs/{name}/items:zip). Bad images are skipped and listed, never fatal; a zip
is read within caps on entries, total uncompressed bytes and compression ratio (zip bombs).
"""

from __future__ import annotations

import io
import lzma
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Final

from app.catalog.outcomes import BLANK_WARNING, ItemSpec
from app.catalog.service import CatalogService
from app.catalog.types import CatalogNotFound, ModelMismatch, StoreUnavailable, check_label
from app.errors import (
    InsufficientStorage,
    InvalidRequest,
    PayloadTooLarge,
    ServiceError,
    StorageUnavailable,
)
from app.fsutil import storage_error
from app.teach.ingest_report import CopySkipped, IngestReport, shown
from app.teach.layout import ZIP_LAYOUT, class_root, hidden
from app.teach.zip_scan import declared_entries, header_pixels

_DRIVE: Final = re.compile(r"[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class LabelledImage:
    label: str
    name: str  # path inside the folder or zip, for the report
    data: bytes
    pixels: int = 0  # what its header declares, when known (zip entries); 0: unknown


@dataclass(frozen=True)
class BatchLimits:
    """One add to the catalog holds at most this many images, bytes and header-declared
    pixels. Counted by images alone, a zip of 20 MB entries (they unpack up to 200x) held
    640 MB per upload, and a batch over the request pixel budget was refused whole, then
    decoded again one image at a time."""

    max_images: int = 32
    max_bytes: int = 32 << 20
    max_pixels: int = 128_000_000  # IMGCLASS_MAX_REQUEST_PIXELS, the server's per-request budget

    def full(self, batch: list[LabelledImage], image: LabelledImage) -> bool:
        """Whether `image` must start a new batch."""
        if not batch:
            return False
        return (
            len(batch) >= self.max_images
            or sum(len(b.data) for b in batch) + len(image.data) > self.max_bytes
            or sum(b.pixels for b in batch) + image.pixels > self.max_pixels
        )


@dataclass(frozen=True)
class ZipLimits:
    max_images: int = 20_000  # entries inside a class folder, read and decoded
    max_pixels: int = 8_000_000_000  # all images' pixels as their headers declare them
    max_total_bytes: int = 1 << 30  # uncompressed, all entries together
    max_entry_bytes: int = 20 << 20
    max_ratio: float = 200.0  # uncompressed / compressed per entry

    @property
    def max_files(self) -> int:
        """Entries of any kind in the central directory: images plus folders, macOS twins."""
        return 4 * self.max_images


def _unsafe(name: str, parts: tuple[str, ...]) -> str | None:
    """Why an entry's path cannot name a class: absolute, or climbing out with '..'."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "an absolute path; classes are the zip's top-level folders"
    if ".." in parts:
        return "a path with '..'; classes are the zip's top-level folders"
    return None


# What reading one damaged or unsupported entry raises: a bad CRC or header (BadZipFile), a
# corrupt deflate, LZMA or bzip2 stream (zlib.error, LZMAError, OSError), a stream that ends
# early (EOFError), an unknown method (NotImplementedError), encryption (RuntimeError).
_UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,  # "negative seek value": an entry offset before the file's start (round 17)
    OverflowError,  # a zip64 offset of 2**63 or more (round 17)
)


def _why(exc: BaseException) -> str:
    kinds = {
        zlib.error: "a corrupt compressed stream",
        lzma.LZMAError: "a corrupt compressed stream",
        EOFError: "its compressed data ends early",
        NotImplementedError: "an unsupported compression method",
        RuntimeError: "encrypted or unreadable",
    }
    for kind, text in kinds.items():
        if isinstance(exc, kind):
            return text
    return type(exc).__name__


def _strip_common_root(names: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """A zip of one folder ("pets/cat/1.jpg", "pets/dog/2.jpg"): its classes are one level
    down; so for folders in folders ("export/pets/cat/1.jpg"), which made one class of the
    outer folder's name (round 25)."""
    while (
        names
        and all(len(n) >= 2 for n in names)  # a file beside the folder: no single root
        and len({n[0] for n in names}) == 1
        and (
            len({n[1] for n in names if len(n) >= 3}) >= 2
            or (all(len(n) >= 3 for n in names) and len({n[1] for n in names}) == 1)
        )
    ):
        names = [n[1:] for n in names]
    return names


def folder_images(root: Path, report: IngestReport, max_bytes: int) -> Iterator[LabelledImage]:
    """Files under root/<class>/ (any depth), in name order; oversized ones are skipped."""
    if not root.is_dir():
        raise InvalidRequest(f"{root} is not a folder of class subfolders.")
    root = class_root(root)
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if hidden((class_dir.name,)):
            continue
        files = 0
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if hidden(rel.parts):
                continue
            files += 1
            if path.stat().st_size > max_bytes:
                report.skip(str(rel), f"larger than {max_bytes:,} bytes")
                continue
            yield LabelledImage(class_dir.name, str(rel), path.read_bytes())
        if files == 0:  # said, not dropped in silence: the class is left out of the model
            report.skip(f"{class_dir.name}/", "an empty class folder: no images, no class")


def zip_images(data: bytes, report: IngestReport, limits: ZipLimits) -> Iterator[LabelledImage]:
    """Image entries of a zip, labelled by their class folder. Refused (413) before any
    decoding when the zip has too many entries or images or its images' headers declare more
    pixels than limits allow; hidden files and unsafe paths are skipped and listed."""
    entries = declared_entries(data)
    if entries is not None and entries > limits.max_files:
        raise PayloadTooLarge(
            f"The zip has {entries:,} entries; at most {limits.max_files:,} are read.",
            limit_entries=limits.max_files,
        )
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OverflowError, NotImplementedError) as exc:
        # NotImplementedError: 'zip file version 25.5' needed to extract (round 18)
        raise InvalidRequest(f"The upload is not a readable zip file ({exc}).") from exc
    with zf:
        # not ZipInfo.is_dir(): it fails on an empty name (one starting with NUL), round 16
        infos = [i for i in zf.infolist() if not i.filename.endswith(("/", "\\"))]
        if not infos:
            raise InvalidRequest(f"The zip holds no files: {ZIP_LAYOUT}.")
        if len(infos) > limits.max_files:
            raise PayloadTooLarge(
                f"The zip has {len(infos):,} files; at most {limits.max_files:,} are read.",
                limit_entries=limits.max_files,
            )
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise PayloadTooLarge(
                f"The zip unpacks to {declared:,} bytes; at most {limits.max_total_bytes:,}.",
                limit_bytes=limits.max_total_bytes,
            )
        kept: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
        for info in infos:
            # a backslash as '/': older Windows tools (PowerShell 5's Compress-Archive) write
            # `cat<backslash>1.png`, which read as a loose file (round 44)
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            unsafe = _unsafe(info.filename, parts)
            if not parts:  # '', '.', './.': no name at all
                report.skip(info.filename, "an entry without a file name")
            elif unsafe is not None:
                report.skip(info.filename, unsafe)
            elif hidden(parts):
                report.skip(info.filename, "a hidden or system file (.name, __MACOSX, Thumbs.db)")
            else:
                kept.append((info, parts))
        stripped = _strip_common_root([p for _, p in kept])
        if stripped and all(len(path) < 2 for path in stripped):  # loose files only
            raise InvalidRequest(
                f"None of the zip's {len(stripped):,} files is inside a class folder: {ZIP_LAYOUT}."
            )
        images: list[tuple[zipfile.ZipInfo, str]] = []
        for (info, _), path in zip(kept, stripped, strict=True):
            name = info.filename
            if len(path) < 2:
                report.skip(name, "not inside a class folder")
            elif info.file_size > limits.max_entry_bytes:
                report.skip(name, f"larger than {limits.max_entry_bytes:,} bytes")
            elif info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                report.skip(name, f"compressed more than {limits.max_ratio:g}:1 (zip bomb?)")
            else:
                images.append((info, path[0]))
        if len(images) > limits.max_images:
            raise PayloadTooLarge(
                f"The zip has {len(images):,} files in class folders; at most "
                f"{limits.max_images:,} (IMGCLASS_TEACH_MAX_ITEMS) are read per upload.",
                limit_images=limits.max_images,
            )
        declared_px = [header_pixels(zf, info, limits.max_entry_bytes) for info, _ in images]
        pixels = sum(declared_px)
        if pixels > limits.max_pixels:
            raise PayloadTooLarge(
                f"The zip's images declare {pixels:,} pixels in all; at most "
                f"{limits.max_pixels:,} (IMGCLASS_TEACH_ZIP_MAX_PIXELS) are decoded per "
                "upload. Send the pictures in several zips, or smaller.",
                limit_pixels=limits.max_pixels,
            )
        total = 0
        for (info, label), px in zip(images, declared_px, strict=True):
            name = info.filename
            try:
                with zf.open(info) as f:
                    # Never trust the header's size: read one byte past it at most.
                    blob = f.read(limits.max_entry_bytes + 1)
            except _UNREADABLE as exc:
                report.skip(name, f"unreadable in the zip ({_why(exc)})")
                continue
            total += len(blob)
            if len(blob) > limits.max_entry_bytes or total > limits.max_total_bytes:
                raise PayloadTooLarge("The zip unpacks to more than its headers declare.")
            yield LabelledImage(label, name, blob, px)


def ingest(
    service: CatalogService,
    catalog: str,
    images: Iterator[LabelledImage],
    report: IngestReport,
    limits: BatchLimits | None = None,
    *,
    skip_duplicates: bool = False,
) -> IngestReport:
    """Add images in batches (within `limits`); a batch that fails is retried image by image,
    so one bad file is skipped with its reason and the rest are added. With `skip_duplicates`
    an image that copies an item of its label (app.catalog.dedup) is left out and listed."""
    limits = limits or BatchLimits()
    # 404 before any work, and 409 when the catalog's model was replaced by another build:
    # each image was skipped with that reason, and the upload answered 200 (round 31)
    service.bound_model(service.get(catalog))
    batch: list[LabelledImage] = []

    def flush() -> None:
        if not batch:
            return
        try:
            _add(service, catalog, batch, report, skip_duplicates)
        except ServiceError as exc:
            if _ends_the_upload(exc):  # not an image: no use trying them one by one
                raise
            for one in batch:
                try:
                    _add(service, catalog, [one], report, skip_duplicates)
                except ServiceError as exc:
                    if _ends_the_upload(exc):
                        raise
                    report.skip(one.name, exc.detail)
        batch.clear()

    try:
        for image in images:
            try:
                label = check_label(image.label) or ""
            except ServiceError as exc:
                report.skip(image.name, exc.detail)
                continue
            if limits.full(batch, image):
                flush()
            batch.append(replace(image, label=label))  # as stored (trimmed), and so reported
        flush()
    except (ServiceError, OSError) as raised:
        err = raised if isinstance(raised, ServiceError) else storage_error(raised)
        if err is None:
            raise
        if isinstance(err, CatalogNotFound):  # deleted meanwhile, with what was added (round 28)
            err.detail = (
                f"Catalog {catalog!r} was deleted while this zip was being added; nothing of "
                "the upload is kept."
            )
            raise err from None
        # Batches already added stay (each is committed): the error says so, and which.
        if report.added:
            n = sum(report.added.values())
            err.detail = err.detail.replace("; nothing was stored.", ".") + (
                f" {n} image(s) read before this were added to catalog {catalog!r} and stay "
                "there (`added`, by label); the rest of the upload was not. To send the whole "
                "upload again without copies of those, add ?skip_duplicates=true."
            )
            err.extra["added"] = dict(report.added)
        if report.duplicates_count:
            err.extra["duplicates_skipped"] = report.duplicates_count
        if err is raised:
            raise
        raise err from raised
    return report


def _ends_the_upload(exc: ServiceError) -> bool:
    """A failing data folder (full, read-only, gone) or vector store (Milvus down), or the
    catalog deleted or its model replaced meanwhile: every further image would fail too."""
    return isinstance(
        exc,
        (InsufficientStorage, StorageUnavailable, StoreUnavailable, CatalogNotFound, ModelMismatch),
    )


def _add(
    service: CatalogService,
    catalog: str,
    batch: list[LabelledImage],
    report: IngestReport,
    skip_duplicates: bool,
) -> None:
    out = service.add_checked(
        catalog,
        [b.data for b in batch],
        [ItemSpec(label=b.label, metadata={"file": b.name[-200:]}) for b in batch],
        skip_duplicates=skip_duplicates,
    )
    copies = {m.index: m for m in out.duplicates}
    for i, b in enumerate(batch):
        if (m := copies.get(i)) is not None:
            report.duplicate(CopySkipped(shown(b.name), b.label, m.item_id, round(m.score, 6)))
        else:
            report.added[b.label] = report.added.get(b.label, 0) + 1
            if i in out.blank:
                report.warn(b.name, BLANK_WARNING)
