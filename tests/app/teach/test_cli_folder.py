"""`python -m training teach`: a wrong folder or a catalog on another backbone is refused in one
line before any catalog is made or any image added (a new-user walkthrough got stuck on both)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.teach import cli as teach_cli
from tests.app.teach.conftest import BAG, SNEAKER, teach_settings
from tests.conftest import ROOT


def _catalogs(service: Path) -> list[str]:
    db = service / "catalogs" / "catalogs.sqlite3"
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as con:
        return [r[0] for r in con.execute("SELECT name FROM catalogs ORDER BY name")]


def _teach(service: Path, folder: Path, *more: str) -> int:
    argv = ["--data-dir", str(folder), "--name", "ghost", "--service-data", str(service)]
    return teach_cli.main([*argv, "--models-dir", str(ROOT / "models"), *more])


@pytest.mark.parametrize("layout", ["missing", "loose files", "no images"])
def test_a_folder_without_a_class_of_images_makes_no_catalog(
    tmp_path: Path, layout: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It made an empty catalog bound to `products` first, then said 'not a folder of class
    subfolders'; the next run, with the right folder and --backbone imagenet, added nothing."""
    folder = tmp_path / "pictures"
    if layout != "missing":
        folder.mkdir()
        (folder / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n loose, not in a class folder")
    if layout == "no images":
        (folder / "cat").mkdir()
        (folder / "cat" / "notes.txt").write_text("not an image")
        (folder / ".hidden").mkdir()
        (folder / ".hidden" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n hidden class")
    service = tmp_path / "service"
    assert _teach(service, folder) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {folder} "), err
    assert "one subfolder per class" in err[0] and "cat/1.jpg" in err[0], err
    assert _catalogs(service) == []


def test_one_class_makes_no_new_catalog(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Round 28: a folder with one class made a catalog, added its 50 images, then teach
    refused (a model needs two classes), leaving the catalog behind."""
    folder = tmp_path / "pictures"
    (folder / "bag").mkdir(parents=True)
    for i, data in enumerate(fm_pngs[BAG][:5]):
        (folder / "bag" / f"{i}.png").write_bytes(data)
    service = tmp_path / "service"
    assert _teach(service, folder, "--backbone", "products") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "one class subfolder only" in err[-1], err
    assert _catalogs(service) == []


def test_a_catalog_on_another_backbone_is_refused_naming_both(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "pictures"
    for label, cls in (("sneaker", SNEAKER), ("bag", BAG)):
        (folder / label).mkdir(parents=True)
        for i, data in enumerate(fm_pngs[cls][:2]):
            (folder / label / f"{i}.png").write_bytes(data)
    settings = teach_settings(tmp_path)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/catalogs", json={"name": "ghost", "model": "products"})
        assert r.status_code == 201, r.text
    service = settings.data_dir
    assert _teach(service, folder, "--backbone", "imagenet") == 2
    out = capsys.readouterr()
    err = [line for line in out.err.splitlines() if line.startswith("error:")]  # logs aside
    assert len(err) == 1, out.err
    assert "catalog 'ghost' is bound to model 'products', not --backbone 'imagenet'" in err[0]
    assert "delete that catalog" in err[0] and "choose another --name" in err[0]
    assert "added" not in out.out and "adding to existing" not in out.out
    assert not (service / "models" / "ghost").exists()


def test_a_blank_picture_in_a_folder_is_added_and_said(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """Round 42: the server's catalog adds warn of blank pictures (they match every query
    alike); the command line added them without a word."""
    from PIL import Image

    folder = tmp_path / "pictures"
    for label, code in (("bag", BAG), ("sneaker", SNEAKER)):
        (folder / label).mkdir(parents=True)
        for i, data in enumerate(fm_pngs[code][:4]):
            (folder / label / f"{i}.png").write_bytes(data)
    Image.new("L", (28, 28), 255).save(folder / "bag" / "white.png")
    assert _teach(tmp_path / "service", folder, "--backbone", "products") == 0
    out = capsys.readouterr().out
    assert "added 9 images" in out, out
    lines = [line for line in out.splitlines() if line.startswith("warning ")]
    assert len(lines) == 1 and lines[0].startswith("warning bag/white.png: blank picture"), out
