"""The registry's disk side (app.registry): which folders hold bundles (shipped:
`models_dir/<name>/`, taught: `taught_dir/<name>/<version>/`), and opening one as a served
model, timed, warmed up and logged. Which bundles are served, and refusing one, is the
registry's."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from app.bundle import METADATA_FILE, load_bundle
from app.fsutil import visible_entries
from app.loaded import LoadedModel, ServedModel
from app.runtime import OnnxModel
from app.teach.served import TaughtModel

logger = logging.getLogger(__name__)


class BackboneNotServed(ValueError):
    """A taught bundle refused because its backbone is not served here (not enabled, absent
    or itself refused). Its log record carries `backbone_not_served` (the backbone's name), so
    a tool that loads one backbone on purpose (the teach CLI) can tell it from real errors."""

    def __init__(self, backbone: str, model: str) -> None:
        super().__init__(f"backbone {backbone!r} of taught model {model!r} is not served")
        self.backbone = backbone


class RemovedWhileLoading(Exception):
    """A taught version's folder was deleted while it was being read: not a refused bundle."""


def shipped_folders(models_dir: Path, enabled: set[str]) -> list[Path]:
    """Shipped bundle candidates: every entry of models_dir not starting with "." (a folder
    without metadata.json, or a file, is then refused with that reason, not skipped); only
    the `enabled` names when any are given."""
    if not models_dir.is_dir():
        return []
    try:
        dirs = sorted(p for p in models_dir.iterdir() if not p.name.startswith("."))
    except OSError as exc:  # unreadable now (start-up checks it: python -m app stops at once)
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # for now: the refresh is tried again
            raise  # (round 42: every bundle was dropped, 503 "still loading" once fds were back)
        logger.error("cannot list the models folder %s: %s", models_dir, exc.strerror or exc)
        return []
    if enabled:
        dirs = [d for d in dirs if d.name in enabled]
    return dirs


def names_shipped_folder(models_dir: Path, enabled: set[str], name: str) -> bool:
    """`name` (a client's, unchecked) is a bundle folder in models_dir that may be served."""
    plain = bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name
    if not plain or (enabled and name not in enabled):
        return False
    try:
        return (models_dir / name / "metadata.json").is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return False


def taught_folders(taught_dir: Path | None) -> list[Path]:
    """Taught bundle folders (taught_dir/<name>/<version>/metadata.json)."""
    if taught_dir is None or not taught_dir.is_dir():
        return []
    found: list[Path] = []
    # A plain walk, not glob: a folder deleted mid-scan (a delete in another process) is
    # skipped, where pathlib's glob raised FileNotFoundError (a 500 once).
    for name in visible_entries(taught_dir):
        for version in visible_entries(taught_dir / name):
            if (taught_dir / name / version / METADATA_FILE).is_file():
                found.append(taught_dir / name / version)
    return sorted(found)


def open_and_warm(key: str, opener: Callable[[], ServedModel], warmup_runs: int) -> LoadedModel:
    """Open one bundle with `opener` and warm it up, both timed; logs the load. Raises what
    `opener` or the warm-up raise (the registry then refuses that bundle)."""
    t0 = time.perf_counter()
    model = opener()
    load_ms = (time.perf_counter() - t0) * 1e3
    warm_ms = model.warm_up(warmup_runs)
    meta = model.bundle.metadata
    logger.info(
        "loaded bundle %s v%s sha256=%s provider=%s load=%.0fms warmup=%.0fms",
        key,
        meta.version,
        meta.artifact.sha256[:12],
        model.provider,
        load_ms,
        warm_ms,
    )
    return LoadedModel(model, load_ms, warm_ms, datetime.now(UTC))


def open_taught(
    directory: Path,
    name: str,
    shipped: dict[str, LoadedModel],
    shipped_names: Callable[[], set[str]],
) -> TaughtModel:
    """A taught bundle on its backbone among the `shipped` models served (a snapshot), or why
    not: a name a shipped bundle has (served or found on disk), no backbone named, the backbone
    not served (BackboneNotServed), or RemovedWhileLoading when its folder went away as it was
    read (round 16) or as its head was opened (round 19)."""
    try:
        bundle = load_bundle(directory, name=name)
        ref = bundle.metadata.backbone
        if name in shipped or name in shipped_names():
            raise ValueError(f"taught model {name!r} has the name of a shipped model")
        if ref is None:
            raise ValueError(f"{directory}: a taught bundle must name its backbone")
        backbone = shipped.get(ref.name)
        if backbone is None or not isinstance(backbone.model, OnnxModel):
            raise BackboneNotServed(ref.name, name)
        return TaughtModel(bundle, backbone.model)
    except Exception:
        if not directory.is_dir():
            raise RemovedWhileLoading(name) from None
        raise
