"""What waits in a model's queue (app.scheduler): one request's images or prepared tensor with
its deadline and the caller's future (`QueuedJob`), what the caller gets back (`Scored`), and
handing a worker thread's result back to the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from app.imaging import PreparedImage
from app.runtime import ModelOutput


@dataclass(frozen=True)
class Scored:
    """One request's images, decoded and scored."""

    images: list[PreparedImage]  # empty for a request that sent a prepared tensor
    output: ModelOutput  # this request's rows and its share of the forward pass time
    queue_wait_ms: float  # submit -> a worker took it
    batch_size: int  # images in the onnxruntime call that served this request


@dataclass(eq=False)
class QueuedJob:
    datas: Sequence[bytes]  # encoded images, or () when `tensor` is given
    filenames: Sequence[str | None]
    future: asyncio.Future[Scored]
    loop: asyncio.AbstractEventLoop
    submitted: float
    deadline: float
    request_id: str  # the submitting request's id, for the worker's log lines
    tensor: npt.NDArray[np.float32] | None = None  # N x H x W x C, already prepared
    cancelled: bool = False
    taken: float = field(default=0.0)
    size: int = 0  # bytes held while queued

    @property
    def n(self) -> int:
        return len(self.datas) if self.tensor is None else int(self.tensor.shape[0])

    @property
    def encoded(self) -> int:
        """Bytes of encoded images to decode (0 for a prepared tensor)."""
        return self.size if self.tensor is None else 0


def _deliver(future: asyncio.Future[Scored], result: Scored | BaseException) -> None:
    if future.done():  # the caller gave up (deadline, disconnect)
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def resolve(job: QueuedJob, result: Scored | BaseException) -> None:
    """Hand a result to the caller's event loop (from a worker thread)."""
    # RuntimeError: the loop is closed (shutdown), so nobody is waiting any more.
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_deliver, job.future, result)


def batch_ids(jobs: Sequence[QueuedJob]) -> str:
    """The ids of the requests sharing a forward pass, for lines about the whole pass."""
    return ",".join(dict.fromkeys(job.request_id for job in jobs))


def job_rows(job: QueuedJob, images: list[PreparedImage]) -> list[npt.NDArray[np.float32]]:
    """One H x W x C array per image of a request: its decoded images or its tensor's rows."""
    if job.tensor is not None:
        return list(job.tensor)
    return [im.array for im in images]
