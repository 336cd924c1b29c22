"""A backbone replaced while a teach job runs (round 26 lifecycle audit): the job ended failed
("was refused when loading") yet left its version on disk, served as soon as the backbone came
back. Now it fails with the catalog's 409 model-mismatch and publishes nothing. A real app on
a copy of the shipped products bundle, swapped for another build of it."""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import onnx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.teach import core
from tests.app.teach.conftest import BAG, SNEAKER, make_catalog, wait_job
from tests.conftest import ROOT, make_settings
from tests.onnx_graphs import replace_model


def _another_build(bundle: Path) -> None:
    """The same weights with another producer name: another sha256, so another build."""
    graph = onnx.load(str(bundle / "model.onnx"))
    graph.producer_name = "another-build"
    replace_model(bundle, graph.SerializeToString())


@pytest.fixture
def app_on_a_copy(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    models = tmp_path / "models"
    shutil.copytree(ROOT / "models" / "products", models / "products")
    settings = make_settings(models, tmp_path, enabled_models=["products"], model_poll_seconds=0)
    with TestClient(create_app(settings)) as c:
        yield c, models / "products"


def _swapping_after(
    monkeypatch: pytest.MonkeyPatch, step: str, client: TestClient, bundle: Path
) -> None:
    real: Callable[..., Any] = getattr(core, step)

    def then_swap(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        _another_build(bundle)
        client.app.state.registry.refresh()  # type: ignore[attr-defined]
        return out

    monkeypatch.setattr(core, step, then_swap)


@pytest.mark.parametrize("step", ["train", "write_taught"])
def test_a_backbone_replaced_during_a_job_fails_it_with_nothing_published(
    app_on_a_copy: tuple[TestClient, Path],
    fm_pngs: dict[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    c, bundle = app_on_a_copy
    make_catalog(c, "shop", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
    _swapping_after(monkeypatch, step, c, bundle)
    r = c.post("/v1/catalogs/shop/train", json={"model": "shoes"})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.headers["location"])
    assert job["status"] == "failed", job
    assert job["error"]["status"] == 409 and job["error"]["type"].endswith("/model-mismatch")
    assert "reindex the catalog" in job["error"]["detail"]
    assert c.get("/v1/models/shoes").status_code == 404
    taught = core.taught_root(c.app.state.settings) / "shoes"  # type: ignore[attr-defined]
    assert not taught.exists() or not any(p.name.isdigit() for p in taught.iterdir())


def test_a_zip_for_a_catalog_whose_model_was_replaced_is_one_409(
    app_on_a_copy: tuple[TestClient, Path], fm_pngs: dict[int, list[bytes]]
) -> None:
    """Round 31: every image of the zip was skipped with the model-mismatch reason, and the
    upload answered 200 with nothing added; train said 409. Now the zip says 409 too, before
    its body is read."""
    c, bundle = app_on_a_copy
    make_catalog(c, "shop", {"sneaker": fm_pngs[SNEAKER][:2], "bag": fm_pngs[BAG][:2]})
    _another_build(bundle)
    c.app.state.registry.refresh()  # type: ignore[attr-defined]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("bag/1.png", fm_pngs[BAG][3])
    r = c.post(
        "/v1/catalogs/shop/items:zip",
        content=buf.getvalue(),
        headers={"content-type": "application/zip"},
    )
    assert r.status_code == 409 and r.json()["type"] == "/problems/model-mismatch", r.text
    assert c.get("/v1/catalogs/shop").json()["item_count"] == 4
