"""kill -9 right after a 201 loses nothing; a deleted item stays deleted. Real uvicorn process."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import ROOT, free_port


class Server:
    def __init__(self, models: Path, data: Path, log: Path) -> None:
        self.models, self.data, self.log = models, data, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        env = {
            **os.environ,
            "IMGCLASS_MODELS_DIR": str(self.models),
            "IMGCLASS_DATA_DIR": str(self.data),
            "IMGCLASS_LOAD_IN_BACKGROUND": "false",
            "IMGCLASS_WARMUP_RUNS": "1",
            "IMGCLASS_ACCESS_LOG": "false",
        }
        cmd = [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not become ready"
            time.sleep(0.1)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill9()


@pytest.fixture
def server(tiny_models_dir: Path, tmp_path: Path) -> Iterator[Server]:
    s = Server(tiny_models_dir, tmp_path / "data", tmp_path / "server.log")
    s.start()
    yield s
    s.stop()


def _png(i: int, fashion_mnist: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(fashion_mnist.x_test[i][..., 0]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_kill_9_after_201_loses_nothing(server: Server, fashion_mnist: Any) -> None:
    c = httpx.Client(base_url=server.url, timeout=30)
    assert c.post("/v1/catalogs", json={"name": "d", "model": "tiny"}).status_code == 201
    acked: list[str] = []
    stop = threading.Event()

    def writer(offset: int) -> None:
        # keep requests in flight when the process dies
        w = httpx.Client(base_url=server.url, timeout=30)
        i = offset
        while not stop.is_set():
            # images 500-999: none is the foreground's (0-14, 99), so the searches below for
            # fg3 and "last" cannot meet a background copy of the same picture
            image = _png(500 + i % 500, fashion_mnist)
            try:
                r = w.post(f"/v1/catalogs/d/items?id=bg{i}", content=image)
            except httpx.HTTPError:
                return
            if r.status_code == 201:
                acked.append(f"bg{i}")
            i += 1

    t = threading.Thread(target=writer, args=(1000,), daemon=True)
    t.start()
    for i in range(15):
        r = c.post(f"/v1/catalogs/d/items?id=fg{i}&label=L{i % 3}", content=_png(i, fashion_mnist))
        assert r.status_code == 201
        acked.append(f"fg{i}")
    assert c.delete("/v1/catalogs/d/items/fg3").status_code == 204
    acked.remove("fg3")
    r = c.post("/v1/catalogs/d/items?id=last", content=_png(99, fashion_mnist))
    assert r.status_code == 201
    server.kill9()  # the very next thing after the 201
    acked.append("last")
    stop.set()
    t.join(timeout=30)

    t0 = time.perf_counter()
    server.start()
    restart_s = time.perf_counter() - t0
    c = httpx.Client(base_url=server.url, timeout=30)
    for item_id in acked:
        assert c.get(f"/v1/catalogs/d/items/{item_id}").status_code == 200, item_id
        assert c.get(f"/v1/catalogs/d/items/{item_id}/image").status_code == 200, item_id
        assert c.get(f"/v1/catalogs/d/items/{item_id}/thumbnail").status_code == 200, item_id
    assert c.get("/v1/catalogs/d/items/fg3").status_code == 404
    r = c.post("/v1/catalogs/d/search?k=100", content=_png(3, fashion_mnist))
    ids = [n["id"] for n in r.json()["neighbors"]]
    assert (
        "fg3" not in ids
        and "last" in c.post("/v1/catalogs/d/search?k=1", content=_png(99, fashion_mnist)).text
    )
    total = c.get("/v1/catalogs/d").json()["item_count"]
    assert total >= len(acked)  # in-flight writes may have committed without their 201 reaching us
    assert restart_s < 30, restart_s
