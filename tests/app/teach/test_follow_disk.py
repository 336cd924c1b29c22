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
from fastapi.testclient import TestClient

from app.errors import ServiceError
from app.main import create_app
from app.registry import ModelRegistry
from app.teach.job_store import STALE_AFTER_S, Job, JobStore, process_start
from app.teach.jobs import JobRunner
from tests.app.teach.conftest import (
    BAG,
    SNEAKER,
    follower_registry,
    make_catalog,
    teach_settings,
    wait_job,
)
from tests.conftest import ROOT
from tests.live_server import live_server

pytestmark = pytest.mark.slow  # several processes (round 29: the fast subset in 2 min)


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


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_restart_marks_running_jobs_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    dead = _dead_pid()
    job = Job(
        id="abc123",
        catalog="c",
        model="m",
        options={},
        status="running",
        owner_pid=dead,
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


def test_a_job_that_died_publishing_has_its_version_withdrawn(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]]
) -> None:
    """Round 44: a kill -9 between the version's rename into place and the job's save as
    succeeded left the job "failed" ("start it again") and its version served as the model's
    default. At the restart that version is withdrawn; an older one stays."""
    classes = {"sneaker": fm_pngs[SNEAKER][:6], "bag": fm_pngs[BAG][:6]}
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        make_catalog(c, "shoes", classes)
        for _ in range(2):
            job = c.post("/v1/catalogs/shoes/train", json={"model": "kicks"}).json()
            assert wait_job(c, job["url"])["status"] == "succeeded"
        assert c.get("/v1/models/kicks").json()["version"] == "2"
    # v2's job as the kill left it: running, publishing, its process gone
    path = tmp_path / "service-data" / "teach" / "jobs" / f"{job['id']}.json"
    raw = json.loads(path.read_text())
    raw.update(status="running", phase="writing bundle", finished_at=None, result=None)
    raw.update(owner_pid=_dead_pid(), owner_start=None)
    path.write_text(json.dumps(raw))
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        ended = c.get(job["url"]).json()
        assert ended["status"] == "failed"
        assert "published kicks v2; that version was withdrawn" in ended["error"]["detail"]
        assert c.get("/v1/models/kicks@2").status_code == 404
        assert c.get("/v1/models/kicks").json()["version"] == "1"  # the older one stays


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


def test_job_list_spans_processes_newest_first(tmp_path: Path) -> None:
    """GET /v1/jobs's source: this runner's jobs, another live process's, and a dead process's
    running job, reported failed as a GET of it would be."""
    store = JobStore(tmp_path / "jobs")
    dead = _dead_pid()
    store.save(
        Job(
            id="old",
            catalog="c",
            model="m",
            options={},
            status="succeeded",
            created_at="2026-01-01T00:00:00.000+00:00",
        )
    )
    store.save(
        Job(
            id="gone",
            catalog="c",
            model="g",
            options={},
            status="running",
            owner_pid=dead,
            created_at="2026-01-02T00:00:00.000+00:00",
        )
    )
    store.save(
        Job(
            id="other",
            catalog="c",
            model="o",
            options={},
            status="running",
            owner_pid=os.getppid(),
            created_at="2026-01-03T00:00:00.000+00:00",
        )
    )
    runner = JobRunner(store, lambda *a: {}, max_queued=4)  # never started: jobs stay queued
    mine = runner.submit("c", "n", {})
    jobs, total = runner.find()
    assert [j.id for j in jobs] == [mine.id, "other", "gone", "old"] and total == 4
    assert [j.status for j in jobs] == ["queued", "running", "failed", "succeeded"]
    assert store.load("gone").status == "failed"
    jobs, total = runner.find(status="running")
    assert [j.id for j in jobs] == ["other"] and total == 1
    jobs, total = runner.find(model="m")
    assert [j.id for j in jobs] == ["old"]
    jobs, total = runner.find(limit=2)
    assert [j.id for j in jobs] == [mine.id, "other"] and total == 4


