"""A real imgclass server on a free loopback port, for tests that need real HTTP clients
(tritonclient, Prometheus, URL fetching, streaming bodies, Chromium): in a subprocess
(`live_server`) or a uvicorn thread in this process (`serve_in_thread`). Bounded start-up;
always stopped. `serve_stdlib` runs a test's own http.server in a thread the same way."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
def running_process(
    cmd: list[str],
    ready_url: str,
    log_path: Path,
    timeout_s: float,
    verify: ssl.SSLContext | bool = True,
    **popen: Any,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd` (output to `log_path`), wait until `ready_url` answers 200 (failing the test
    with the log's tail if it exits or is not ready in `timeout_s`), always stop it. `verify`:
    what an https `ready_url`'s certificate is checked with."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)
    deadline = time.monotonic() + timeout_s
    tail = lambda: log_path.read_text(errors="replace")[-3000:]  # noqa: E731
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{cmd[0]} exited with {proc.returncode}:\n{tail()}")
            try:
                if httpx.get(ready_url, timeout=2, verify=verify).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{ready_url} not ready in {timeout_s:g} s:\n{tail()}")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


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
    server = LiveServer(f"http://127.0.0.1:{port}", port, log_path)
    with running_process(
        cmd, server.base + ready_path, log_path, START_TIMEOUT_S, cwd=ROOT, env=full_env
    ):
        yield server


@contextmanager
def serve_in_thread(app: FastAPI, **options: Any) -> Iterator[int]:
    """Run `app` with uvicorn in a daemon thread on a free loopback port; yields the port.
    `options` go to uvicorn.Config (e.g. `http=` a protocol class)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
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


def read_until_closed(
    sock: socket.socket, drip: bytes = b"", limit_s: float = 8.0
) -> tuple[bytes, float, bool]:
    """Everything the server sends on `sock` until it closes the connection or `limit_s`
    passes, sending `drip` every 0.2 s until its first byte arrives: (bytes, seconds, closed)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    got = b""
    while time.monotonic() - start < limit_s:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            if drip and not got:
                with contextlib.suppress(OSError):
                    sock.sendall(drip)
            continue
        except ConnectionResetError:
            return got, time.monotonic() - start, True
        if not data:
            return got, time.monotonic() - start, True
        got += data
    return got, time.monotonic() - start, False


@contextmanager
def serve_stdlib(server: ThreadingHTTPServer, scheme: str = "http") -> Iterator[str]:
    """Serve a bound http.server in a daemon thread; yields its base URL; always shut down."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def grpc_env(grpc_port: int, workers: int = 1, **extra: str) -> dict[str, str]:
    """`python -m app` serving the shipped `digits` bundle, with the gRPC port on."""
    return {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": str(workers),
        "IMGCLASS_GRPC_PORT": str(grpc_port),
        "IMGCLASS_LOG_LEVEL": "WARNING",
        **extra,
    }
