"""The registry follows the disk: taught bundles written by one process are served by another
(two real uvicorn servers on one data folder), removed ones dropped, broken ones refused while
the rest keep serving; teach jobs survive a restart as 'failed'."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from app.registry import ModelRegistry
from app.teach.jobs import Job, JobRunner, JobStore
from tests.app.teach.conftest import BAG, SNEAKER, follower_registry, make_catalog, wait_job
from tests.conftest import ROOT
from tests.live_server import live_server


def _registry(data: Path) -> ModelRegistry:
    reg: ModelRegistry = follower_registry(data)
    return reg


def test_second_registry_picks_up_replaces_and_drops(teach_client, fm_pngs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    data = c.app.state.settings.data_dir
    other = _registry(data)
    assert other.names() == ["products"]
    make_catalog(c, "f", {"sneaker": fm_pngs[SNEAKER][:5], "bag": fm_pngs[BAG][:5]})
    r = c.post("/v1/catalogs/f/train", json={"model": "follow"})
    assert wait_job(c, r.headers["location"])["status"] == "succeeded"
    assert other.refresh() is True
    assert other.get("follow").version == "1" and other.get("follow").taught
    assert other.refresh() is False  # nothing changed on disk

    # A broken version (metadata that is not JSON) is refused; version 1 keeps serving.
    bad = data / "models" / "follow" / "2"
    shutil.copytree(data / "models" / "follow" / "1", bad)
    (bad / "metadata.json").write_text("{not json")
    other.refresh()
    assert "follow@2" in other.refused() and other.get("follow").version == "1"
    # A head taught on another build of the backbone is refused with a reason.
    meta = json.loads((data / "models" / "follow" / "1" / "metadata.json").read_text())
    meta["version"], meta["backbone"]["sha256"] = "2", "0" * 64
    (bad / "metadata.json").write_text(json.dumps(meta))
    other.refresh()
    assert "teach it again" in other.refused()["follow@2"]

    shutil.rmtree(data / "models" / "follow")
    other.refresh()
    assert "follow" not in other.names() and not other.refused()


def _follower_env(data: Path) -> dict[str, str]:
    """Two servers on one data folder, each polling it for taught bundles."""
    return {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_DATA_DIR": str(data),
        "IMGCLASS_ENABLED_MODELS": '["products"]',
        "IMGCLASS_MODEL_POLL_SECONDS": "0.5",
        "IMGCLASS_WARMUP_RUNS": "0",
        "IMGCLASS_ACCESS_LOG": "false",
    }


@pytest.mark.slow
def test_teach_on_one_server_predict_on_another(tmp_path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "shared"
    env = _follower_env(data)
    with live_server(tmp_path, env) as sa, live_server(tmp_path, env) as sb:
        a, b = sa.base, sb.base
        with httpx.Client(base_url=a, timeout=30) as ca, httpx.Client(base_url=b, timeout=30) as cb:
            make_catalog(ca, "two", {"sneaker": fm_pngs[SNEAKER][:10], "bag": fm_pngs[BAG][:10]})  # type: ignore[arg-type]
            r = ca.post("/v1/catalogs/two/train", json={"model": "shared"})
            assert r.status_code == 202
            # Server B reports the job too: jobs are files in the shared folder.
            job = wait_job(cb, r.headers["location"])  # type: ignore[arg-type]
            assert job["status"] == "succeeded"
            deadline = time.monotonic() + 10
            while cb.get("/v1/models/shared").status_code != 200:
                assert time.monotonic() < deadline, "server B never picked the model up"
                time.sleep(0.2)
            r = cb.post("/v1/models/shared/predict", content=fm_pngs[BAG][55])
            assert (
                r.status_code == 200 and r.json()["results"][0]["predictions"][0]["label"] == "bag"
            )
            assert cb.delete("/v1/models/shared").status_code == 200
            deadline = time.monotonic() + 10
            while ca.get("/v1/models/shared").status_code != 404:
                assert time.monotonic() < deadline, "server A still serves a deleted model"
                time.sleep(0.2)


def test_restart_marks_running_jobs_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    job = Job(
        id="abc123",
        catalog="c",
        model="m",
        options={},
        status="running",
        owner_pid=int(dead.stdout),
    )
    store.save(job)
    alive = Job(
        id="def456", catalog="c", model="n", options={}, status="running", owner_pid=os.getppid()
    )
    store.save(alive)
    assert store.fail_orphans() == 1
    assert store.load("abc123").status == "failed"
    assert "start it again" in (store.load("abc123").error or {})["detail"]
    assert store.load("def456").status == "running"  # its process is still alive


def test_cancel_queued_and_running_jobs(tmp_path: Path) -> None:
    started, release = threading.Event(), threading.Event()

    def work(job, progress, should_stop):  # type: ignore[no-untyped-def]
        started.set()
        progress("validating", 0.5)
        while not should_stop():
            release.wait(0.01)
        from app.teach.errors import TeachCancelled

        raise TeachCancelled()

    runner = JobRunner(JobStore(tmp_path / "jobs"), work)
    runner.start()
    try:
        first = runner.submit("c", "m1", {})
        second = runner.submit("c", "m2", {})
        assert started.wait(5)
        assert runner.get(first.id).status == "running"
        assert runner.cancel(second.id).status == "cancelled"  # never started
        runner.cancel(first.id)
        deadline = time.monotonic() + 5
        while runner.get(first.id).status == "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert runner.get(first.id).status == "cancelled"
        assert JobStore(tmp_path / "jobs").load(first.id).status == "cancelled"
    finally:
        runner.stop()


def test_finished_jobs_are_pruned(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    for i in range(5):
        store.save(
            Job(
                id=f"j{i}",
                catalog="c",
                model="m",
                options={},
                status="succeeded",
                created_at=f"2026-01-0{i + 1}T00:00:00",
            )
        )
    store.save(
        Job(id="live", catalog="c", model="m", options={}, status="running", owner_pid=os.getppid())
    )
    assert store.prune(keep=2) == 3
    assert sorted(j.id for j in store.all()) == ["j3", "j4", "live"]
