"""A live app on the shipped bundles (imagenet, bird, products, digits) for hostile inputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.hostile.cases import DIGIT, PHOTO, photo_jpeg
from tests.conftest import ROOT, make_settings, require


@pytest.fixture(scope="session")
def shipped_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    require(PHOTO)
    require(DIGIT)
    settings = make_settings(ROOT / "models", tmp_path_factory.mktemp("hostile"))
    # raise_server_exceptions=False: a 500 must reach the test as a response, as it would
    # reach a client, instead of being re-raised inside the test.
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def photo_top5(shipped_client: TestClient) -> list[str]:
    """The imagenet model's top-5 for the plain photo: odd-but-valid variants of it must
    land their top-1 in here."""
    r = shipped_client.post(
        "/v1/models/imagenet/predict",
        content=photo_jpeg(),
        headers={"content-type": "application/octet-stream"},
    )
    assert r.status_code == 200, r.text
    labels = [p["label"] for p in r.json()["results"][0]["predictions"]]
    assert labels[0] == "yurt"  # ImageNet class 915, the photo's own label
    return labels
