"""The `api-milvus` image of docker-compose.yml, run for real against a Milvus server.

scripts/ci-docker builds that image (`docker compose --profile milvus build api-milvus`, which
installs the wheelhouse's requirements-milvus.txt) and then runs this module with
IMGCLASS_CI_MILVUS_IMAGE naming it and DOCKER_HOST pointing at its private dockerd. The
container shares the host's network (the private dockerd has no bridge) and talks to the
Milvus server that tests/milvus_server.py starts on loopback. Without that image the module
skips: building it needs a Docker engine, which the plain pytest run does not start.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

IMAGE = os.environ.get("IMGCLASS_CI_MILVUS_IMAGE", "")
DOCKER = os.environ.get("IMGCLASS_CI_DOCKER", "docker")
READY_TIMEOUT_S = 120

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(
        not IMAGE,
        reason="needs the api-milvus image; scripts/ci-docker builds it and runs this module",
    ),
]

# Three Fashion-MNIST test photos (file name ends in the true class index).
PHOTOS = {
    "boot": "fashionMNIST_00_9.png",
    "pullover": "fashionMNIST_01_2.png",
    "trouser": "fashionMNIST_02_1.png",
}


def docker(*args: str) -> str:
    out = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout.strip()


class Service:
    """One container of the image, serving on a free loopback port of the host."""

    def __init__(self, data: Path, store_url: str) -> None:
        self.data, self.store_url = data, store_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cid = ""

    def __enter__(self) -> httpx.Client:
        # The same hardening as the compose service: read-only root, no capabilities.
        self.cid = docker(
            "run", "-d", "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
            "-v", f"{self.data}:/data",
            "-e", "IMGCLASS_HOST=127.0.0.1", "-e", f"IMGCLASS_PORT={self.port}",
            "-e", "IMGCLASS_PROVIDERS=cpu", "-e", f"IMGCLASS_VECTOR_STORE={self.store_url}",
            IMAGE,
        )  # fmt: skip
        client = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if docker("inspect", "--format", "{{.State.Running}}", self.cid) != "true":
                raise AssertionError(f"the container exited:\n{self.logs()}")
            try:
                if client.get("/readyz").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready in {READY_TIMEOUT_S} s:\n{self.logs()}")
            time.sleep(0.5)

    def logs(self) -> str:
        return docker("logs", "--tail", "60", self.cid) if self.cid else ""

    def __exit__(self, *exc: object) -> None:
        if self.cid:
            docker("rm", "-f", self.cid)


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the service runs as uid 10001
    yield data
    # Files the container wrote belong to uid 10001: remove them from inside one.
    docker("run", "--rm", "--network", "none", "--user", "0", "-v", f"{data}:/data",
           "--entrypoint", "sh", IMAGE, "-c", "rm -rf /data/* /data/.[!.]*")  # fmt: skip


def test_catalog_lives_in_milvus_and_survives_a_new_container(
    milvus_url: str, data_dir: Path, photos_dir: Path
) -> None:
    photos = {k: (photos_dir / "foolbox" / f).read_bytes() for k, f in PHOTOS.items()}
    with Service(data_dir, milvus_url) as c:
        assert c.get("/readyz").json()["status"] == "ready"
        r = c.post("/v1/catalogs", json={"name": "shop", "model": "products"})
        assert r.status_code == 201, r.text
        files = [("file", (f"{k}.png", b, "image/png")) for k, b in photos.items()]
        r = c.post(
            "/v1/catalogs/shop/items",
            files=files,
            data={"id": list(photos), "metadata": [json.dumps({"sku": k}) for k in photos]},
        )
        assert r.status_code == 201, r.text
        hit = c.post("/v1/catalogs/shop/search?k=3", content=photos["boot"]).json()
        assert hit["neighbors"][0]["id"] == "boot"

    # The vectors and item records are in Milvus, not only in the container.
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_url.replace("milvus://", "http://"), timeout=10)
    try:
        assert client.list_collections(), "the service created no Milvus collection"
    finally:
        client.close()

    # A new container on the same volume and server sees the same catalog.
    with Service(data_dir, milvus_url) as c:
        info = c.get("/v1/catalogs/shop").json()
        assert info["item_count"] == 3, info
        again = c.post("/v1/catalogs/shop/search?k=3", content=photos["boot"]).json()
        assert [n["id"] for n in again["neighbors"]] == [n["id"] for n in hit["neighbors"]]
        assert c.get("/v1/catalogs/shop/items/trouser").json()["metadata"] == {"sku": "trouser"}
        assert c.get("/v1/catalogs/shop/items/trouser/thumbnail").status_code == 200
