"""Crash-safe file writes shared by every writer in app/ (catalog images, index snapshots,
bundles): a file that exists is complete, and a name that was returned survives power loss."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from app.errors import (
    ConfigurationError,
    InsufficientStorage,
    ServiceError,
    StorageUnavailable,
)

TMP_PREFIX: Final = ".tmp-"


def read_small_file(path: str, limit: int, where: str) -> tuple[bytes, os.stat_result]:
    """At most `limit` + 1 bytes of a regular file (a secret: a key file, a pass phrase) and
    its stat. ConfigurationError, naming `where`, when it cannot be opened or is not a regular
    file: a FIFO would block the read, a device never ends. The descriptor is always closed
    (a folder in its place leaked one per attempt, round 27)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"{where} is not a regular file (a folder, a pipe?)")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    except OSError as exc:
        raise ConfigurationError(f"cannot read {where}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if missing): one holder at a time across the
    threads and processes (workers, replicas on one volume) that use it; each call opens its
    own file description, so threads of one process exclude each other too. The kernel
    releases it if the holder dies."""
    check_folder(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        # a read-only or unwritable folder: an existing lock file locks as well read-only;
        # else the folder's problem as every route reports it (503/507), never a raw error
        # (round 43: one escaped the teach-job thread, which ended, and its queue stalled)
        fd = _read_only(path, exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def _read_only(path: Path, exc: OSError) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except OSError:
        raise (storage_error(exc) or exc) from exc


def visible_entries(folder: Path) -> list[str]:
    """Entries of `folder` not starting with '.'; none if it is gone or not a folder (a folder
    deleted by another process mid-scan is skipped, not an error)."""
    try:
        return [n for n in os.listdir(folder) if not n.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync_dir(path: Path) -> None:
    """Make the names in `path` (new, renamed, removed entries) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs_durably(path: Path) -> None:
    """mkdir -p, then fsync the parent of every folder that was created, so the new folders
    survive a crash (mkdir alone may live only in the page cache). Never recreates a watched
    data folder that was removed or replaced (check_folder)."""
    check_folder(path)
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


_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
# sqlite3 primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_FULL, _SQLITE_CANTOPEN = 5, 6, 8, 13, 14
_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_IOERR = 11, 26, 10


def database_gone() -> StorageUnavailable:
    """The catalog database was removed, replaced or damaged under the running server:
    nothing a client can fix by sending another request."""
    return StorageUnavailable(
        "The catalog database is missing or damaged (its file was removed or replaced while "
        "the server ran); restore the data folder or restart the server. Predictions without "
        "catalogs still work."
    )


def out_of_descriptors(exc: BaseException) -> ServiceError | None:
    """The 503 to retry when `exc` is the process (or system) out of file descriptors, else
    None. Wherever it comes from (a module Pillow imports on the first picture of a kind, a
    file a decoder opens), it is the server's state, never the request's fault."""
    if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
        return storage_error(exc)
    return None


def storage_error(exc: BaseException) -> ServiceError | None:
    """The client-facing error for a failing data folder (disk full, read-only, no
    permission, database locked, database removed or damaged under the running server), or
    None when `exc` is not one of those."""
    if isinstance(exc, sqlite3.DatabaseError):
        code = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            return database_gone()
        if code == _SQLITE_IOERR:  # e.g. its -wal file removed or swapped under the server
            return StorageUnavailable(
                "The catalog database could not be read or written (an I/O error: the data "
                "folder's files were moved, removed or are failing); nothing was stored. "
                "Restore the data folder or restart the server."
            )
        if code == _SQLITE_FULL:
            return InsufficientStorage(
                "The data folder's disk is full; nothing was stored. Free space and retry."
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return StorageUnavailable(
                "The catalog database is locked by another process; retry shortly.",
                retry_after_s=5,
            )
        if code in (_SQLITE_READONLY, _SQLITE_CANTOPEN):
            return StorageUnavailable(
                "The catalog database cannot be written (read-only data folder or missing "
                "permissions); reads and predictions still work."
            )
        return None
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        if exc.errno in _FULL:
            return InsufficientStorage(
                "The data folder's disk is full; nothing was stored. Free space and retry."
            )
        if exc.errno in _READ_ONLY:
            return StorageUnavailable(
                "The data folder cannot be written (read-only or missing permissions); "
                "reads and predictions still work."
            )
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # the process or system is out of fds
            return StorageUnavailable(
                "The server has no file descriptors free right now (too many open "
                "connections or files); nothing was changed. Retry shortly.",
                retry_after_s=1,
            )
    return None


# The service's own folders in the data folder: catalogs, teach jobs, taught bundles.
SERVICE_FOLDERS: Final = ("catalogs", "teach", "models")


def unwritable(folder: Path) -> str:
    """Why `folder` could not be made and written in ("" when it could), found by writing a
    probe file in the nearest folder that exists (nothing is made)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    probe = existing / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return str(exc.strerror or exc)
    return ""


def check_writable(folder: Path, parts: tuple[str, ...] = SERVICE_FOLDERS) -> None:
    """Create `folder` and write, then remove, a probe file in it; raise ConfigurationError
    naming the folder and the OS's reason when that fails (read-only, no permission), or when
    one of the service's folders in it is a file (round 31: `teach` as a file was a traceback,
    `models` as a file was taken for the folder); a full disk is let through (predictions
    still work, writes answer 507)."""
    for part in parts:
        if os.path.lexists(folder / part) and not (folder / part).is_dir():
            raise ConfigurationError(
                f"{folder / part} is a file (or a link to no folder), but the service keeps a "
                "folder there (IMGCLASS_DATA_DIR): move it away."
            )
    # unique per call: replicas sharing a volume can have the same pid (1 in each container)
    probe = folder / f"{TMP_PREFIX}write-probe-{os.getpid()}-{secrets.token_hex(8)}"
    try:
        make_dirs_durably(folder)
        atomic_write(probe, b"probe")
        probe.unlink()
    except OSError as exc:
        if exc.errno in _FULL:  # a full disk still serves predictions; writes answer 507
            Path(probe).unlink(missing_ok=True)
            return
        raise ConfigurationError(
            f"the data folder {folder} (IMGCLASS_DATA_DIR) is not writable: "
            f"{exc.strerror or exc}. Catalogs, taught models and jobs are stored there; "
            "mount it read-write for the service's user."
        ) from exc


def check_listable(folder: Path, setting: str) -> None:
    """Raise ConfigurationError when `folder` exists but this user cannot list it (a mount
    of another owner's 0700 folder): without this every bundle stayed "loading" (round 29)."""
    try:
        if folder.is_dir():
            with os.scandir(folder) as entries:  # closed: -X dev warned of it (round 40)
                next(entries, None)
    except OSError as exc:
        raise ConfigurationError(
            f"the folder {folder} ({setting}) cannot be read: {exc.strerror or exc}. Make it "
            "readable by the service's user (chmod -R a+rX)."
        ) from exc


MIN_FREE_BYTES: Final = 1024 * 1024  # less than this free on the data folder's disk: "full"


_NOT_A_FOLDER: Final = (-1, -1)


class FolderIdentity:
    """Which folder a path named when the server started or first saw it (device and inode),
    so that a probe and every writer can tell, with one stat call, that the data folder was
    removed or replaced under the running server."""

    _first_seen: Final = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.abspath = os.path.abspath(path)
        key = self._stat()
        self._key = None if key == _NOT_A_FOLDER else key

    def _stat(self) -> tuple[int, int] | None:
        """(device, inode) of the folder; None while nothing is there; (-1, -1) for a file, a
        link to no folder or anything else that is not a folder (never the folder: round 31)."""
        try:
            st = os.stat(self.path)
        except OSError:  # nothing there, or a link to nothing (or to itself)
            return _NOT_A_FOLDER if os.path.lexists(self.path) else None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else _NOT_A_FOLDER

    def intact(self) -> bool:
        """False when the folder, once seen, is now missing or another folder, or when a file
        stands where it goes. A folder that did not exist yet (created on first write) is
        watched from the first call that sees it."""
        key = self._key  # read before the stat: another thread may set it meanwhile (CI, 57)
        now = self._stat()
        if now == _NOT_A_FOLDER:
            return False
        if key is None:
            if now is not None:
                with self._first_seen:
                    self._key = self._key or now
            return True
        return now == key

    def writes(self) -> str:
        """'ok', 'full' (under MIN_FREE_BYTES left for the service: writes answer 507) or
        'read-only' (a read-only mount, or no write permission: writes answer 503), from two
        cheap system calls; predictions work in every case."""
        try:
            st = os.statvfs(self.path)
        except OSError:
            return "ok"  # not created yet (made on first write), or gone: intact() says so
        if st.f_flag & os.ST_RDONLY or not os.access(self.path, os.W_OK):
            return "read-only"
        return "full" if st.f_bavail * st.f_frsize < MIN_FREE_BYTES else "ok"

    def covers(self, path: Path) -> bool:
        p = os.path.abspath(path)
        return p == self.abspath or p.startswith(self.abspath.rstrip(os.sep) + os.sep)


# Data folders that writes must not silently recreate (app.main registers the service's).
_WATCHED: list[FolderIdentity] = []
_WATCHED_LOCK = threading.Lock()


def watch_folder(identity: FolderIdentity) -> None:
    """Refuse writes under `identity.path` from now on whenever it was removed or replaced:
    moved away, the server would otherwise recreate it, and store some of a write there and
    the rest (SQLite, through its open connection) in the moved folder."""
    with _WATCHED_LOCK:
        _WATCHED[:] = [w for w in _WATCHED if w.abspath != identity.abspath] + [identity]


def watch_data_folders(root: Path, parts: tuple[str, ...]) -> list[FolderIdentity]:
    """Watch the data folder and the service's own folders in it (first the root). Only the
    root was watched: with `catalogs` alone moved aside, every catalog call answered 503
    while /readyz said storage "ok" (round 29)."""
    identities = [FolderIdentity(root), *(FolderIdentity(root / part) for part in parts)]
    for identity in identities:
        watch_folder(identity)
    return identities


def make_service_folders(root: Path, parts: tuple[str, ...]) -> None:
    """Create the data folder and the service's folders in it, where they are missing, before
    they are watched: their identities are then recorded at start-up, not by whichever
    start-up thread first writes (two of them creating the folders at once made start-up fail
    with "removed or replaced": CI, stops 57 and 58). Best effort: a read-only or not-permitted
    folder (or a file in a folder's place) is left as it is, and its writes answer 503."""
    for part in parts:
        with contextlib.suppress(OSError, StorageUnavailable):
            make_dirs_durably(root / part)


def folder_gone(reading: bool = False) -> StorageUnavailable:
    outcome = "its files cannot be read" if reading else "nothing was stored"
    return StorageUnavailable(
        f"The data folder was removed or replaced while the server ran; {outcome}. "
        "Restore it (or restart the server). Predictions without catalogs still work."
    )


def check_folder(path: Path, reading: bool = False) -> None:
    """Raise StorageUnavailable (503) when `path` lies in a watched data folder that was
    removed or replaced (called by every write helper here, before anything is created, and
    by reads that miss a file, which is then the folder's fault, not the client's)."""
    for identity in _WATCHED:
        if identity.covers(path) and not identity.intact():
            raise folder_gone(reading)
