"""The KServe SDK's REST client (kserve 0.21.0, the `kserve` package on PyPI) against a real
server: health, model readiness, and the shipped imagenet model on the 20 foolbox ImageNet
photos in JSON and binary-data modes, with the same top-5 as /v1. The SDK lives in its own
environment (`.venv-kserve`, made by `scripts/install all`), so it runs as a subprocess."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DATA, ROOT, free_port
from tests.live_server import LiveServer, live_server

KSERVE_PYTHON = ROOT / ".venv-kserve" / "bin" / "python"
CLIENT = ROOT / "tests" / "app" / "kserve_client.py"

pytestmark = pytest.mark.slow
GRPC_PORT = free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["imagenet"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_LOG_LEVEL": "WARNING",
        "IMGCLASS_GRPC_PORT": str(GRPC_PORT),
    }
    with live_server(tmp_path_factory.mktemp("kserve"), env, ready_path="/v2/health/ready") as s:
        yield s


def run_client(base: str) -> tuple[dict[str, Any], list[Path]]:
    """The SDK client script's JSON answer against `base`, and the photos it sent."""
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing; run scripts/install all")
    photos = sorted((DATA / "photos" / "foolbox").glob("imagenet_*.jpg"))
    assert len(photos) == 20, "expected the 20 foolbox ImageNet photos; run scripts/fetch-data"
    run = subprocess.run(
        [str(KSERVE_PYTHON), str(CLIENT), base, "imagenet", *map(str, photos)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got: dict[str, Any] = json.loads(run.stdout)
    assert (got["live"], got["ready"], got["model_ready"]) == (True, True, True)
    assert got["outputs"] == ["embedding", "probs"]
    return got, photos


def v1_top5(server: LiveServer, photos: list[Path]) -> list[list[int]]:
    expected: list[list[int]] = []
    for start in range(0, len(photos), 4):
        files = [
            ("file", (p.name, p.read_bytes(), "image/jpeg")) for p in photos[start : start + 4]
        ]
        r = httpx.post(f"{server.base}/v1/models/imagenet/predict?top_k=5", files=files, timeout=60)
        assert r.status_code == 200, r.text
        expected += [[p["index"] for p in res["predictions"]] for res in r.json()["results"]]
    return expected


def test_kserve_rest_client_gets_the_same_top5_as_v1(server: LiveServer) -> None:
    got, photos = run_client(server.base)
    assert got["request_id"].startswith("kserve-")
    expected = v1_top5(server, photos)
    assert got["json"] == expected
    assert got["binary"] == expected
    # An unknown model is an error the SDK reports with the server's message, not a success.
    assert "no-such-model" in got["unknown_model"] and "answered" not in got["unknown_model"]


def test_kserve_grpc_client_gets_the_same_top5_as_v1(server: LiveServer) -> None:
    """The SDK's InferenceGRPCClient against the gRPC binding (IMGCLASS_GRPC_PORT)."""
    got, photos = run_client(f"grpc://127.0.0.1:{GRPC_PORT}")
    assert got["request_id"] == "kserve-grpc-0"
    assert got["grpc"] == v1_top5(server, photos)
    assert "NOT_FOUND" in got["unknown_model"] and "no-such-model" in got["unknown_model"]
