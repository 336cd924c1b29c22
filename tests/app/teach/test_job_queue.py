"""The bound on teach jobs waiting (app/teach/jobs.py, IMGCLASS_TEACH_MAX_QUEUED): it counts
jobs queued in any process sharing the job folder, not the one running (round 28)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app.errors import ServiceError
from app.teach.job_store import JobStore
from app.teach.jobs import JobRunner


def test_the_bound_counts_waiting_jobs_of_every_process_not_the_running_one(
    tmp_path: Path,
) -> None:
    release = threading.Event()

    def work(*_: Any) -> dict[str, Any]:
        release.wait(30)  # the first job runs until the test lets it go
        return {}

    store = JobStore(tmp_path / "jobs")
    runner = JobRunner(store, work, max_queued=2)
    runner.start()
    other = JobRunner(store, work, max_queued=2)  # another worker's runner, never started
    try:
        running = runner.submit("c", "m0", {})
        deadline = time.monotonic() + 10
        while runner.get(running.id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        runner.submit("c", "m1", {})  # one waiting: room for another
        other.submit("c", "m2", {})  # two waiting, one in each process
        for submitter in (runner, other):
            with pytest.raises(ServiceError) as info:
                submitter.submit("c", "m3", {})
            assert info.value.status == 503 and "2 teach jobs are already waiting" in str(
                info.value.detail
            )
    finally:
        release.set()
        runner.stop()