def test_job_files_are_parsed_again_only_when_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path / "jobs")
    for i in range(3):
        store.save(Job(id=f"j{i}", catalog="c", model="m", options={}))
    parsed: list[str] = []
    real_loads = json.loads

    def counting_loads(text: str) -> object:
        parsed.append(text)
        return real_loads(text)

    monkeypatch.setattr("app.teach.job_store.json.loads", counting_loads)
    assert [j.status for j in store.all()] == ["queued"] * 3 and len(parsed) == 3
    store.all()[0].status = "failed"  # a copy: the store's reading is unchanged
    assert len(parsed) == 3 and store.all()[0].status == "queued"
    store.save(Job(id="j1", catalog="c", model="m", options={}, status="cancelled"))
    (tmp_path / "jobs" / "j2.json").unlink()
    assert [(j.id, j.status) for j in store.all()] == [("j0", "queued"), ("j1", "cancelled")]
    assert len(parsed) == 4


@pytest.mark.parametrize(
    "text",
    [
        '{"id": "bad", "catalog": "c", "model": "m", "options": {}, "created_at": null}',
        '{"id": 5, "catalog": "c", "model": "m", "options": {}}',
        '{"id": "bad", "catalog": "c", "model": "m", "options": {}, "status": "weird"}',
        "[1, 2]",
        "{",
    ],
)
def test_a_damaged_job_file_reads_as_no_job(tmp_path: Path, text: str) -> None:
    """A job file whose fields have the wrong types (edited by hand, a disk error) is no job:
    404 for its id, left out of listings; before, a null created_at made GET /v1/jobs a 500."""
    store = JobStore(tmp_path / "jobs")
    store.save(Job(id="good", catalog="c", model="m", options={}))
    (tmp_path / "jobs" / "bad.json").write_text(text)
    with pytest.raises(ServiceError, match="No job"):
        store.load("bad")
    runner = JobRunner(store, lambda *a: {})
    assert [j.id for j in runner.find()[0]] == ["good"]


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


def test_a_long_uptime_keeps_jobs_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished jobs leave memory beyond KEEP_IN_MEMORY (read from disk when asked for) and the
    folder is pruned as jobs finish, not only at start-up (20,000 job files made every submit
    and /metrics scrape take 2 s)."""
    from app.teach import jobs

    monkeypatch.setattr(jobs, "KEEP_IN_MEMORY", 3)
    store = JobStore(tmp_path / "jobs")
    monkeypatch.setattr(store, "prune_if_over", lambda: JobStore.prune_if_over(store, keep=10))
    runner = JobRunner(store, lambda job, progress, should_stop: {"ok": True}, max_queued=100)
    runner.start()
    try:
        ids = []
        for i in range(40):
            ids.append(runner.submit("c", f"m{i}", {}).id)
            deadline = time.monotonic() + 5
            while runner.get(ids[-1]).status != "succeeded":
                assert time.monotonic() < deadline
                time.sleep(0.005)
        assert len(runner._jobs) <= 3
        assert len(store.all()) <= 11  # pruned to 10 once over 11
        assert runner.get(ids[-5]).status == "succeeded"  # out of memory, read from disk
    finally:
        runner.stop()


_SUBMITTER = """
import json, sys
from pathlib import Path
from app.errors import ServiceError
from app.teach.job_store import JobStore
from app.teach.jobs import JobRunner

root, go, names = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(",")
runner = JobRunner(JobStore(root), lambda *a: {}, max_queued=len(names))  # never started
print("ready", flush=True)
while not go.exists():
    pass
won = []
for name in names:
    try:
        runner.submit("c", name, {})
        won.append(name)
    except ServiceError as exc:
        assert exc.status == 409, exc
