"""Set up prometheus-client's multiprocess mode before uvicorn starts several workers.

Kept apart from app.telemetry on purpose: importing prometheus-client (or defining a metric)
in the parent process before this runs would open metric files in a folder not yet made.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from app.errors import ConfigurationError
from app.fsutil import unwritable

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX: Final = "imgclass-metrics-"


def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def check_multiprocess_dir() -> None:
    """Raise ConfigurationError when PROMETHEUS_MULTIPROC_DIR is set to a folder the server
    cannot make or write in (round 44: a file there was a traceback in the parent, a read-only
    mount one in every worker, restarted three times)."""
    path = multiprocess_dir()
    if path is None:
        return
    why = "it is not a folder" if path.exists() and not path.is_dir() else unwritable(path)
    if why:
        raise ConfigurationError(
            f"{MULTIPROC_ENV}={path} cannot hold the metrics files: {why}. "
            "Point it at a folder the service's user can write (a tmpfs on a read-only root), "
            "or leave it unset."
        )


def prepare_multiprocess_dir(workers: int) -> Path | None:
    """With several workers, metrics go through files in PROMETHEUS_MULTIPROC_DIR (a fresh
    temporary folder when unset). A folder that is set is emptied first, as prometheus-client
    requires, so counters of an earlier run do not leak in; with one worker too, which then
    writes there as well (an earlier run killed with a request in flight left
    imgclass_requests_in_flight at 1 for good). One worker and none set: nothing to do."""
    path = multiprocess_dir()
    if path is None and workers <= 1:
        return None
    if path is None:
        _remove_orphans(Path(tempfile.gettempdir()))
        path = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
        os.environ[MULTIPROC_ENV] = str(path)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return path


def _remove_orphans(tmp: Path) -> None:
    """Folders this user's servers made and left (a parent killed with SIGKILL cannot remove
    its own; round 40): named after their server's pid, removed once no such process lives."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    for folder in tmp.glob(f"{_PREFIX}*-*"):
        pid = folder.name.removeprefix(_PREFIX).split("-", 1)[0]
        try:
            if not pid.isdigit() or (uid is not None and folder.stat().st_uid != uid):
                continue
            os.kill(int(pid), 0)  # still running (or another user's: PermissionError)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, OverflowError):
            continue


def forget_dead_worker(pid: int) -> None:
    """Drop the live gauges (in-flight requests, queue depth) of a worker that died without
    its shutdown (a crash, SIGKILL, the OOM killer): they are summed over every file in the
    folder, so its last values would count for good. Its counters stay: totals never drop."""
    path = multiprocess_dir()
    if path is None:
        return
    from prometheus_client import multiprocess  # the folder is prepared by now

    multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


@contextmanager
def multiprocess_metrics(workers: int) -> Iterator[Path | None]:
    """`prepare_multiprocess_dir` for the server's lifetime; a folder it had to make (none was
    given) is removed when the server stops instead of being left in the temp dir."""
    made = multiprocess_dir() is None
    path = prepare_multiprocess_dir(workers)
    try:
        yield path
    finally:
        if made and path is not None:
            shutil.rmtree(path, ignore_errors=True)
