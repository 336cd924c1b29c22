"""Room kept on the data folder's disk for deletes.

On a full disk SQLite cannot delete either (its journal needs room), so a client told "free
space and retry" could not free any through the API: deleting items and catalogs answered 507
too. The catalog service keeps a reserve file of RESERVE_BYTES in its folder; a delete that
fails for want of space removes the reserve and runs once more. The reserve comes back, once
the disk has room to spare for it, at start-up and after each delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from app.errors import InsufficientStorage
from app.fsutil import TMP_PREFIX, storage_error

logger = logging.getLogger(__name__)
T = TypeVar("T")

RESERVE_BYTES: Final = 8 * 1024 * 1024
RESERVE_NAME: Final = ".space-reserve"
_CHUNK: Final = 1024 * 1024


class SpaceReserve:
    def __init__(self, folder: Path, size: int = RESERVE_BYTES) -> None:
        self.path = folder / RESERVE_NAME
        self.size = size

    def ensure(self) -> bool:
        """Make the reserve if it is missing and the disk has four times its size free;
        whether it exists now. Never raises: the reserve is a courtesy, not a requirement."""
        if self.path.is_file():
            return True
        tmp = self.path.with_name(TMP_PREFIX + RESERVE_NAME)  # one name: a crash leaves one
        try:
            st = os.statvfs(self.path.parent)
            if st.f_bavail * st.f_frsize < 4 * self.size:
                return False
            with open(tmp, "wb") as f:  # written, not sparse: the blocks must be really taken
                for _ in range(self.size // _CHUNK):
                    f.write(bytes(_CHUNK))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            return True
        except OSError as exc:
            logger.info("no space reserve in %s: %s", self.path.parent, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return False

    def release(self) -> bool:
        """Remove the reserve (its room goes to a delete); whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        logger.warning(
            "the data folder's disk is full: its %d MiB reserve was released so that a delete "
            "can run; it comes back once the disk has room",
            self.size >> 20,
        )
        return True

    def freeing(self, work: Callable[[], T]) -> T:
        """A delete, run once more after releasing the reserve when the disk was too full for
        it; the reserve is made again afterwards when there is room."""
        try:
            out = work()
        except Exception as exc:
            if not isinstance(storage_error(exc), InsufficientStorage) or not self.release():
                raise
            out = work()
        self.ensure()
        return out