print(json.dumps(won), flush=True)
sys.stdin.read()  # alive until told: a finished process's queued jobs are orphans (rightly)
"""


def test_one_job_per_model_across_processes(tmp_path: Path) -> None:
    # Workers of one server (or replicas on one volume) share the job folder: the check for a
    # job already teaching the name and the new job's file must be one step for all of them,
    # or two train calls at once teach the name twice (measured over HTTP before the file lock:
    # 3 of 15 names got two 202s from 2 workers).
    names = [f"m{i}" for i in range(40)]
    go = tmp_path / "go"
    # Every process stays alive until all have submitted: one that exits early leaves queued
    # jobs of a dead pid, which the others then rightly treat as orphans and replace (this test
    # flaked that way when one process was still importing after another had finished).
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SUBMITTER, str(tmp_path / "jobs"), str(go), ",".join(names)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    assert all(p.stdout is not None and p.stdout.readline() == "ready\n" for p in procs)
    go.touch()
    won = [name for p in procs if p.stdout for name in json.loads(p.stdout.readline())]
    for p in procs:
        p.communicate(timeout=60)  # closes stdin: the process exits
    assert all(p.returncode == 0 for p in procs)
    assert sorted(won) == sorted(names)  # each name accepted exactly once
    assert sorted(j.model for j in JobStore(tmp_path / "jobs").all()) == sorted(names)


def test_cancel_from_another_process_is_not_overwritten(tmp_path: Path) -> None:
    # The owner saves progress every 0.25 s; a cancel written meanwhile by another process (the
    # DELETE landed on the other worker) must survive those saves and stop the job (measured
    # over HTTP before: 7 of 12 such cancels were lost and the job succeeded).
    def work(job, progress, should_stop):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            progress("validating", 0.5)
            if should_stop():
                from app.teach.errors import TeachCancelled

                raise TeachCancelled()
            time.sleep(0.3)  # a save on every step, after the 0.25 s save interval
        return {"model": job.model, "version": "1"}

    runner = JobRunner(JobStore(tmp_path / "jobs"), work)
    runner.start()
    try:
        job = runner.submit("c", "m", {})
        deadline = time.monotonic() + 5
        while runner.get(job.id).status != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        other = JobRunner(JobStore(tmp_path / "jobs"), work)  # another process's view
        other_view = other.cancel(job.id)
        assert other_view.cancel_requested and not other_view.done
        deadline = time.monotonic() + 5
        while not runner.get(job.id).done:
            assert time.monotonic() < deadline, "the cancel was lost"
            time.sleep(0.02)
        assert runner.get(job.id).status == "cancelled"
        assert JobStore(tmp_path / "jobs").load(job.id).cancel_requested
    finally:
        runner.stop()


def test_jobs_of_another_pid_namespace_are_judged_by_their_heartbeat(tmp_path: Path) -> None:
    # Replicas in their own containers share the job folder but not pids: a pid from another
    # namespace may be alive here by chance (it was this very pid before: a replica starting
    # marked a live job failed, checked with `unshare --pid`). Their jobs are orphans only
    # once their file is stale; a live owner touches it every second.
    def foreign(job_id: str, model: str, pid: int) -> Job:
        return Job(
            id=job_id,
            catalog="c",
            model=model,
            options={},
            status="running",
            owner_pid=pid,
            owner_namespace="replica-b/1",
        )

    store = JobStore(tmp_path / "jobs")
    store.save(foreign("fresh", "m1", os.getpid()))
    store.save(foreign("stale", "m2", os.getpid()))
    old = time.time() - STALE_AFTER_S - 5
    os.utime(store.path("stale"), (old, old))
    assert store.fail_orphans() == 1
    assert [store.load(i).status for i in ("fresh", "stale")] == ["running", "failed"]

    runner = JobRunner(store, lambda *a: {})  # never started: its jobs stay queued
    with pytest.raises(ServiceError) as info:
        runner.submit("c", "m1", {})  # the fresh foreign job still teaches m1
    assert info.value.status == 409
    store.save(foreign("stale2", "m3", 1))
    os.utime(store.path("stale2"), (old, old))
    runner.submit("c", "m3", {})  # a stale one does not block its name: it is failed
    assert store.load("stale2").status == "failed"


def test_a_running_job_keeps_its_queued_jobs_files_fresh(tmp_path: Path) -> None:
    release = threading.Event()

    def work(job, progress, should_stop):  # type: ignore[no-untyped-def]
        while not release.is_set() and not should_stop():
            time.sleep(0.05)
        return {"model": job.model, "version": "1"}

    store = JobStore(tmp_path / "jobs")
    runner = JobRunner(store, work)
    runner.start()
    try:
        first = runner.submit("c", "m1", {})
        second = runner.submit("c", "m2", {})  # waits behind the first
        old = time.time() - 60
        for job_id in (first.id, second.id):
            os.utime(store.path(job_id), (old, old))
        deadline = time.monotonic() + 5
        while min(store.path(i).stat().st_mtime for i in (first.id, second.id)) < old + 30:
            assert time.monotonic() < deadline, "no heartbeat on the job files"
            time.sleep(0.1)
        assert store.load(second.id).status == "queued"
    finally:
        release.set()
        runner.stop()


def test_shutdown_fails_the_running_and_queued_jobs_as_interrupted(tmp_path: Path) -> None:
    # A SIGTERM'd server (real 2-worker run) left its running job "cancelled" with no error,
    # as if the client had cancelled it; it is "failed" (Interrupted), like after a crash.
    started = threading.Event()

    def work(job, progress, should_stop):  # type: ignore[no-untyped-def]
        started.set()
        while not should_stop():
            time.sleep(0.01)
        from app.teach.errors import TeachCancelled

        raise TeachCancelled()

    store = JobStore(tmp_path / "jobs")
    runner = JobRunner(store, work)
    runner.start()
    running = runner.submit("c", "m1", {})
    queued = runner.submit("c", "m2", {})
    assert started.wait(5)
    runner.stop()
    for job_id in (running.id, queued.id):
        job = store.load(job_id)
        assert job.status == "failed" and not job.cancel_requested, job
        assert job.error is not None and job.error["title"] == "Interrupted"


def test_a_job_whose_process_died_reads_failed(tmp_path: Path) -> None:
    # kill -9 of the worker running a job: until a process starts again (the supervisor's
    # replacement, or never with uvicorn's own workers) the job read "running" from any other
    # process; reading it now finds the owner gone.
    code = "import os; print(os.getpid())"
    dead = int(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout)
    store = JobStore(tmp_path / "jobs")
    store.save(
        Job(id="gone1", catalog="c", model="m", options={}, status="running", owner_pid=dead)
    )
    job = JobRunner(store, lambda *a: {}).get("gone1")
    assert job.status == "failed" and job.error is not None
    assert store.load("gone1").status == "failed"


def test_the_job_worker_survives_its_data_folder_moving_away(tmp_path: Path) -> None:
    """Writes under a data folder moved away are refused (fsutil.check_folder), also the job
    file's final save: that refusal escaped the worker thread, and every later job stayed
    queued for good. Now the job ends failed (storage-unavailable, kept in memory) and the
    next job runs once the folder is back."""
    from app.fsutil import FolderIdentity, check_folder, watch_folder

    data = tmp_path / "data"
    store = JobStore(data / "teach" / "jobs")
    store.root.mkdir(parents=True)
    watch_folder(FolderIdentity(data))
    away = tmp_path / "away"

    def work(job: Job, progress: object, should_stop: object) -> dict[str, object]:
        if job.model == "first":
            data.rename(away)
            check_folder(data)  # what a catalog read or the publish does: 503
        return {"ok": True}

    runner = JobRunner(store, work)
    runner.start()
    try:
        first = runner.submit("c", "first", {})
        deadline = time.monotonic() + 10
        while not runner.get(first.id).done:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        failed = runner.get(first.id)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["status"] == 503
        away.rename(data)
        second = runner.submit("c", "second", {})
        while not runner.get(second.id).done:
            assert time.monotonic() < deadline, "the worker died: the job stayed queued"
            time.sleep(0.01)
        assert runner.get(second.id).status == "succeeded"
    finally:
        runner.stop()


def test_a_job_that_meets_a_full_disk_fails_as_507_and_frees_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk filled between the train call and the job's start: the job failed in memory
    # as a 500 while its file still read "queued", owned by a live process, so every later
    # train of the name was a 409 (on any worker) until a restart. Now it is a 507, and its
    # file is written as soon as the disk takes it again.
    import errno

    from app.teach import job_store

    full = threading.Event()
    write = job_store.atomic_write

    def disk(path: Path, data: bytes, **kw: object) -> None:
        if b'"status": "running"' in data and not cleared.is_set():
            full.set()  # the disk fills as the job starts
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data, **kw)  # type: ignore[arg-type]

    cleared = threading.Event()
    monkeypatch.setattr(job_store, "atomic_write", disk)
    runner = JobRunner(JobStore(tmp_path / "jobs"), lambda *a: {"version": "1"})
    runner.start()
    job = runner.submit("c", "m", {})
    try:
        deadline = time.monotonic() + 10
        while not runner.get(job.id).done:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        failed = runner.get(job.id)
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["status"] == 507 and "disk is full" in failed.error["detail"]
        assert JobStore(tmp_path / "jobs").load(job.id).status == "queued"  # could not say so
        with pytest.raises(ServiceError) as refused:  # a new job's file cannot be written
            runner.submit("c", "m", {})
        assert refused.value.status == 507
        cleared.set()
        full.clear()
        deadline = time.monotonic() + 10  # the owner writes the ended job's file again
        while JobStore(tmp_path / "jobs").load(job.id).status != "failed":
            assert time.monotonic() < deadline, "the ended job's file was never written"
            time.sleep(0.05)
        other = JobRunner(JobStore(tmp_path / "jobs"), lambda *a: {})  # another worker's view
        assert other.submit("c", "m", {}).status == "queued"  # the name is free again
    finally:
        runner.stop()


def test_a_full_disk_while_writing_the_bundle_is_a_507_not_a_crash(tmp_path: Path) -> None:
    import errno

    def work(*_: object) -> dict[str, object]:  # what write_bundle raised on a full disk
        raise OSError(errno.ENOSPC, "No space left on device")

    runner = JobRunner(JobStore(tmp_path / "jobs"), work)
    runner.start()
    try:
        job = runner.submit("c", "m", {})
        deadline = time.monotonic() + 10
        while not runner.get(job.id).done:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        error = runner.get(job.id).error
        assert error is not None and error["status"] == 507, error
        assert JobStore(tmp_path / "jobs").load(job.id).status == "failed"
    finally:
        runner.stop()


def test_a_job_whose_process_died_unreaped_reads_failed(tmp_path: Path) -> None:
    """Round 31: a killed server whose parent does not reap it (a container without an init
    process) stays a zombie, to which `kill(pid, 0)` still answers: its job read `running`
    and its model name stayed taken on every other process."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{child.pid}/stat").read_text().split(")")[-1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.05)
        store = JobStore(tmp_path / "jobs")
        store.save(
            Job(
                id="zomb1",
                catalog="c",
                model="m",
                options={},
                status="running",
                owner_pid=child.pid,
            )
        )
        job = JobRunner(store, lambda *a: {}).get("zomb1")
        assert job.status == "failed" and job.error is not None
    finally:
        child.wait()


