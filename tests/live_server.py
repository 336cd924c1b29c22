"""A real imgclass server on a free loopback port, for tests that need real HTTP clients
(tritonclient, Prometheus, URL fetching, streaming bodies, Chromium): in a subprocess
(`live_server`) or a uvicorn thread in this process (`serve_in_thread`). Bounded start-up;
always stopped."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from tests.conftest import ROOT, free_port

START_TIMEOUT_S = 90


@dataclass(frozen=True)
class LiveServer:
    base: str
    port: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def live_server(
    tmp: Path, env: dict[str, str], *, entry: str = "uvicorn", ready_path: str = "/readyz"
) -> Iterator[LiveServer]:
    """Start `python -m uvicorn app.main:create_app` (entry="uvicorn") or `python -m app`
    (entry="app": the real entry point, needed for IMGCLASS_WORKERS > 1) and wait for
    `ready_path` to answer 200."""
    port = free_port()
    full_env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(tmp / "service-data"),
        "IMGCLASS_WARMUP_RUNS": "1",
        "IMGCLASS_HOST": "127.0.0.1",
        "IMGCLASS_PORT": str(port),
        **env,
    }
    if "PROMETHEUS_MULTIPROC_DIR" not in env:
        full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if entry == "app":
        cmd = [sys.executable, "-m", "app"]
    else:
        cmd = [
            sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
    log_path = tmp / f"server-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", port, log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}:\n{server.log_text()[-3000:]}")
            try:
                if httpx.get(server.base + ready_path, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in {START_TIMEOUT_S}s:\n{server.log_text()[-3000:]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[int]:
    """Run `app` with uvicorn in a daemon thread on a free loopback port; yields the port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
