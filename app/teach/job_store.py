"""Teach job files: each job is a small JSON file under <data_dir>/teach/jobs/, so any process
sharing the folder can report it and a restart marks the jobs a dead process left running as
failed. Every write goes through one lock file (flock), so processes sharing the folder never
teach one name twice nor lose each other's cancel. The worker that runs jobs is app.teach.jobs."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import TypeAdapter

from app.bundle_write import atomic_write
from app.errors import PROBLEM_BASE, ServiceError
from app.fsutil import file_lock, storage_error
from app.teach.errors import JobNotFound
from app.telemetry import TEACH_JOBS_ENDED

logger = logging.getLogger(__name__)

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: tuple[Status, ...] = ("queued", "running")
# A job of another pid namespace (a replica in its own container on the shared volume) whose
# file was not touched for this long lost its process: its pid means nothing here.
STALE_AFTER_S = 120.0
# Job errors have the problem+json shape of every other error (type, title, status, detail).
INTERRUPTED: Final = {
    "type": PROBLEM_BASE + "interrupted",
    "title": "Interrupted",
    "status": 503,
    "detail": "The server stopped while this job was queued or running; start it again.",
}
# Phases after a job's last cancellation point: its model is being written and loaded, and
# the job ends succeeded or failed, never cancelled (a process dying then: JobStore.fail).
PUBLISHING: Final = ("writing bundle", "loading")
KEEP_FINISHED = 500  # finished jobs kept on disk (pruned at start-up and as jobs finish)


def now() -> str:
    """An ISO 8601 UTC time stamp to the millisecond, as job files store times."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _pid_namespace() -> str:
    """Which processes a pid names: the host name and this pid namespace (containers sharing a
    volume reuse the same small pids, so a pid alone cannot say whose job it is)."""
    try:
        ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        ns = "-"
    return f"{socket.gethostname()}/{ns}"


PID_NAMESPACE: Final = _pid_namespace()


def _stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat's fields after the command name (state first), None where unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def process_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot, /proc/<pid>/stat field 22), or None
    where /proc cannot say. With the pid it names one process: a pid the kernel handed to a
    new process after the job's owner died reads as another process, not as the owner."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (ValueError, IndexError):
        return None


@dataclass
class Job:
    id: str
    catalog: str
    model: str
    options: dict[str, Any]
    status: Status = "queued"
    progress: float = 0.0
    phase: str = "queued"
    created_at: str = field(default_factory=now)
    started_at: str | None = None
    finished_at: str | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    owner_pid: int = field(default_factory=os.getpid)
    owner_namespace: str = PID_NAMESPACE
    # process_start(owner_pid) when the job was made; None in files older than it (the pid
    # alone then says whether the owner lives)
    owner_start: int | None = None
    cancel_requested: bool = False
    # X-Request-ID of the request that made the job: its log lines carry it too.
    request_id: str = "-"

    @property
    def done(self) -> bool:
        return self.status not in ACTIVE


_JOB_FILE: Final = TypeAdapter(Job)


def _read_job(raw: object) -> Job:
    """A job file's JSON as a Job, every field of its declared type (ValueError otherwise): a
    damaged or hand-edited file reads as no job, never as a job a view cannot show."""
    if not isinstance(raw, dict):
        raise ValueError("a job file holds one JSON object")
    return _JOB_FILE.validate_python(raw)


PID_MAX: Final = 1 << 22  # Linux's largest pid_max


def _pid_alive(pid: int, started: int | None = None) -> bool:
    """A process of this pid namespace runs as `pid`: not gone, not a zombie (killed and
    not yet reaped, as in a container without an init process: its jobs read `running`
    for as long as it stayed one, round 31), and, where the job recorded when its owner
    started, that same process (a reused pid read as the owner alive, round 32)."""
    if not 0 < pid <= PID_MAX:  # a damaged or hand-edited file: 2**40 was a 500 (round 31)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc here: kill's answer is all there is
    if not fields or fields[0] in (b"Z", b"X"):
        return False
    return started is None or fields[19:20] == [str(started).encode()]


