"""`python -m training teach --data-dir DIR --name NAME`: teach from a folder of class subfolders.

The same path as the server: the images go into a catalog (embedded by the backbone, in the
service's data folder), then the catalog teaches the model; a running server sharing that data
folder serves it within its poll interval. No TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from app.catalog.service import CatalogService
from app.catalog.types import CatalogNotFound, CatalogRecord, ModelMismatch
from app.errors import InvalidRequest, ServiceError
from app.registry import ModelRegistry
from app.settings import Settings
from app.teach.compose import check_room
from app.teach.core import check_free_name, room_from, taught_root, teach_catalog
from app.teach.examples import limits_from
from app.teach.folder import BatchLimits, folder_images, ingest
from app.teach.ingest_report import IngestReport
from app.teach.layout import check_class_folder

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training teach", description=__doc__)
    p.add_argument(
        "--data-dir", type=Path, required=True, help="folder with one subfolder per class"
    )
    p.add_argument("--name", required=True, help="model name (a new version if it exists)")
    p.add_argument("--backbone", default="products", help="shipped bundle whose embedding is used")
    p.add_argument("--catalog", default=None, help="catalog to fill (default: the model name)")
    p.add_argument("--models-dir", type=Path, default=None, help="shipped bundles (default models)")
    p.add_argument(
        "--service-data",
        type=Path,
        default=None,
        help="the service's data folder (default $IMGCLASS_DATA_DIR or data/service)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="add every picture even when it copies an item of its label already in the "
        "catalog (by default copies are left out, so teaching again from the same folder, "
        "grown by a few pictures, adds only the new ones)",
    )
    p.add_argument(
        "--positive-label",
        default=None,
        help="two classes: make it a yes/no model for this label (a threshold and a decision); "
        'by default only when the other class is named like "not X" or "other"',
    )
    return p


class OtherBackbones(logging.Filter):
    """On the registry's logger: drops its refusals of taught models on a backbone this run
    does not load (the CLI loads only --backbone), counted per backbone for one summary line.
    Every other refusal (a broken bundle, a changed backbone) is logged as before."""

    def __init__(self, backbone: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.skipped: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        other = getattr(record, "backbone_not_served", None)
        if not isinstance(other, str) or other == self.backbone:
            return True
        self.skipped[other] = self.skipped.get(other, 0) + 1
        return False

    def summary(self) -> str | None:
        if not self.skipped:
            return None
        n = sum(self.skipped.values())
        per = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        return (
            f"not loading {n} taught model version(s) on other backbones ({per}): this run "
            f"serves only {self.backbone!r}"
        )


def check_catalog_model(record: CatalogRecord, backbone: str) -> None:
    """An existing catalog must be embedded by --backbone: its items were made by its own model
    and would all be skipped ("No model named ...") by a run serving only --backbone."""
    if record.model.name != backbone:
        raise ModelMismatch(
            f"catalog {record.name!r} is bound to model {record.model.name!r}, not --backbone "
            f"{backbone!r}; delete that catalog (DELETE /v1/catalogs/{record.name} on a server "
            "using this data folder), or choose another --name (or --catalog), or pass "
            f"--backbone {record.model.name}."
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = OtherBackbones(args.backbone)
    registry_log = logging.getLogger(ModelRegistry.__module__)
    registry_log.addFilter(quiet)
    try:
        return _run(args, quiet)
    finally:
        registry_log.removeFilter(quiet)


def _run(args: argparse.Namespace, quiet: OtherBackbones) -> int:
    try:
        classes = check_class_folder(args.data_dir)  # before any catalog is made
    except ServiceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    overrides: dict[str, object] = {"enabled_models": [args.backbone], "warmup_runs": 0}
    if args.models_dir is not None:
        overrides["models_dir"] = args.models_dir
    if args.service_data is not None:
        overrides["data_dir"] = args.service_data
    settings = Settings(**overrides)  # type: ignore[arg-type]
    registry = ModelRegistry(
        settings.models_dir,
        taught_dir=taught_root(settings),
        providers=settings.providers,
        warmup_runs=0,
        enabled=[args.backbone],
    )
    registry.load_all()
    if args.backbone not in registry.names():
        folder = settings.models_dir
        shipped = (
            sorted(d.name for d in folder.iterdir() if (d / "metadata.json").is_file())
            if folder.is_dir()
            else []
        )
        reason = registry.refused().get(args.backbone)
        why = f" ({reason})" if reason else ""
        print(
            f"error: --backbone {args.backbone!r} is not a servable bundle in "
            f"{settings.models_dir}{why}; bundles there: {', '.join(shipped) or 'none'}.",
            file=sys.stderr,
        )
        return 2
    if (line := quiet.summary()) is not None:
        print(line)
    service = CatalogService(settings, registry)
    service.open()
    catalog = args.catalog or args.name
    report = IngestReport()
    try:
        check_free_name(registry, args.name)  # before any image is added to a catalog
        check_room(taught_root(settings), args.name, room_from(settings))
        try:
            record = service.get(catalog)
            check_catalog_model(record, args.backbone)
            print(f"adding to existing catalog {catalog!r} ({record.item_count} items)")
        except CatalogNotFound:
            if classes < 2:  # round 28: the catalog was made and filled, then teach refused
                raise InvalidRequest(
                    f"{args.data_dir} has images in one class subfolder only; a model tells "
                    "two or more classes apart (or add this class to an existing catalog "
                    "with --catalog)."
                ) from None
            service.create(catalog, args.backbone, f"taught from folder {args.data_dir.name}")
        images = folder_images(args.data_dir, report, settings.max_image_bytes)
        ingest(
            service,
            catalog,
            images,
            report,
            BatchLimits(max_pixels=settings.max_request_pixels),
            skip_duplicates=not args.keep_duplicates,
        )
        print(f"added {sum(report.added.values())} images: {json.dumps(report.added)}")
        if report.duplicates_count:
            print(
                f"left out {report.duplicates_count} copies of pictures already in catalog "
                f"{catalog!r} (--keep-duplicates adds them)"
            )
        for s in report.skipped:
            print(f"skipped {s['name']}: {s['reason']}")
        if report.skipped_count > len(report.skipped):
            print(f"skipped {report.skipped_count - len(report.skipped)} more files")
        for w in report.warnings:  # added, but of little use (a blank picture)
            print(f"warning {w['name']}: {w['warning']}")
        if report.warnings_count > len(report.warnings):
            print(f"{report.warnings_count - len(report.warnings)} more warnings")

        def progress(phase: str, fraction: float) -> None:
            logger.debug("%s %.0f%%", phase, fraction * 100)

        result = teach_catalog(
            service,
            registry,
            taught_root(settings),
            catalog,
            args.name,
            seed=args.seed,
            positive_label=args.positive_label,
            limits=limits_from(settings),
            room=room_from(settings),
            progress=progress,
        )
    except ServiceError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        service.close()
    m = result.metrics
    print(
        f"taught {result.model} v{result.version} -> {result.path}\n"
        f"held-out accuracy {m['accuracy']:.3f} on n={m['n_samples']} ({m['split']})"
    )
    if m.get("threshold") is not None:
        print(f"yes/no model: {m['positive_label']!r} when its score >= {m['threshold']:g}")
    elif len(result.labels) == 2:
        print("two categories, no yes/no threshold (--positive-label LABEL asks for one)")
    for line in [*result.summary, *result.warnings]:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
