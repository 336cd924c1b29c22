"""app/heap.py: the start-up heap leaves the collector's sight once the models are loaded."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.heap import HeapTrimmer, freeze_loaded_heap
from app.main import create_app
from tests.conftest import make_settings
from tests.images import encode


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()  # the rest of the test session collects as usual


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_freeze_keeps_live_objects_and_collects_garbage_first(unfrozen: None) -> None:
    live = [_Node() for _ in range(1000)]
    garbage = [_Node() for _ in range(500)]
    garbage_ids = {id(g) for g in garbage}
    del garbage
    frozen = freeze_loaded_heap()
    # Not equal to gc.get_freeze_count() read later: other threads of the test process (and the
    # log line) may free a frozen object by reference counting in between (seen: 2 of 589,460).
    assert frozen >= len(live) and gc.get_freeze_count() >= len(live)
    tracked = {id(o) for o in gc.get_objects()}  # the permanent generation is not listed
    assert not any(id(n) in tracked for n in live)
    # The unreachable cycles were collected before the freeze, not frozen for good: back in
    # the collector's sight, only the live nodes are there.
    gc.unfreeze()
    nodes = {id(o) for o in gc.get_objects() if type(o) is _Node}
    assert {id(n) for n in live} <= nodes
    assert not nodes & garbage_ids


def _wait_frozen(timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and gc.get_freeze_count() == 0:
        time.sleep(0.05)
    return gc.get_freeze_count()


def test_app_freezes_its_heap_after_loading_the_models(
    unfrozen: None, tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, gc_freeze=True, load_in_background=True)
    with TestClient(create_app(settings)) as client:
        assert _wait_frozen() > 10_000  # FastAPI, pydantic and the loaded bundle, at least
        # ready once the catalog store is open too, in a thread of its own (the heap is
        # frozen after the models load; on a busy machine the store may come later)
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.05)
        assert (
            client.post(
                "/v1/models/tiny/predict",
                files={"file": encode(Image.new("L", (28, 28), 128), "PNG")},
            ).status_code
            == 200
        )


def test_app_leaves_the_heap_alone_when_told(
    unfrozen: None, tiny_models_dir: Path, tmp_path: Path
) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, gc_freeze=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        assert gc.get_freeze_count() == 0


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_trimmer_hands_freed_pages_back() -> None:
    trimmer = HeapTrimmer(0.05)
    if not trimmer.active:
        pytest.skip("no glibc malloc_trim here")
    # 128 MB of small blocks (below any mmap threshold), freed but for every 50th: the holes
    # between the survivors stay resident until trimmed.
    blocks = [bytearray(64 * 1024) for _ in range(2000)]
    keep = blocks[::50]
    del blocks
    before = _rss_mb()
    trimmer.start()
    try:
        deadline = time.monotonic() + 5
        while trimmer.trims < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert trimmer.trims >= 1
    finally:
        trimmer.stop()
    assert _rss_mb() < before - 60, (before, _rss_mb())
    assert trimmer._thread is None and len(keep) == 40


def test_trimmer_off_is_inactive() -> None:
    trimmer = HeapTrimmer(0)
    trimmer.start()
    assert not trimmer.active and trimmer.trim_now() == 0.0 and trimmer._thread is None