def test_a_job_whose_owner_pid_was_reused_reads_failed(tmp_path: Path) -> None:
    """Round 32: a job's owner that died and whose pid the kernel gave to another process read
    as alive (`kill(pid, 0)` answers for the new process), so the job stayed `running` and its
    model name taken. A job records when its owner started; another start time is another
    process. Files without it keep the pid-only rule."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start(other.pid)
        assert started is not None
        store = JobStore(tmp_path / "jobs")
        for job_id, recorded in (("reused", started - 1), ("same", started), ("old", None)):
            store.save(
                Job(
                    id=job_id,
                    catalog="c",
                    model=job_id,
                    options={},
                    status="running",
                    owner_pid=other.pid,
                    owner_start=recorded,
                )
            )
        mine = process_start(os.getpid())
        assert mine is not None
        store.save(  # this very pid in an earlier life (a restarted container's pid 1)
            Job(
                id="earlier",
                catalog="c",
                model="e",
                options={},
                status="running",
                owner_start=mine - 1,
            )
        )
        runner = JobRunner(store, lambda *a: {})
        assert runner.get("earlier").status == "failed"
        assert runner.get("reused").status == "failed"
        assert runner.get("same").status == "running"
        assert runner.get("old").status == "running"
    finally:
        other.kill()
        other.wait()


def test_a_new_job_records_when_its_owner_started(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    runner = JobRunner(store, lambda *a: {})
    job = runner.submit("c", "m", {})
    saved = json.loads(store.path(job.id).read_text())
    assert saved["owner_pid"] == os.getpid()
    assert saved["owner_start"] == process_start(os.getpid()) is not None


@pytest.mark.parametrize("pid", [0, -1, 2**40])
def test_a_job_file_with_an_impossible_owner_pid_reads_failed(tmp_path: Path, pid: int) -> None:
    """Round 31: a job file (damaged or hand-edited) whose owner_pid was 2**40 made /v1/jobs
    a 500 (OverflowError) and stopped start-up; 0 or -1 read `running` for ever."""
    store = JobStore(tmp_path / "jobs")
    store.save(Job(id="odd1", catalog="c", model="m", options={}, status="running", owner_pid=pid))
    store.save(Job(id="odd2", catalog="c", model="n", options={}, status="queued", owner_pid=pid))
    job = JobRunner(store, lambda *a: {}).get("odd1")
    assert job.status == "failed" and job.error is not None
    starting = JobRunner(store, lambda *a: {})  # start-up reads every job file
    starting.start()
    starting.stop()
    assert store.load("odd2").status == "failed"
