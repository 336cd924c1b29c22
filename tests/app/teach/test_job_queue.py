"""The bound on teach jobs waiting (app/teach/jobs.py, IMGCLASS_TEACH_MAX_QUEUED): it counts
jobs queued in any process sharing the job folder, not the one running (round 28)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

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


def ended(status: str) -> float:
    return REGISTRY.get_sample_value("imgclass_teach_jobs_ended_total", {"status": status}) or 0


def test_every_end_is_counted_even_after_its_file_is_pruned(tmp_path: Path) -> None:
    """Round 28: the failed-jobs alert watched the job files' gauge, which drops when old jobs
    are pruned, so a new failure next to a prune went unseen. Ends are counted as they happen:
    by the runner, and when a job of a process that died is failed."""

    def work(job: Any, *_: Any) -> dict[str, Any]:
        if job.model == "bad":
            raise ValueError("no")
        return {}

    store = JobStore(tmp_path / "jobs")
    runner = JobRunner(store, work)
    runner.start()
    before = {s: ended(s) for s in ("succeeded", "failed")}
    try:
        jobs = [runner.submit("c", name, {}) for name in ("good", "bad")]
        deadline = time.monotonic() + 10
        while not all(runner.get(j.id).done for j in jobs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        runner.stop()
    store.fail(store.load(jobs[0].id))  # as for a job whose process died
    assert ended("succeeded") - before["succeeded"] == 1
    assert ended("failed") - before["failed"] == 2


READ_ONLY_SPELL = """
import json, os, sys, time
from pathlib import Path
from app.teach.job_store import JobStore
from app.teach.jobs import JobRunner

root = Path(sys.argv[1])

def lock_out(mode_dir, mode_file):
    for p in root.iterdir():
        p.chmod(mode_file)
    root.chmod(mode_dir)

def work(job, *_):
    if job.model == "first":
        lock_out(0o555, 0o444)  # the folder turns read-only while the job runs
        raise ValueError("the job's own error")
    return {}

store = JobStore(root)
runner = JobRunner(store, work)
runner.start()
first = runner.submit("c", "first", {})
second = runner.submit("c", "second", {})  # waits behind it, taken while read-only
time.sleep(1.0)
lock_out(0o755, 0o644)  # writable again
third = runner.submit("c", "third", {})
deadline = time.monotonic() + 10
while time.monotonic() < deadline and not (runner.get(third.id).done and
        json.loads(store.path(first.id).read_text())["status"] == "failed"):
    time.sleep(0.05)
print(json.dumps({
    "alive": runner._thread.is_alive(),
    "statuses": [runner.get(j.id).status for j in (first, second, third)],
    "first_file": json.loads(store.path(first.id).read_text())["status"],
}))
runner.stop()
"""


def test_a_read_only_spell_never_ends_the_job_worker(tmp_path: Path) -> None:
    """Round 43: once the jobs folder turned read-only, opening its lock raised a raw
    PermissionError that escaped the job worker's own error handling; the thread ended, every
    later job of that process stayed `queued` (filling the queue's bound for every process),
    and a failed job's file said `running` for good. The server's job folder is held to its
    file modes here as the container's uid is."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.unprivileged import held_to_file_modes

    root = tmp_path / "jobs"
    r = subprocess.run(
        [*held_to_file_modes(), sys.executable, "-c", READ_ONLY_SPELL, str(root)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["alive"], r.stderr[-2000:]
    assert out["statuses"] == ["failed", "failed", "succeeded"], out
    assert out["first_file"] == "failed"  # saved again once the folder was writable
