"""scripts/build-products-catalog fills a catalog from Fashion-MNIST, resumes, and is searchable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.catalog.embedded import EmbeddedStore
from tests.app.catalog.conftest import rebuild_bundle
from tests.conftest import DATA, ROOT


@pytest.mark.slow
def test_build_script_fills_and_resumes(tiny_models_dir: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "IMGCLASS_MODELS_DIR": str(tiny_models_dir),
        "IMGCLASS_DATA_DIR": str(tmp_path / "svc"),
        "IMGCLASS_TRAINING_DATA_DIR": str(DATA),
    }
    cmd = [sys.executable, str(ROOT / "scripts/build-products-catalog"), "--model", "tiny"]
    first = subprocess.run([*cmd, "--limit", "60"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*cmd, "--limit", "80"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "60 items present, 20 to add" in again.stdout
    store = EmbeddedStore(tmp_path / "svc" / "catalogs")
    store.open()
    rec = store.get_catalog("products")
    assert rec.item_count == 80 and rec.model.name == "tiny"
    item = store.get_item("products", "fmnist-test-00000")
    assert item.label == "Ankle boot" and item.metadata["index"] == 0
    hits = store.search("products", store.get_vector("products", "fmnist-test-00000")[None, :], 1)
    assert hits[0][0].item.id == "fmnist-test-00000"
    store.close()
    missing = subprocess.run(
        [*cmd[:-2], "--model", "nope"], env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no bundle" in missing.stderr


@pytest.mark.slow  # 3 s: a second scripted build; fills_and_resumes covers the script fast
def test_build_script_reindexes_after_a_new_model_build(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """A new build of the shipped model (another sha256) must not leave scripts/serve with a
    catalog that refuses every search: the script re-embeds the stored items."""
    from app.bundle import load_bundle

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    env = {
        **os.environ,
        "IMGCLASS_MODELS_DIR": str(models),
        "IMGCLASS_DATA_DIR": str(tmp_path / "svc"),
        "IMGCLASS_TRAINING_DATA_DIR": str(DATA),
    }
    cmd = [sys.executable, str(ROOT / "scripts/build-products-catalog"), "--model", "tiny"]
    assert subprocess.run([*cmd, "--limit", "30"], env=env, capture_output=True).returncode == 0
    rebuild_bundle(models / "tiny")
    again = subprocess.run([*cmd, "--limit", "40"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "reindexed 30 items" in again.stdout and "30 items present, 10 to add" in again.stdout
    store = EmbeddedStore(tmp_path / "svc" / "catalogs")
    store.open()
    rec = store.get_catalog("products")
    assert rec.item_count == 40
    assert rec.model.sha256 == load_bundle(models / "tiny").metadata.artifact.sha256
    store.close()
