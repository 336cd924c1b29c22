"""app.cores: the cores a server may use (affinity, cgroup quota) and each worker's share."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from app import cores
from app.batching import Schedulers
from app.cores import (
    MAX_AUTO_WORKERS,
    cores_per_worker,
    cpu_count,
    lower_thread_priority,
    resolve_workers,
)
from app.settings import Settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", None),
        ("150000 100000\n", 2),
        ("50000 100000\n", 1),
        ("200000 100000\n", 2),
        ("garbage\n", None),
        ("0 0\n", None),
    ],
)
def test_cgroup_quota(tmp_path: Path, text: str, expected: int | None) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(text)
    assert cores._cgroup_quota_cores(f) == expected


def test_missing_cgroup_file_means_no_quota(tmp_path: Path) -> None:
    assert cores._cgroup_quota_cores(tmp_path / "absent") is None


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("-1", "100000", None), ("150000", "100000", 2), ("50000", "100000", 1), ("0", "0", None)],
)
def test_cgroup_v1_quota(tmp_path: Path, quota: str, period: str, expected: int | None) -> None:
    """A v1 host (`docker run --cpus` writes cpu.cfs_quota_us): the limit was ignored there, so
    a 2-CPU container on a 16-core host sized itself for 16."""
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text(quota + "\n")
    (folder / "cpu.cfs_period_us").write_text(period + "\n")
    assert cores._cgroup_v1_quota_cores((tmp_path / "cpu", folder)) == expected
    assert cores._cgroup_v1_quota_cores((tmp_path / "absent",)) is None


def test_cpu_count_takes_the_v1_quota_when_there_is_no_v2_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "cpu"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    monkeypatch.setattr(cores, "CGROUP_V1_CPU_DIRS", (folder,))
    monkeypatch.setattr(cores, "_cgroup_quota_cores", lambda: None)
    assert cpu_count() == 1


def test_cpu_count_is_capped_by_affinity() -> None:
    assert 1 <= cpu_count() <= len(os.sched_getaffinity(0))


def test_resolve_workers() -> None:
    assert resolve_workers(3, gpu=False) == 3
    assert resolve_workers(3, gpu=True) == 3  # an explicit setting wins
    assert resolve_workers(0, gpu=True) == 1
    assert resolve_workers(0, gpu=False) == min(cpu_count(), MAX_AUTO_WORKERS)


def test_each_worker_gets_its_share() -> None:
    n = cpu_count()
    assert cores_per_worker(0) == n  # not started by `python -m app`: one process, every core
    assert cores_per_worker(1) == n
    assert cores_per_worker(n) == 1
    assert cores_per_worker(n * 4) == 1  # never zero


def test_scheduler_sizing_follows_the_share() -> None:
    n = cpu_count()
    alone = Schedulers.from_settings(Settings(workers=0)).config
    shared = Schedulers.from_settings(Settings(workers=n)).config
    assert (alone.pipelines, alone.queue_limit) == (n, 12 * n)
    assert (shared.pipelines, shared.queue_limit) == (1, 12)
    assert shared.limits.decode_concurrency == 1
    assert alone.limits.decode_concurrency == n


def _thread_nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
def test_lower_thread_priority_changes_only_the_calling_thread() -> None:
    main_before = _thread_nice(threading.get_native_id())
    seen: dict[str, int | bool] = {}

    def body() -> None:
        tid = threading.get_native_id()
        seen["before"] = _thread_nice(tid)
        seen["changed"] = lower_thread_priority(3)
        seen["after"] = _thread_nice(tid)
        seen["again"] = lower_thread_priority(0)  # 0 steps: nothing to do

    t = threading.Thread(target=body)
    t.start()
    t.join()
    # changed unless this process already runs at the lowest priority (a niced CI job)
    assert seen["changed"] is (int(seen["before"]) < 19) and seen["again"] is False
    assert seen["after"] == min(19, int(seen["before"]) + 3)
    assert _thread_nice(threading.get_native_id()) == main_before  # the caller's only


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux")
def test_lower_thread_priority_stops_at_19() -> None:
    out: list[object] = []

    def body() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, 19)
        out.extend([lower_thread_priority(5), _thread_nice(tid)])

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert out == [False, 19]


def test_lower_thread_priority_elsewhere_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cores.sys, "platform", "darwin")
    called: list[object] = []
    monkeypatch.setattr(cores.os, "setpriority", lambda *a: called.append(a))
    assert lower_thread_priority(5) is False and called == []
