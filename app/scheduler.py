"""One model's request queue and worker threads: bounded admission, a per-request deadline,
decode + inference in one thread hop, and micro-batches of queued requests.

A `ModelScheduler` owns `pipelines` worker threads. Each worker takes queued requests (up to
the batch policy), decodes their images, runs one forward pass and hands every caller its own
rows. Pillow's decoder and onnxruntime release the GIL, so N workers with one onnxruntime
thread each use N cores (measured: 221 img/s vs 165 img/s for one pipeline with two
onnxruntime threads, 640 px JPEG, imagenet, 2 cores). A request may also bring an input
tensor that is already prepared (/v2 FP32): it waits in the same queue and shares batches.

Overload is answered at once: `admit`/`submit` raise `Overloaded` (503 + Retry-After) when the
work already waiting would take longer than `max_wait_s` to start (queued images x the model's
recent time per image / workers: the queue is bounded by the wait it imposes, so a light model
queues more requests than a heavy one), when `queue_limit` requests wait (a hard cap), or when
the bodies waiting would pass `max_bytes` (memory). A request still waiting at its deadline
gets `DeadlineExceeded` (503) and is never run. Workers log under the request id of the request a
line concerns (the batch's ids for the forward pass), see app.logs. What waits in the queue,
and how a result reaches its caller, is app.queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from app import telemetry
from app.bundle import InputSpec
from app.cores import lower_thread_priority
from app.errors import DeadlineExceeded, ModelNotFound, Overloaded, ServiceError
from app.imaging import ImageLimits, PreparedImage
from app.ingest import prepare_batch
from app.log_format import request_id_var
from app.logs import logging_as
from app.queued import QueuedJob, Scored, batch_ids, job_rows, resolve
from app.runtime import BatchPolicy, ModelOutput

logger = logging.getLogger(__name__)


class Runnable(Protocol):
    """What the scheduler needs from a model (OnnxModel, or a taught model)."""

    def run(self, batch: npt.NDArray[np.float32]) -> ModelOutput: ...


class ModelScheduler:
    """Queue + worker threads for one model. Thread-safe; `submit` is awaited on the loop."""

    def __init__(
        self,
        name: str,
        model: Runnable,
        spec: InputSpec,
        limits: ImageLimits,
        *,
        policy: BatchPolicy,
        pipelines: int,
        queue_limit: int,
        deadline_s: float,
        max_wait_s: float = 0.0,
        max_bytes: int = 0,
        batch_max_bytes: int = 0,
        retry_after_s: int = 1,
        nice: int = 0,
    ) -> None:
        self.name = name
        self.model = model
        self.spec = spec
        self.limits = limits
        self.policy = policy
        self.pipelines = pipelines
        self.queue_limit = queue_limit
        self.deadline_s = deadline_s
        self.max_wait_s = max_wait_s  # 0: no bound on the estimated wait
        self.max_bytes = max_bytes  # 0: no bound on the bytes waiting
        self.batch_max_bytes = batch_max_bytes  # 0: no bound on a batch's encoded images
        self.retry_after_s = retry_after_s
        self.nice = nice  # the worker threads run this many nice levels lower (app.cores)
        self._queue: deque[QueuedJob] = deque()
        self._image_s = 0.0  # moving average: one image's decode + forward pass, one worker
        self._queued_images = 0
        self._queued_bytes = 0
        self._working = 0  # requests the workers have taken and not answered yet
        self._cond = threading.Condition()
        self._closed = False
        self._gone = False  # closed because the name is no longer served (a delete)
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-pipeline-{i}", daemon=True)
            for i in range(pipelines)
        ]
        for t in self._threads:
            t.start()

    # -- caller side (event loop) ---------------------------------------------------------

    @property
    def depth(self) -> int:
        """Requests waiting for a worker right now."""
        return len(self._queue)

    @property
    def held(self) -> int:
        """Requests that count against `queue_limit`: those waiting, and those a worker took
        beyond one per pipeline. Counting the waiting ones alone, a model that batches 8 let
        `queue_limit` + 8 per pipeline in: `products` took all 32 clients in and its accepted
        p99 grew with them, to 4.4x the 8-client p99 (round 30)."""
        return len(self._queue) + max(0, self._working - self.pipelines)

    @property
    def full(self) -> bool:
        """No room for one more request: the hard cap, or the wait bound, is reached."""
        if self.held >= self.queue_limit:
            return True
        return self.max_wait_s > 0 and self.drain_s() >= self.max_wait_s

    @property
    def image_s(self) -> float:
        """Recent seconds one worker spends on one image (0 until the first is served)."""
        return self._image_s

    def drain_s(self) -> float:
        """Estimated seconds until the work waiting now has all been taken by a worker."""
        return self._queued_images * self._image_s / max(1, self.pipelines)

    def overloaded(self, adding_bytes: int = 0) -> Overloaded:
        """The 503, naming the limit reached: requests, the wait, or (`adding_bytes`, the
        refused body) the bytes waiting, which it had left out (round 32)."""
        why = (
            f"{self._queued_bytes:,} bytes of requests are waiting and this one adds "
            f"{adding_bytes:,} (limit: {self.max_bytes:,} bytes)"
            if adding_bytes
            else f"{self.held} requests are waiting (about {self.drain_s() * 1e3:.0f} ms of "
            f"work; limits: {self.queue_limit} requests, {self.max_wait_s * 1e3:.0f} ms)"
        )
        return Overloaded(
            f"Model {self.name!r} is busy: {why}; retry in {self.retry_after_s} s.",
            retry_after_s=self.retry_after_s,
        )

    def admit(self) -> None:
        """Cheap early check (before a body is read): raise Overloaded when the queue is full."""
        if self.full:
            raise self.overloaded()

    async def submit(
        self,
        datas: Sequence[bytes],
        filenames: Sequence[str | None] | None = None,
        *,
        deadline: float | None = None,
    ) -> Scored:
        """Decode and score one request's images. Raises the image's ServiceError (naming the
        image when there are several), Overloaded, or DeadlineExceeded. `deadline`: a
        time.perf_counter() value by which the request must be done when it is earlier than
        deadline_s from now (the request already waited, e.g. to be parsed)."""
        names = filenames if filenames is not None else [None] * len(datas)
        return await self._enqueue(datas, names, None, deadline)

    async def submit_tensor(
        self, batch: npt.NDArray[np.float32], *, deadline: float | None = None
    ) -> Scored:
        """Score an input tensor that is already prepared (N x H x W x C float32, checked by
        the caller): same queue, deadline and batching as images, no decoding."""
        return await self._enqueue((), [None] * int(batch.shape[0]), batch, deadline)

    async def _enqueue(
        self,
        datas: Sequence[bytes],
        filenames: Sequence[str | None],
        tensor: npt.NDArray[np.float32] | None,
        deadline: float | None = None,
    ) -> Scored:
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        due = now + self.deadline_s if deadline is None else min(now + self.deadline_s, deadline)
        if due <= now:
            raise self._deadline_error()
        job = QueuedJob(
            datas=datas,
            filenames=filenames,
            future=loop.create_future(),
            loop=loop,
            submitted=now,
            deadline=due,
            request_id=request_id_var.get(),
            tensor=tensor,
            size=sum(map(len, datas)) if tensor is None else int(tensor.nbytes),
        )
        with self._cond:
            if self._closed:
                raise self._closed_error()
            too_big = self.max_bytes > 0 and self._queued_bytes + job.size > self.max_bytes
            if self._queue and (self.full or too_big):  # one request is always let in
                raise self.overloaded(0 if self.full else job.size)
            self._queue.append(job)
            self._queued_images += job.n
            self._queued_bytes += job.size
            telemetry.set_queue_depth(self.name, len(self._queue))
            self._cond.notify()
        try:
            return await asyncio.wait_for(job.future, due - now)
        except TimeoutError:
            self._withdraw(job)
            raise self._deadline_error() from None
        except asyncio.CancelledError:
            self._withdraw(job)  # client went away: do not spend CPU on it
            raise

    def _withdraw(self, job: QueuedJob) -> None:
        """Nobody waits for `job` any more: a worker that has taken it skips it, and if it is
        still queued it leaves the queue now, so it no longer counts towards the depth, the
        estimated wait or the byte bound (each of which would refuse live requests)."""
        job.cancelled = True
        with self._cond:
            for i, queued in enumerate(self._queue):
                if queued is job:
                    del self._queue[i]
                    self._queued_images -= job.n
                    self._queued_bytes -= job.size
                    telemetry.set_queue_depth(self.name, len(self._queue))
                    return

    def _deadline_error(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The request did not finish within {self.deadline_s:g} s "
            f"(request_deadline_s); the server is busy, retry in {self.retry_after_s} s.",
            retry_after_s=self.retry_after_s,
        )

    def _closed_error(self) -> ServiceError:
        if self._gone:  # deleted: retrying would not help
            return ModelNotFound(f"Model {self.name!r} was deleted while this request waited.")
        return Overloaded(f"Model {self.name!r} is shutting down.", retry_after_s=1)

    def close(self, gone: bool = False) -> None:
        """Stop; queued requests are answered 503 (retry: a replaced model or a server
        stopping), or 404 when `gone` (the name is no longer served: a deleted model)."""
        with self._cond:
            self._closed = True
            self._gone = gone
            pending = list(self._queue)
            self._queue.clear()
            self._queued_images = self._queued_bytes = 0
            self._cond.notify_all()
        for job in pending:
            resolve(job, self._closed_error())

    # -- worker side (threads) --------------------------------------------------------------

    def _take(self) -> list[QueuedJob] | None:
        """Block for work; then gather up to the policy's batch, waiting at most max_wait."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            jobs = [self._popleft()]
            n, encoded = jobs[0].n, jobs[0].encoded
            limit, byte_limit = self.policy.max_batch, self.batch_max_bytes or None
            until = time.perf_counter() + self.policy.max_wait_ms / 1e3
            while n < limit:
                if self._queue:
                    mate = self._queue[0]
                    if n + mate.n > limit:
                        break
                    if byte_limit is not None and encoded + mate.encoded > byte_limit:
                        break  # its decoding would hold up the requests already in the batch
                    encoded += mate.encoded
                    job = self._popleft()
                    jobs.append(job)
                    n += job.n
                    continue
                remaining = until - time.perf_counter()
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            telemetry.set_queue_depth(self.name, len(self._queue))
            self._working += len(jobs)
        taken = time.perf_counter()
        for job in jobs:
            job.taken = taken
        return jobs

    def _popleft(self) -> QueuedJob:
        """Take the oldest waiting request (the caller holds the condition's lock)."""
        job = self._queue.popleft()
        self._queued_images -= job.n
        self._queued_bytes -= job.size
        return job

    def _work(self) -> None:
        lower_thread_priority(self.nice)
        while self._work_once():
            pass

    def _work_once(self) -> bool:
        """Take and serve one batch; False once the scheduler stops. The batch (its requests'
        bodies) is let go when this returns: a loop's own `jobs` kept each thread's last batch
        while it waited for the next, two 19 MB uploads held by an idle worker (round 35)."""
        jobs = self._take()
        if jobs is None:
            return False
        try:
            self._serve(jobs)
        except BaseException as exc:  # never let a worker die silently
            with logging_as(batch_ids(jobs)):
                logger.exception("scheduler %s: worker error", self.name)
            for job in jobs:
                resolve(job, exc)
        finally:
            with self._cond:
                self._working -= len(jobs)
        return True

    def _prepare(self, job: QueuedJob) -> list[PreparedImage]:
        """Decode one request's images, logging under its request id."""
        if job.tensor is not None:
            return []

        def still_wanted() -> None:
            # between images too: six 3-image requests of thin giants went on being prepared
            # for 8.9 s of CPU after their 503s (fuzz round 20)
            if job.cancelled or job.future.done() or time.perf_counter() > job.deadline:
                raise self._deadline_error()

        with logging_as(job.request_id):
            return prepare_batch(
                job.datas, self.spec, self.limits, job.filenames, still_wanted=still_wanted
            )

    def _serve(self, jobs: list[QueuedJob]) -> None:
        started = time.perf_counter()
        images = self._serve_batch(jobs)
        if images:  # an exponential moving average over roughly the last 20 batches
            per_image = (time.perf_counter() - started) / images
            with self._cond:
                a = 0.1 if self._image_s else 1.0
                self._image_s += a * (per_image - self._image_s)

    def _serve_batch(self, jobs: list[QueuedJob]) -> int:
        """Serve the jobs' live requests; return how many images went through the forward pass."""
        live: list[tuple[QueuedJob, list[PreparedImage]]] = []
        for job in jobs:
            if job.cancelled or job.future.done():
                continue
            if time.perf_counter() > job.deadline:
                resolve(job, self._deadline_error())
                continue
            try:
                live.append((job, self._prepare(job)))
            except Exception as exc:  # one bad request never fails its batch-mates
                resolve(job, exc)
        if not live:
            return 0
        arrays: list[npt.NDArray[np.float32]] = []
        for job, images in live:
            arrays.extend(job_rows(job, images))
        batch = arrays[0][None] if len(arrays) == 1 else np.stack(arrays)
        with logging_as(batch_ids([job for job, _ in live])):
            try:
                out = self.model.run(batch)
            except Exception as exc:
                logger.exception("scheduler %s: inference failed", self.name)
                for job, _ in live:
                    resolve(job, exc)
                return 0
        telemetry.observe_batch(
            self.name,
            [im.decode_ms + im.preprocess_ms for _, images in live for im in images],
            [(job.taken - job.submitted) * 1e3 for job, _ in live],
            out.inference_ms,
            len(arrays),
        )
        start = 0
        for job, images in live:
            stop = start + job.n
            rows = ModelOutput(
                probs=out.probs[start:stop],
                embedding=None if out.embedding is None else out.embedding[start:stop],
                inference_ms=out.inference_ms * job.n / len(arrays),  # this request's share
            )
            scored = Scored(
                images=images,
                output=rows,
                queue_wait_ms=(job.taken - job.submitted) * 1e3,
                batch_size=len(arrays),
            )
            resolve(job, scored)
            start = stop
        return len(arrays)
