"""A real Milvus 2.3 standalone server (PyPI `milvus`, installed by scripts/setup-milvus into
.venv-milvus) for the tests that need one: the `milvus_url` fixture, registered for the whole
suite from tests/conftest.py. In CI a missing server fails; on a developer machine it skips."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port

MILVUS_HINT = "run scripts/setup-milvus (installs the Milvus server into .venv-milvus)"
MILVUS_START_TIMEOUT_S = 120


def _missing(reason: str) -> None:
    """In CI the Milvus backend must run: fail there, skip on a developer machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; {MILVUS_HINT}")
    pytest.skip(f"{reason}; {MILVUS_HINT}")


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """The wrapper ignores SIGTERM's meaning for its child: stop the whole group, then any
    straggler by PID."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        for k in kids:
            with contextlib.suppress(psutil.NoSuchProcess):
                k.send_signal(sig)
        _, alive = psutil.wait_procs(kids, timeout=5)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue
        if not alive:
            return


@pytest.fixture(scope="session")
def milvus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Milvus 2.3 standalone server (PyPI `milvus`) on a free loopback port."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        _missing("pymilvus is not installed (pip install -e '.[milvus]')")
    exe = Path(os.environ.get("IMGCLASS_MILVUS_SERVER", ROOT / ".venv-milvus/bin/milvus-server"))
    if not exe.is_file():
        _missing(f"no Milvus server at {exe}")
    from pymilvus import MilvusClient

    data = tmp_path_factory.mktemp("milvus")
    for attempt in (1, 2):  # a start-up race in Milvus 2.3 (nil etcd client) can kill it once
        port = free_port()
        log = (data / "wrapper.log").open("wb")
        proc = subprocess.Popen(
            [str(exe), "--data", str(data), "--proxy-port", str(port), *MILVUS_TEST_CONFIG],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown reaches the server
        )
        try:
            url = _wait_ready(proc, data, MilvusClient)
        except _Died:
            _kill_tree(proc)
            log.close()
            if attempt == 2:
                pytest.fail(f"Milvus exited during start-up twice; see {data}/logs")
            continue
        except BaseException:
            _kill_tree(proc)
            log.close()
            raise
        break
    try:
        yield url
    finally:
        _kill_tree(proc)
        log.close()
        shutil.rmtree(data / "data", ignore_errors=True)


# Faster time ticks: Session-consistent reads after a write wait for the next tick (200 ms by
# default). Test speed only; production keeps Milvus's defaults.
MILVUS_TEST_CONFIG = ["--extra-config", "proxy.timeTickInterval=20"]


class _Died(Exception):
    pass


def _proxy_port(data: Path) -> int | None:
    """The port the server really uses: the wrapper moves on silently when one is taken."""
    cfg = data / "configs" / "milvus.yaml"
    if not cfg.is_file():
        return None
    section = None
    for line in cfg.read_text().splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            section = line.strip()[:-1]
        elif section == "proxy" and line.startswith("  port:"):
            return int(line.split(":", 1)[1].split("#")[0])
    return None


def _wait_ready(proc: subprocess.Popen[bytes], data: Path, client_cls: Any) -> str:
    import psutil

    deadline = time.monotonic() + MILVUS_START_TIMEOUT_S
    seen_server = False
    while True:
        if proc.poll() is not None:
            raise _Died
        # The wrapper neither exits nor reaps when the server dies: watch the child itself.
        try:
            kids = psutil.Process(proc.pid).children()
        except psutil.NoSuchProcess as exc:
            raise _Died from exc
        alive = [k for k in kids if k.status() != psutil.STATUS_ZOMBIE]
        seen_server = seen_server or bool(kids)
        if seen_server and not alive:
            raise _Died
        port = _proxy_port(data)
        if port is not None:
            try:
                client = client_cls(uri=f"http://127.0.0.1:{port}", timeout=2)
                client.list_collections()
                client.close()
                return f"milvus://127.0.0.1:{port}"
            except Exception:
                pass
        if time.monotonic() > deadline:
            pytest.fail(f"Milvus not ready in {MILVUS_START_TIMEOUT_S} s; see {data}/logs")
        time.sleep(0.5)
