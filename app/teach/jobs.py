"""Teach jobs: one worker thread per process runs them in order; each job is a small JSON file
under <data_dir>/teach/jobs/, so any process sharing the folder can report it and a restart marks
the jobs a dead process left running as failed. Every write goes through one lock file (flock), so
processes sharing the folder never teach one name twice nor lose each other's cancel."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import TypeAdapter

from app.bundle_write import atomic_write
from app.errors import PROBLEM_BASE, ServiceError
from app.fsutil import file_lock
from app.teach.errors import JobConflict, JobNotFound, JobQueueFull, TeachCancelled

logger = logging.getLogger(__name__)

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: tuple[Status, ...] = ("queued", "running")
_SAVE_EVERY_S = 0.25  # progress writes at most this often
_HEARTBEAT_S = 1.0  # a running job's process touches its active job files this often
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
CRASHED: Final = ServiceError("An unexpected error occurred; it has been logged.").to_problem()
KEEP_FINISHED = 500  # finished jobs kept on disk (pruned at start-up and as jobs finish)
KEEP_IN_MEMORY = 64  # finished jobs a runner keeps in memory (older ones are read from disk)


def _now() -> str:
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


@dataclass
class Job:
    id: str
    catalog: str
    model: str
    options: dict[str, Any]
    status: Status = "queued"
    progress: float = 0.0
    phase: str = "queued"
    created_at: str = field(default_factory=_now)
    started_at: str | None = None
    finished_at: str | None = None
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    owner_pid: int = field(default_factory=os.getpid)
    owner_namespace: str = PID_NAMESPACE
    cancel_requested: bool = False

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """Job files: <root>/<id>.json, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # file name -> (its stat, the job read): all() parses only files that changed (a
        # finished job's file holds its metrics; 500 of them re-read per listing is real CPU).
        # Every save is a new file (atomic rename): a new inode and ctime.
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
        # atomic_write makes the folder, and never recreates a data folder moved away
        # under the server (fsutil.check_folder)
        atomic_write(self.path(job.id), json.dumps(asdict(job), indent=1).encode())

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
        """Every readable job file (copies: callers may change them)."""
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
                    hit = (key, _read_job(raw))
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
        also this very pid, from an earlier life), or, owned in another namespace, a file
        untouched for STALE_AFTER_S (its process touches it every second while it lives)."""
        if job.done:
            return False
        if job.owner_namespace == PID_NAMESPACE:
            mine = job.owner_pid == os.getpid()
            return (at_start and mine) or (not mine and not _pid_alive(job.owner_pid))
        try:
            age = time.time() - self.path(job.id).stat().st_mtime
        except OSError:
            return False
        return age > STALE_AFTER_S

    def fail(self, job: Job) -> None:
        job.status, job.finished_at = "failed", _now()
        job.error = dict(INTERRUPTED)
        self.save(job)

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


Work = Callable[[Job, Callable[[str, float], None], Callable[[], bool]], dict[str, Any]]


class JobRunner:
    """A bounded queue and one worker thread (teaching is CPU work; one at a time per process)."""

    def __init__(self, store: JobStore, work: Work, max_queued: int = 8) -> None:
        self.store = store
        self._work = work
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._max_queued = max_queued
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        failed = self.store.fail_orphans()
        self.store.prune()
        if failed:
            logger.warning("%d teach job(s) interrupted by a restart were marked failed", failed)
        self._thread = threading.Thread(target=self._loop, name="teach-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """At shutdown: the running job stops at its next check and, like the queued ones,
        ends failed ("Interrupted"), not cancelled: no client cancelled it."""
        if self._thread is not None:
            self._stopping.set()
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def submit(self, catalog: str, model: str, options: dict[str, Any]) -> Job:
        with self._lock:
            mine = [j for j in self._jobs.values() if not j.done]
            if len(mine) >= self._max_queued:
                raise JobQueueFull(
                    f"{len(mine)} teach jobs are already waiting; retry later.", retry_after_s=10
                )
            with self.store.locked():  # the check and the new file: one step for all processes
                others = []
                for other in self.store.all():
                    if other.model != model or other.done:
                        continue
                    if self.store.orphaned(other):  # its process died: it teaches nothing
                        self.store.fail(other)
                    else:
                        others.append(other)
                if others:
                    raise JobConflict(
                        f"Job {others[0].id} is already teaching model {model!r}; wait for it "
                        "or cancel it.",
                        job_id=others[0].id,
                    )
                job = Job(id=secrets.token_hex(8), catalog=catalog, model=model, options=options)
                self._jobs[job.id] = job
                self.store.save(job)
        self._queue.put(job.id)
        return replace(job)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return replace(job)
        job = self.store.load(job_id)  # another process's job, or an old one
        if self.store.orphaned(job):  # its process died and nothing restarted it yet
            with self.store.locked():
                job = self.store.load(job_id)
                if self.store.orphaned(job):
                    self.store.fail(job)
        return job

    def find(
        self, *, status: Status | None = None, model: str | None = None, limit: int = 50
    ) -> tuple[list[Job], int]:
        """Jobs of every process sharing the folder, newest first, as `get` reports each (this
        process's own from memory, a dead process's active ones failed), filtered; at most
        `limit` of them and how many matched."""
        with self._lock:
            mine = {job_id: replace(job) for job_id, job in self._jobs.items()}
        jobs = {job.id: job for job in self.store.all()}
        jobs.update(mine)  # fresher than their last save
        for job_id, job in jobs.items():
            if job_id not in mine and not job.done and self.store.orphaned(job):
                jobs[job_id] = self.get(job_id)  # marks it failed, as a GET of it would
        found = [
            j
            for j in jobs.values()
            if (status is None or j.status == status) and (model is None or j.model == model)
        ]
        found.sort(key=lambda j: (str(j.created_at), str(j.id)), reverse=True)
        return found[:limit], len(found)

    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                if not job.done:
                    job.cancel_requested = True
                    if job.status == "queued":
                        self._finish(job, "cancelled")
                    else:
                        self.store.save_owned(job)
                return replace(job)
        with self.store.locked():
            job = self.store.load(job_id)
            if not job.done:  # owned by another process: it polls the flag in the file
                job.cancel_requested = True
                self.store.save(job)
        return job

    def _finish(self, job: Job, status: Status) -> None:
        """(caller holds self._lock)"""
        job.status, job.finished_at = status, _now()
        if status == "succeeded":
            job.progress, job.phase = 1.0, "done"
        try:
            self.store.save_owned(job)
        except ServiceError as exc:  # e.g. the data folder moved away: the job stays known here
            logger.warning("teach job %s %s, but its file was not saved: %s", job.id, status, exc)
            return
        # Bounded over any uptime: finished jobs beyond KEEP_IN_MEMORY are read from disk when
        # asked for, and the folder keeps the newest KEEP_FINISHED (a submit and /metrics read
        # every file; 20,000 of them took 2 s a submit).
        done = [j for j in self._jobs.values() if j.done]
        for old in done[: max(0, len(done) - KEEP_IN_MEMORY)]:  # dicts keep insertion order
            del self._jobs[old.id]
        self.store.prune_if_over()

    def _loop(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            try:
                self._take(job_id)
            except Exception as exc:  # never let one job end the worker (the queue would stall)
                logger.exception("teach job %s could not be run", job_id)
                with self._lock:
                    job = self._jobs.get(job_id)
                    if job is not None and not job.done:
                        job.error = (
                            exc.to_problem() if isinstance(exc, ServiceError) else dict(CRASHED)
                        )
                        job.status, job.finished_at = "failed", _now()

    def _take(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return
            if self._stopping.is_set():  # queued when the server stopped
                job.error = dict(INTERRUPTED)
                self._finish(job, "failed")
                return
            job.status, job.started_at, job.phase = "running", _now(), "starting"
            self.store.save_owned(job)
        self._run(job)

    def _run(self, job: Job) -> None:
        last_save = [0.0]
        last_check = [time.monotonic()]

        def progress(phase: str, fraction: float) -> None:
            weights = {
                "reading embeddings": (0.0, 0.1),
                "validating": (0.1, 0.8),
                "fitting": (0.8, 0.9),
                "writing bundle": (0.9, 0.95),
                "loading": (0.95, 1.0),
            }
            lo, hi = weights.get(phase, (job.progress, job.progress))
            with self._lock:
                job.phase = phase
                job.progress = round(max(job.progress, lo + (hi - lo) * min(1.0, fraction)), 3)
                if time.monotonic() - last_save[0] >= _SAVE_EVERY_S:
                    last_save[0] = time.monotonic()
                    self.store.save_owned(job)

        def should_stop() -> bool:
            if job.cancel_requested or self._stopping.is_set():
                return True
            if time.monotonic() - last_check[0] > _HEARTBEAT_S:
                last_check[0] = time.monotonic()
                with self._lock:
                    active = [j.id for j in self._jobs.values() if not j.done]
                    # reads a cancel sent to another process; the rewrite is the heartbeat
                    self.store.save_owned(job)
                self.store.touch([j for j in active if j != job.id])
            return job.cancel_requested

        try:
            result = self._work(job, progress, should_stop)
        except TeachCancelled:
            with self._lock:
                if job.cancel_requested:
                    self._finish(job, "cancelled")
                else:  # the server is stopping
                    job.error = dict(INTERRUPTED)
                    self._finish(job, "failed")
            logger.info("teach job %s %s", job.id, job.status)
            return
        except ServiceError as exc:
            with self._lock:
                job.error = exc.to_problem()
                self._finish(job, "failed")
            logger.info("teach job %s failed: %s", job.id, exc.detail)
            return
        except Exception:  # a bug: report it on the job, keep the worker alive
            logger.exception("teach job %s crashed", job.id)
            with self._lock:
                job.error = dict(CRASHED)
                self._finish(job, "failed")
            return
        with self._lock:
            job.result = result
            job.warnings = list(result.get("warnings", []))
            self._finish(job, "succeeded")
        logger.info("teach job %s succeeded: %s v%s", job.id, job.model, result.get("version"))
