"""Running a server subprocess for the bench scripts: a free loopback port, the uvicorn command,
waiting for readiness and stopping it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_cmd(port: int, *extra: str) -> list[str]:
    """`python -m uvicorn app.main:create_app --factory` on 127.0.0.1:`port`, then `extra` args."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Poll `url` every 0.1 s until it answers 200; exit if `proc` dies or `timeout` s pass.

    It does not stop `proc`: call it inside the caller's try/finally that does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited during start-up ({url}); see its log")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready after {timeout:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, wait up to 15 s, then kill."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
