"""app.procmem: resident memory of the server's processes, from /proc (the real one, and a
folder laid out like it for the supervisor/worker case)."""

from __future__ import annotations

import os
from pathlib import Path

from app.procmem import rss_bytes, server_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_one_process_reports_itself() -> None:
    (only,) = server_memory(workers=1)
    assert only.pid == os.getpid() and only.role == "server"
    assert 10 * 2**20 < only.rss_bytes < 64 * 2**30  # a Python process with numpy loaded


def _proc(root: Path, pid: int, pages: int, cmdline: bytes, children: list[int] = []) -> None:  # noqa: B006
    d = root / str(pid)
    (d / "task" / str(pid)).mkdir(parents=True)
    (d / "statm").write_text(f"{pages * 3} {pages} 10 1 0 5 0\n")
    (d / "cmdline").write_bytes(cmdline)
    (d / "task" / str(pid) / "children").write_text(" ".join(map(str, children)) + " ")


def test_workers_report_the_supervisor_and_every_worker(tmp_path: Path) -> None:
    me, parent = os.getpid(), os.getppid()
    started = (
        b"python\0-c\0from app.dealt_server import worker_main\0--imgclass-worker\0007\0info\0"
    )
    spawned = b"python\0-c\0from multiprocessing.spawn import spawn_main; spawn_main()\0"
    tracker = b"python\0-c\0from multiprocessing.resource_tracker import main;main(5)\0"
    _proc(tmp_path, parent, 100, b"python\0-m\0app\0", children=[me, 999_001, 999_002])
    _proc(tmp_path, me, 200, started)  # app.worker_process
    _proc(tmp_path, 999_001, 300, spawned)  # uvicorn's own workers (no socket passing)
    _proc(tmp_path, 999_002, 5, tracker)  # multiprocessing's helper, not a server worker
    got = {(p.pid, p.role, p.rss_bytes) for p in server_memory(workers=2, proc=tmp_path)}
    assert got == {
        (parent, "supervisor", 100 * PAGE),
        (me, "worker", 200 * PAGE),
        (999_001, "worker", 300 * PAGE),
    }


def test_unreadable_entries_are_skipped(tmp_path: Path) -> None:
    assert rss_bytes(12345, proc=tmp_path) is None
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "statm").write_text("garbage")
    assert rss_bytes(7, proc=tmp_path) is None
    # no children list readable: this worker still reports itself when /proc has it
    _proc(tmp_path, os.getpid(), 50, b"x")
    got = server_memory(workers=2, proc=tmp_path)
    assert [(p.role, p.rss_bytes) for p in got] == [("worker", 50 * PAGE)]