class JobStore:
    """Job files: <root>/<id>.json, written atomically."""

    def __init__(self, root: Path, withdraw: Callable[[Job], list[str]] | None = None) -> None:
        self.root = root
        # Removes what a job that died while publishing put in place (app.teach.core):
        # the versions withdrawn.
        self._withdraw = withdraw
        # file name -> (its stat, the job read): all() parses only files that changed (a
        # finished job's file holds its metrics; 500 of them re-read per listing is real CPU).
        # Every save is a new file (atomic rename): a new inode and ctime. A finished job is
        # kept without its result and warnings (up to 1.4 MB a job with 100 long labels: 500
        # of them had taken +342 MB of each process, fuzz round 16); `load` reads them.
        self._read: dict[str, tuple[tuple[int, ...], Job]] = {}

    def path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's lock: one read-check-write at a time across the processes (workers,
        replicas on one volume) that share it. Released by the kernel if the holder dies."""
        with file_lock(self.root / ".lock"):
            yield

    def save(self, job: Job) -> None:
        """Write the job's file; a full disk or read-only folder is its problem (507/503)."""
        # atomic_write makes the folder, and never recreates a data folder moved away
        # under the server (fsutil.check_folder)
        try:
            atomic_write(self.path(job.id), json.dumps(asdict(job), indent=1).encode())
        except OSError as exc:
            raise (storage_error(exc) or exc) from exc

    def save_owned(self, job: Job) -> None:
        """The owner's write: a cancel that another process wrote into the file wins, so the
        owner's progress saves never undo it (the owner then stops at its next check)."""
        with self.locked():
            with contextlib.suppress(ServiceError):
                if self.load(job.id).cancel_requested:
                    job.cancel_requested = True
            self.save(job)

    def load(self, job_id: str) -> Job:
        if not job_id.isalnum() or len(job_id) > 64:
            raise JobNotFound(f"No job {job_id[:64]!r}.")
        try:
            raw = json.loads(self.path(job_id).read_text(encoding="utf-8"))
            return _read_job(raw)
        except (OSError, ValueError, TypeError) as exc:
            raise JobNotFound(f"No job {job_id!r}.") from exc

    def all(self) -> list[Job]:
        """Every readable job file (copies: callers may change them); finished jobs without
        their result and warnings (`load` reads a whole one)."""
        try:
            names = sorted(n for n in os.listdir(self.root) if n.endswith(".json"))
        except OSError:
            return []
        jobs, cache = [], self._read
        for name in names:
            try:
                st = os.stat(self.root / name)
                key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                hit = cache.get(name)
                if hit is None or hit[0] != key:
                    raw = json.loads((self.root / name).read_text(encoding="utf-8"))
                    job = _read_job(raw)
                    hit = (key, replace(job, result=None, warnings=[]) if job.done else job)
                    cache[name] = hit
            except (OSError, ValueError, TypeError):
                continue
            jobs.append(replace(hit[1]))
        for gone in set(cache) - set(names):
            cache.pop(gone, None)
        return jobs

    def prune_if_over(self, keep: int = KEEP_FINISHED) -> int:
        """prune() once the folder holds 10% more files than `keep` (a listing, not a read of
        every file, decides)."""
        try:
            n = sum(1 for name in os.listdir(self.root) if name.endswith(".json"))
        except OSError:
            return 0
        return self.prune(keep) if n > keep + keep // 10 else 0

    def prune(self, keep: int = KEEP_FINISHED) -> int:
        """Remove all but the newest `keep` finished jobs (the folder must not grow forever)."""
        done = sorted((j for j in self.all() if j.done), key=lambda j: j.created_at)
        old = done[: max(0, len(done) - keep)]
        for job in old:
            self.path(job.id).unlink(missing_ok=True)
        return len(old)

    def orphaned(self, job: Job, at_start: bool = False) -> bool:
        """An active job whose process is gone: a dead pid of this pid namespace (at start-up
        also this very pid, from an earlier life; at any time this pid when the job records
        another start), or, owned in another namespace, a file
        untouched for STALE_AFTER_S (its process touches it every second while it lives)."""
        if job.done:
            return False
        if job.owner_namespace == PID_NAMESPACE:
            mine = job.owner_pid == os.getpid() and job.owner_start in (
                None,
                process_start(os.getpid()),
            )
            return (at_start and mine) or (
                not mine and not _pid_alive(job.owner_pid, job.owner_start)
            )
        try:
            age = time.time() - self.path(job.id).stat().st_mtime
        except OSError:
            return False
        return age > STALE_AFTER_S

    def fail(self, job: Job) -> None:
        """An orphan (its process died) failed; a version it was publishing is withdrawn."""
        job.status, job.finished_at = "failed", now()
        job.error = dict(INTERRUPTED)
        if job.phase in PUBLISHING and self._withdraw is not None:
            try:
                gone = self._withdraw(job)
            except OSError as exc:
                logger.error("teach job %s: its version could not be withdrawn: %s", job.id, exc)
                gone = []
            if gone:
                logger.warning(
                    "teach job %s died publishing %s v%s: withdrawn",
                    job.id,
                    job.model,
                    ", v".join(gone),
                )
                job.error["detail"] = (
                    f"The server stopped while this job published {job.model} "
                    f"v{', v'.join(gone)}; that version was withdrawn, so nothing of this job is "
                    "served. Start it again."
                )
        self.save(job)
        TEACH_JOBS_ENDED.labels("failed").inc()

    def fail_orphans(self) -> int:
        """Jobs queued or running in a process that no longer exists failed: their work is
        lost, the client must start them again."""
        n = 0
        with self.locked():
            for job in self.all():
                if self.orphaned(job, at_start=True):
                    self.fail(job)
                    n += 1
        return n

    def touch(self, job_ids: list[str]) -> None:
        """The heartbeat that tells other pid namespaces these jobs' process is alive."""
        for job_id in job_ids:
            with contextlib.suppress(OSError):
                os.utime(self.path(job_id))
