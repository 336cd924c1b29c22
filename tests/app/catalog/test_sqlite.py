"""app.catalog.sqlite: one connection per thread, none left behind by threads that ended."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from pathlib import Path
from typing import Any

from app.catalog.sqlite import Connections


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    db = Connections(tmp_path / "c.sqlite3")
    db.conn().execute("CREATE TABLE t (x INTEGER)")
    before = open_fds()

    def use() -> None:  # like a request on a short-lived thread-pool worker
        with db.tx() as conn:
            conn.execute("INSERT INTO t VALUES (1)")

    for _ in range(40):
        worker = threading.Thread(target=use)
        worker.start()
        worker.join()
    # One connection of a thread that ended may remain until the next thread opens one.
    assert len(db._conns) <= 2
    assert open_fds() <= before + 3
    with db.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 40
    db.close()
    assert db._conns == {}


def test_a_live_thread_keeps_its_connection(tmp_path: Path) -> None:
    db = Connections(tmp_path / "c.sqlite3")
    mine = db.conn()
    other = threading.Thread(target=db.conn)
    other.start()
    other.join()
    assert db.conn() is mine and threading.current_thread() in db._conns
    db.close()


def _open_store(root: str, start: Any, results: Any) -> None:
    from app.catalog.embedded import EmbeddedStore

    store = EmbeddedStore(Path(root))
    start.wait()
    try:
        store.open()
        results.put("ok")
    except Exception as exc:  # what a worker's first request met
        results.put(repr(exc))


def test_two_processes_open_a_new_store_together(tmp_path: Path) -> None:
    """Round 26: two workers opening a fresh data folder at once failed half the time with
    "database is locked" (the switch to WAL takes a lock the busy timeout does not wait for):
    an ERROR line and a 503 for the first catalog request."""
    ctx = mp.get_context("fork")
    for trial in range(10):
        start, results = ctx.Barrier(2), ctx.Queue()
        root = str(tmp_path / f"t{trial}")
        procs = [ctx.Process(target=_open_store, args=(root, start, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert [results.get(timeout=5), results.get(timeout=5)] == ["ok", "ok"], trial


READ_ONLY_SPELL = """
import sqlite3, sys, threading
from pathlib import Path
from app.catalog.sqlite import Connections

folder = Path(sys.argv[1])
db = Connections(folder / "c.sqlite3")
db.conn().execute("PRAGMA journal_mode=WAL")
db.conn().execute("CREATE TABLE t (x INTEGER)")

def modes(d, f):
    for p in folder.iterdir():
        p.chmod(f)
    folder.chmod(d)

def insert(results):
    try:
        with db.tx() as conn:
            conn.execute("INSERT INTO t VALUES (1)")
        results.append("ok")
    except sqlite3.Error as exc:
        results.append(str(exc).replace(" ", "_"))

modes(0o555, 0o444)  # this thread's connection stays open: the -wal and -shm files stay
during = []
worker = threading.Thread(target=lambda: [insert(during), go.wait(), insert(after)])
go, after = threading.Event(), []
worker.start()
while not during:
    pass
modes(0o755, 0o644)
go.set()
worker.join()
print(during[0], after[0])
"""


def test_a_connection_opened_while_the_folder_was_read_only_is_not_kept(tmp_path: Path) -> None:
    """Round 43: SQLite opens a database it cannot write read-only, in silence, and such a
    connection stays read-only; threads that opened theirs during a read-only spell refused
    every write (503) once the folder was writable again, until a restart. Held to file modes
    as the container's uid is."""
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.unprivileged import held_to_file_modes

    r = subprocess.run(
        [*held_to_file_modes(), sys.executable, "-c", READ_ONLY_SPELL, str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.stdout.split() == ["attempt_to_write_a_readonly_database", "ok"], (
        r.stdout,
        r.stderr[-2000:],
    )
