"""DELETE /v1/jobs/{id} on a job that already ended is a 409 saying so: it answered 200 with the
job unchanged, so a client could not tell that nothing was cancelled."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.teach.errors import JobEnded, JobPublishing, TeachCancelled
from app.teach.job_store import JobStore
from app.teach.jobs import JobRunner
from tests.app.teach.conftest import BAG, SNEAKER, make_catalog, wait_job


def test_cancelling_an_ended_job_is_a_409_naming_its_status(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    make_catalog(c, "done", {"sneaker": fm_pngs[SNEAKER][:3], "bag": fm_pngs[BAG][:3]})
    r = c.post("/v1/catalogs/done/train", json={"model": "finished"})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.headers["location"])
    assert job["status"] == "succeeded", job
    r = c.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/job-ended") and body["job_status"] == "succeeded"
    assert body["detail"] == f"Job {job['id']} already ended (succeeded); nothing to cancel."
    assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "succeeded"
    assert c.delete("/v1/jobs/nosuchjob").status_code == 404
    declared = c.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}"]["delete"]["responses"]
    assert {"404", "409"} <= set(declared)


def test_a_second_cancel_in_any_process_is_a_409(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def work(job: Any, progress: Any, should_stop: Any) -> dict[str, Any]:
        started.set()
        while not should_stop() and not release.is_set():
            release.wait(0.01)
        raise TeachCancelled()

    runner = JobRunner(JobStore(tmp_path / "jobs"), work)
    runner.start()
    try:
        first = runner.submit("c", "m1", {})
        second = runner.submit("c", "m2", {})
        assert started.wait(5)
        assert runner.cancel(second.id).status == "cancelled"  # queued: cancelled by this call
        with pytest.raises(JobEnded, match=r"already ended \(cancelled\); nothing to cancel"):
            runner.cancel(second.id)
        other = JobRunner(JobStore(tmp_path / "jobs"), work)  # another process's view
        with pytest.raises(JobEnded):
            other.cancel(second.id)
        assert runner.cancel(first.id).cancel_requested  # running: asked to stop, not an error
    finally:
        release.set()
        runner.stop()


def _publishing_work(entered: threading.Event, go_on: threading.Event) -> Any:
    """A job that reaches its last step, then waits for `go_on` while publishing."""

    def work(job: Any, progress: Any, should_stop: Any) -> dict[str, Any]:
        assert not should_stop()
        progress("writing bundle", 0.0)  # raises TeachCancelled when a cancel came first
        entered.set()
        assert go_on.wait(10)
        progress("loading", 0.0)
        return {"model": "m", "version": "1"}

    return work


def test_a_cancel_while_the_job_publishes_is_a_409_in_every_process(tmp_path: Path) -> None:
    """Round 26: a cancel sent while the job wrote and loaded its model was accepted (202,
    `cancel_requested`) and the job then ended succeeded."""
    entered, go_on = threading.Event(), threading.Event()
    runner = JobRunner(JobStore(tmp_path / "jobs"), _publishing_work(entered, go_on))
    runner.start()
    try:
        job = runner.submit("c", "m", {})
        assert entered.wait(10)
        other = JobRunner(JobStore(tmp_path / "jobs"), lambda *_: {})  # another process
        for view in (runner, other):
            with pytest.raises(
                JobPublishing, match=r"past its last step \(writing bundle\)"
            ) as info:
                view.cancel(job.id)
            assert info.value.to_problem()["status"] == 409
            assert info.value.to_problem()["type"].endswith("/job-publishing")
        go_on.set()
        for _ in range(500):
            if runner.get(job.id).done:
                break
            threading.Event().wait(0.01)
        ended = runner.get(job.id)
        assert ended.status == "succeeded" and not ended.cancel_requested
    finally:
        go_on.set()
        runner.stop()


def test_a_cancel_written_by_another_process_before_publishing_wins(tmp_path: Path) -> None:
    """The owner had not read the other process's cancel yet (it reads the file once a second):
    entering its last step merges it, and the job ends cancelled with nothing published."""
    entered, go_on, hold = threading.Event(), threading.Event(), threading.Event()
    inner = _publishing_work(entered, go_on)

    def work(job: Any, progress: Any, should_stop: Any) -> dict[str, Any]:
        assert hold.wait(10)  # no should_stop() poll while the other process cancels
        return inner(job, progress, lambda: False)  # type: ignore[no-any-return]

    runner = JobRunner(JobStore(tmp_path / "jobs"), work)
    runner.start()
    try:
        job = runner.submit("c", "m", {})
        for _ in range(500):
            if runner.get(job.id).status == "running":
                break
            threading.Event().wait(0.01)
        other = JobRunner(JobStore(tmp_path / "jobs"), work)
        assert other.cancel(job.id).cancel_requested
        hold.set()
        for _ in range(500):
            if runner.get(job.id).done:
                break
            threading.Event().wait(0.01)
        assert runner.get(job.id).status == "cancelled" and not entered.is_set()
    finally:
        hold.set()
        go_on.set()
        runner.stop()
