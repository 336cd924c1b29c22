"""Writing bundles and durable files atomically: the one write path for models/<name>/.

Part of the shared core (docs/architecture.md; no TensorFlow, no FastAPI): training/export.py,
the server's teach jobs and quantisation all write bundles through `write_bundle`, and any code
that needs "write this file durably or not at all" uses `atomic_write`.

A bundle is assembled in ``<models>/.staging/<name>-<random>/`` (one level deeper than the
registry's ``*/metadata.json`` scan, so it is never seen half-written), every file and the folder
are fsync'ed, and the folder is then renamed into place. An older version is swapped out with
one atomic exchange (Linux renameat2 RENAME_EXCHANGE) where the kernel and file system offer it,
else by two renames with a window in which the name is briefly absent (never half-written).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from app import fsutil
from app.bundle import (
    CARD_FILE,
    LABELS_FILE,
    METADATA_FILE,
    MODEL_FILE,
    Artifact,
    Bundle,
    BundleError,
    BundleMetadata,
    load_bundle,
)
from app.fsutil import fsync_dir as fsync_dir  # re-exported for bundle writers
from app.fsutil import unwritable as unwritable  # re-exported for training (its core)

logger = logging.getLogger(__name__)

STAGING_DIR = ".staging"
_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`app.fsutil.atomic_write` with a world-readable default mode (mkstemp makes 0600;
    bundles are read by other users, e.g. in containers)."""
    fsutil.atomic_write(path, data, mode=mode)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux >= 3.15); False where unsupported."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return bool(rc == 0)


def replace_dir(staged: Path, target: Path) -> None:
    """Move the complete folder `staged` to `target`, replacing an older `target`."""
    if not target.exists():
        os.rename(staged, target)
    elif _exchange(staged, target):
        shutil.rmtree(staged)  # now holds the old version
    else:
        old = staged.with_name(staged.name + ".old")
        os.rename(target, old)
        os.rename(staged, target)
        shutil.rmtree(old)
    fsync_dir(target.parent)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o644)


def check_target(directory: Path) -> None:
    """Raise BundleError when a bundle cannot be written as `directory`: a file there (round
    44: it was moved into the staging folder, then a traceback), a folder holding other files
    (round 28: replaced without a word), or a parent folder that cannot be made or written.
    Training runs this before they train, so the refusal comes before the hours, not after."""
    if directory.exists() and not directory.is_dir():
        raise BundleError(
            f"{directory} is a file; it is not replaced: choose another output folder"
        )
    if directory.is_dir() and not (directory / METADATA_FILE).exists() and any(directory.iterdir()):
        raise BundleError(
            f"{directory} exists and is not a bundle folder (no {METADATA_FILE}); it is not "
            "replaced: choose another output folder"
        )
    why = fsutil.unwritable(directory.parent)
    if why:
        raise BundleError(
            f"{directory.parent}: a bundle cannot be written there ({why}); choose another "
            "output folder"
        )


def write_bundle(
    directory: Path,
    *,
    model_bytes: bytes,
    metadata: BundleMetadata,
    labels: Sequence[str],
    model_card: str | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Bundle:
    """Write the bundle folder `directory` atomically and return it, read back and verified.

    `metadata.artifact` (sha256, size) and `metadata.name` are set from `model_bytes` and the
    folder name; everything else is written as given. `files`: more files of the bundle, by
    name (fold models, say), written in the same step."""
    if len(labels) != metadata.num_classes:
        raise BundleError(f"{len(labels)} labels given for {metadata.num_classes} classes")
    check_target(directory)
    artifact = Artifact(
        file=MODEL_FILE, sha256=hashlib.sha256(model_bytes).hexdigest(), bytes=len(model_bytes)
    )
    meta = metadata.model_copy(update={"artifact": artifact, "name": directory.name})
    meta = BundleMetadata.model_validate(meta.model_dump())  # re-validate after the update
    parent = directory.parent
    staging_root = parent / STAGING_DIR
    staging_root.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{directory.name}-"))
    try:
        os.chmod(staged, 0o755)
        _write_file(staged / MODEL_FILE, model_bytes)
        _write_file(staged / LABELS_FILE, ("\n".join(labels) + "\n").encode("utf-8"))
        if model_card is not None:
            _write_file(staged / CARD_FILE, model_card.encode("utf-8"))
        for name, data in (files or {}).items():
            if Path(name).name != name or name in (MODEL_FILE, LABELS_FILE, METADATA_FILE):
                raise BundleError(f"{name!r} is not a file name a bundle can add")
            _write_file(staged / name, data)
        _write_file(staged / METADATA_FILE, (meta.model_dump_json(indent=2) + "\n").encode())
        fsync_dir(staged)
        replace_dir(staged, directory)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):  # only when empty (another writer may use it)
            staging_root.rmdir()
    bundle = load_bundle(directory)
    logger.info(
        "wrote bundle %s (sha256 %s, %d bytes)", directory, artifact.sha256[:12], artifact.bytes
    )
    return bundle
