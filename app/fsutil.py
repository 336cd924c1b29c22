"""Crash-safe file writes shared by every writer in app/ (catalog images, index snapshots,
bundles): a file that exists is complete, and a name that was returned survives power loss."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Final

TMP_PREFIX: Final = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make the names in `path` (new, renamed, removed entries) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(path: Path) -> None:
    """mkdir -p, then fsync the parent of every folder that was created, so the new folders
    survive a crash (mkdir alone may live only in the page cache)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in reversed(missing):
        fsync_dir(created.parent)


def atomic_write(
    path: Path, data: bytes, *, sync_dir: bool = True, mode: int | None = None
) -> None:
    """Write a temporary file beside `path`, fsync it, rename it into place, fsync the folder:
    all or nothing. With sync_dir=False the caller fsyncs the folder (once for many files)."""
    make_dirs_durably(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)
