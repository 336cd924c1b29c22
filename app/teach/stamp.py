"""The taught-models change stamp: `<taught_dir>/.generation`, a small file every process appends
one byte to after it publishes or removes a taught version (app/teach/compose.py).

Its (inode, size, mtime) is the stamp. Appends with O_APPEND are atomic, so concurrent writers in
different processes each make the file longer and no bump is lost, even when the clock's
granularity gives two bumps the same mtime. A reader needs one os.stat to know whether the taught
folder changed since it last looked (ModelRegistry.get). The file grows one byte per change.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

logger = logging.getLogger(__name__)

STAMP_FILE: Final = ".generation"

Stamp = tuple[int, int, int] | None  # (inode, size, mtime_ns); None while no bump ever happened


def stamp_path(root: Path) -> str:
    return os.fspath(root / STAMP_FILE)


def read_stamp(path: str) -> Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def bump(root: Path) -> None:
    """Tell every process sharing `root` that its taught bundles changed. Call it after the
    change is visible on disk (after the rename). A failure is logged, not raised: the change
    itself succeeded, and the registries' poll still finds it."""
    try:
        fd = os.open(stamp_path(root), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b".")
        finally:
            os.close(fd)
    except OSError as exc:
        logger.warning("could not bump the taught-models stamp in %s: %s", root, exc)
