"""Teach jobs: one worker thread per process runs them in order (`JobRunner`). The jobs live in
job files every process sharing the data folder reads and writes (app.teach.job_store), so any
of them can report or cancel a job, and a name is never taught twice at once."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from app.errors import ServiceError
from app.fsutil import storage_error
from app.log_format import request_id_var
from app.logs import logging_as
from app.teach.errors import (
    JobConflict,
    JobEnded,
    JobNotFound,
    JobPublishing,
    JobQueueFull,
    TeachCancelled,
)
from app.teach.job_store import (
    INTERRUPTED,
    PUBLISHING,
    Job,
    JobStore,
    Status,
    now,
    process_start,
)
from app.telemetry import TEACH_JOBS_ENDED

logger = logging.getLogger(__name__)

_SAVE_EVERY_S = 0.25  # progress writes at most this often
_RETRY_SAVE_S = 2.0  # an ended job whose file could not be written is written again this often
_HEARTBEAT_S = 1.0  # a running job's process touches its active job files this often
# A bug's job error, in the problem+json shape of every other error (as INTERRUPTED).
CRASHED: Final = ServiceError("An unexpected error occurred; it has been logged.").to_problem()
KEEP_IN_MEMORY = 64  # finished jobs a runner keeps in memory (older ones are read from disk)


Work = Callable[[Job, Callable[[str, float], None], Callable[[], bool]], dict[str, Any]]


def _check_cancellable(job: Job) -> None:
    if job.done:
        raise JobEnded(
            f"Job {job.id} already ended ({job.status}); nothing to cancel.",
            job_status=job.status,
        )
    if job.phase in PUBLISHING:
        raise JobPublishing(
            f"Job {job.id} is past its last step ({job.phase}): it can no longer be cancelled "
            f"and will end succeeded or failed. Read its final status at /v1/jobs/{job.id}; "
            "a model it publishes can be deleted with DELETE /v1/models/{name}@{version}.",
            job_status=job.status,
            phase=job.phase,
        )


def failure(exc: BaseException) -> ServiceError | None:
    """A job's error as the client's problem: its own, or the data folder's (a full disk is a
    507, as on every route); None for a bug."""
    return exc if isinstance(exc, ServiceError) else storage_error(exc)


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
        # Jobs this process ended whose file could not say so (a full disk): their files still
        # read "queued" or "running", which every process would take for a live job of that
        # model name. Written again every _RETRY_SAVE_S until the disk takes them.
        self._unsaved: set[str] = set()

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
            self._save_unsaved()
            with self.store.locked():  # the checks and the new file: one step for all processes
                others, waiting = [], 0
                for other in self.store.all():
                    known = self._jobs.get(other.id)  # this process's own state is the newest
                    if (known or other).status == "queued" and not self.store.orphaned(other):
                        waiting += 1  # queued in any process (round 28: the running one
                        # counted, and each process counted only its own)
                    if other.model != model or other.done:
                        continue
                    if known is not None and known.done:  # ended here; its file lags behind
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
                if waiting >= self._max_queued:
                    raise JobQueueFull(
                        f"{waiting} teach jobs are already waiting; retry later.",
                        retry_after_s=10,
                    )
                job = Job(
                    id=secrets.token_hex(8),
                    catalog=catalog,
                    model=model,
                    options=options,
                    request_id=request_id_var.get(),
                    owner_start=process_start(os.getpid()),
                )
                self.store.save(job)  # first: a job whose file failed was never queued
                self._jobs[job.id] = job
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
        return [j if j.id in mine else self._whole(j) for j in found[:limit]], len(found)

    def _whole(self, job: Job) -> Job:
        """A finished job from the store with its result and warnings (all() leaves them out),
        or as listed if its file has gone since (pruned)."""
        if not job.done:
            return job
        try:
            return self.store.load(job.id)
        except JobNotFound:
            return job

    def cancel(self, job_id: str) -> Job:
        """Cancel a queued job, or ask a running one to stop; 409 (JobEnded) for a job that
        already ended, which a cancel cannot change."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                _check_cancellable(job)
                job.cancel_requested = True
                if job.status == "queued":
                    self._finish(job, "cancelled")
                else:
                    self.store.save_owned(job)
                return replace(job)
        with self.store.locked():
            job = self.store.load(job_id)
            _check_cancellable(job)  # owned by another process: it polls the flag in the file
            job.cancel_requested = True
            self.store.save(job)
        return job

    def _finish(self, job: Job, status: Status) -> None:
        """(caller holds self._lock)"""
        job.status, job.finished_at = status, now()
        TEACH_JOBS_ENDED.labels(status).inc()
        if status == "succeeded":
            job.progress, job.phase = 1.0, "done"
        try:
            self.store.save_owned(job)
        except ServiceError as exc:  # e.g. a full disk: the job stays known here, saved later
            logger.warning("teach job %s %s, but its file was not saved: %s", job.id, status, exc)
            self._unsaved.add(job.id)
            return
        self._unsaved.discard(job.id)
        # Bounded over any uptime: finished jobs beyond KEEP_IN_MEMORY are read from disk when
        # asked for, and the folder keeps the newest KEEP_FINISHED (a submit and /metrics read
        # every file; 20,000 of them took 2 s a submit).
        done = [j for j in self._jobs.values() if j.done]
        for old in done[: max(0, len(done) - KEEP_IN_MEMORY)]:  # dicts keep insertion order
            del self._jobs[old.id]
        self.store.prune_if_over()

    def _save_unsaved(self) -> None:
        """Write the files of ended jobs that could not be written before (caller holds the
        lock); those that still cannot wait for the next try."""
        for job_id in list(self._unsaved):
            job = self._jobs.get(job_id)
            if job is None:
                self._unsaved.discard(job_id)
                continue
            with contextlib.suppress(ServiceError):
                self.store.save_owned(job)
                self._unsaved.discard(job_id)

    def _loop(self) -> None:
        while True:
            try:
                job_id = self._queue.get(timeout=_RETRY_SAVE_S)
            except queue.Empty:
                with self._lock:
                    self._save_unsaved()
                continue
            if job_id is None:
                return
            try:
                self._take(job_id)
            except Exception as exc:  # never let one job end the worker (the queue would stall)
                with self._lock:
                    job = self._jobs.get(job_id)
                try:
                    self._fail(job, job_id, exc)
                except Exception:  # not even a failure could be recorded: the queue goes on
                    logger.exception("teach job %s: its failure was not recorded", job_id)

    def _fail(self, job: Job | None, job_id: str, exc: BaseException) -> None:
        """End a job on an error (called in its except block): its own or the data folder's
        problem (a full disk is a 507), logged in a line, or a bug, CRASHED and logged with its
        traceback."""
        problem = failure(exc)
        if problem is None:
            logger.exception("teach job %s crashed", job_id)
        else:
            logger.info("teach job %s failed: %s", job_id, problem.detail)
        with self._lock:
            if job is not None and not job.done:
                job.error = dict(CRASHED) if problem is None else problem.to_problem()
                self._finish(job, "failed")

    def _take(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done:
                return
            if self._stopping.is_set():  # queued when the server stopped
                job.error = dict(INTERRUPTED)
                self._finish(job, "failed")
                return
            job.status, job.started_at, job.phase = "running", now(), "starting"
            self.store.save_owned(job)
        with logging_as(job.request_id):  # the job's lines carry its train request's id
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
                # past the last cancellation point: saved at once, so that every process
                # refuses a cancel from now on (cancel reads the phase under the same lock)
                publishing = phase in PUBLISHING and job.phase not in PUBLISHING
                job.phase = phase
                job.progress = round(max(job.progress, lo + (hi - lo) * min(1.0, fraction)), 3)
                if publishing or time.monotonic() - last_save[0] >= _SAVE_EVERY_S:
                    last_save[0] = time.monotonic()
                    self.store.save_owned(job)  # merges a cancel another process wrote
                if publishing and job.cancel_requested:  # a cancel that came before: it wins
                    raise TeachCancelled()

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
        except Exception as exc:  # its own error, the data folder's, or a bug
            self._fail(job, job.id, exc)
            return
        with self._lock:
            job.result = result
            job.warnings = list(result.get("warnings", []))
            self._finish(job, "succeeded")
        logger.info("teach job %s succeeded: %s v%s", job.id, job.model, result.get("version"))
