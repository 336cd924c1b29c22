"""app.allocator: which C allocator `python -m app` runs on, and the re-exec that preloads
jemalloc. The choice logic on its own; then real servers (one worker and two) on a machine that
has Debian's libjemalloc2 (scripts/setup-system installs it), read back through /metrics."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.allocator import (
    LIBRARY,
    MALLOC_CONF,
    REEXEC_MARK,
    find_jemalloc,
    loaded_allocator,
    preload_env,
)
from app.errors import ConfigurationError
from tests.conftest import ROOT
from tests.live_server import live_server

pytestmark = pytest.mark.slow  # real servers of their own: out of the fast subset (round 28)

LIB = Path("/usr/lib/x86_64-linux-gnu") / LIBRARY


def test_glibc_never_preloads() -> None:
    assert preload_env("glibc", {}, LIB) is None


def test_auto_without_the_library_goes_on_as_is() -> None:
    assert preload_env("auto", {}, None) is None


def test_jemalloc_without_the_library_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match=r"libjemalloc2"):
        preload_env("jemalloc", {}, None)


def test_preload_is_added_in_front_of_an_existing_one_and_marked() -> None:
    env = preload_env("auto", {"LD_PRELOAD": "/opt/x.so", "KEEP": "1"}, LIB)
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIB} /opt/x.so"
    assert env[REEXEC_MARK] == "1"
    assert env["KEEP"] == "1"


def test_jemalloc_returns_idle_pages_unless_the_operator_configured_it() -> None:
    """Without a background purge an idle worker kept ~40 MiB its start-up had freed."""
    env = preload_env("auto", {}, LIB)
    assert env is not None
    assert env["MALLOC_CONF"] == MALLOC_CONF + ",narenas:1"
    assert "background_thread:true" in MALLOC_CONF
    # one arena per core of a worker's share (round 37: 629 -> 593-601 MiB peak, 2 workers)
    wide = preload_env("auto", {}, LIB, arenas=4)
    assert wide is not None and wide["MALLOC_CONF"].endswith(",narenas:4")
    own = preload_env("auto", {"MALLOC_CONF": "narenas:2"}, LIB)
    assert own is not None and own["MALLOC_CONF"] == "narenas:2"


def test_no_second_reexec() -> None:
    assert preload_env("auto", {"LD_PRELOAD": str(LIB)}, LIB) is None
    # A preload that did not take (e.g. a setuid interpreter) must not loop.
    assert preload_env("jemalloc", {REEXEC_MARK: "1"}, LIB) is None


def test_find_jemalloc_searches_the_folders_in_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert find_jemalloc([str(a), str(b)]) is None
    (b / LIBRARY).write_bytes(b"")
    assert find_jemalloc([str(a), str(b)]) == b / LIBRARY
    (a / LIBRARY).write_bytes(b"")
    assert find_jemalloc([str(a), str(b)]) == a / LIBRARY


def test_loaded_allocator_reads_the_maps(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert loaded_allocator(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert loaded_allocator(maps) == "glibc"
    assert loaded_allocator(tmp_path / "missing") == "glibc"


def _allocator_metric(base: str) -> str:
    text = httpx.get(base + "/metrics", timeout=10).text
    found = re.findall(r'^imgclass_allocator_info\{allocator="(\w+)"\} 1', text, re.M)
    assert len(found) == 1, text[-2000:]
    return found[0]


@pytest.mark.skipif(find_jemalloc() is None, reason="libjemalloc2 not installed")
@pytest.mark.parametrize(
    ("choice", "workers"),
    [("auto", "1"), pytest.param("auto", "2", marks=pytest.mark.slow), ("glibc", "1")],
)
def test_real_server_runs_on_the_chosen_allocator(
    tmp_path: Path, choice: str, workers: str
) -> None:
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_WORKERS": workers,
        "IMGCLASS_ALLOCATOR": choice,
        "IMGCLASS_LOG_LEVEL": "INFO",
    }
    with live_server(tmp_path, env, entry="app") as server:
        # With two workers /metrics is answered by a worker: the preload reached it.
        used = _allocator_metric(server.base)
    expected = "glibc" if choice == "glibc" else "jemalloc"
    assert used == expected
    assert f"C allocator: {expected}" in server.log_text()
