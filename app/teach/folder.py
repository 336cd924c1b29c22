"""Labelled images from a folder or a zip file (class = top-level folder name) into a catalog.

One path for the CLI (`python -m training teach --data-dir DIR`) and the zip upload
(POST /v1/catalogs/{catalog}/items:zip). Bad images are skipped and listed, never fatal; a zip
is read within caps on entries, total uncompressed bytes and compression ratio (zip bombs).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from app.catalog.service import CatalogService, ItemSpec
from app.catalog.types import check_label
from app.errors import InvalidRequest, PayloadTooLarge, ServiceError

_BATCH = 32
_IGNORED = ("__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini")


@dataclass(frozen=True)
class LabelledImage:
    label: str
    name: str  # path inside the folder or zip, for the report
    data: bytes


@dataclass
class IngestReport:
    added: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append({"name": name, "reason": reason})


@dataclass(frozen=True)
class ZipLimits:
    max_entries: int = 10_000
    max_total_bytes: int = 1 << 30  # uncompressed, all entries together
    max_entry_bytes: int = 20 << 20
    max_ratio: float = 200.0  # uncompressed / compressed per entry


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p in _IGNORED for p in parts)


def _strip_common_root(names: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """A zip of one folder ("pets/cat/1.jpg", "pets/dog/2.jpg"): its classes are one level down."""
    while (
        names and len({n[0] for n in names}) == 1 and len({n[1] for n in names if len(n) >= 3}) >= 2
    ):
        names = [n[1:] for n in names]
    return names


def folder_images(root: Path, report: IngestReport, max_bytes: int) -> Iterator[LabelledImage]:
    """Files under root/<class>/ (any depth), in name order; oversized ones are skipped."""
    if not root.is_dir():
        raise InvalidRequest(f"{root} is not a folder of class subfolders.")
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if _hidden((class_dir.name,)):
            continue
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if _hidden(rel.parts):
                continue
            if path.stat().st_size > max_bytes:
                report.skip(str(rel), f"larger than {max_bytes:,} bytes")
                continue
            yield LabelledImage(class_dir.name, str(rel), path.read_bytes())


def zip_images(data: bytes, report: IngestReport, limits: ZipLimits) -> Iterator[LabelledImage]:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise InvalidRequest(f"The upload is not a readable zip file ({exc}).") from exc
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_entries:
            raise PayloadTooLarge(
                f"The zip has {len(infos):,} files; at most {limits.max_entries:,} are read.",
                limit_entries=limits.max_entries,
            )
        declared = sum(i.file_size for i in infos)
        if declared > limits.max_total_bytes:
            raise PayloadTooLarge(
                f"The zip unpacks to {declared:,} bytes; at most {limits.max_total_bytes:,}.",
                limit_bytes=limits.max_total_bytes,
            )
        parts = [PurePosixPath(i.filename).parts for i in infos]
        kept = [(i, p) for i, p in zip(infos, parts, strict=True) if not _hidden(p)]
        stripped = _strip_common_root([p for _, p in kept])
        total = 0
        for (info, _), path in zip(kept, stripped, strict=True):
            name = info.filename
            if len(path) < 2:
                report.skip(name, "not inside a class folder")
                continue
            if info.file_size > limits.max_entry_bytes:
                report.skip(name, f"larger than {limits.max_entry_bytes:,} bytes")
                continue
            if info.compress_size and info.file_size / info.compress_size > limits.max_ratio:
                report.skip(name, f"compressed more than {limits.max_ratio:g}:1 (zip bomb?)")
                continue
            try:
                with zf.open(info) as f:
                    # Never trust the header's size: read one byte past it at most.
                    blob = f.read(limits.max_entry_bytes + 1)
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                report.skip(name, f"unreadable in the zip ({type(exc).__name__})")
                continue
            total += len(blob)
            if len(blob) > limits.max_entry_bytes or total > limits.max_total_bytes:
                raise PayloadTooLarge("The zip unpacks to more than its headers declare.")
            yield LabelledImage(path[0], name, blob)


def ingest(
    service: CatalogService, catalog: str, images: Iterator[LabelledImage], report: IngestReport
) -> IngestReport:
    """Add images in batches; a batch that fails is retried image by image, so one bad file
    is skipped with its reason and the rest are added."""
    service.get(catalog)  # 404 before any work
    batch: list[LabelledImage] = []

    def flush() -> None:
        if not batch:
            return
        try:
            _add(service, catalog, batch, report)
        except ServiceError:
            for one in batch:
                try:
                    _add(service, catalog, [one], report)
                except ServiceError as exc:
                    report.skip(one.name, exc.detail)
        batch.clear()

    for image in images:
        try:
            check_label(image.label)
        except ServiceError as exc:
            report.skip(image.name, exc.detail)
            continue
        batch.append(image)
        if len(batch) >= _BATCH:
            flush()
    flush()
    return report


def _add(
    service: CatalogService, catalog: str, batch: list[LabelledImage], report: IngestReport
) -> None:
    service.add(
        catalog,
        [b.data for b in batch],
        [ItemSpec(label=b.label, metadata={"file": b.name[-200:]}) for b in batch],
    )
    for b in batch:
        report.added[b.label] = report.added.get(b.label, 0) + 1
