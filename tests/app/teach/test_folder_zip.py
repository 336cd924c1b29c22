"""From a folder (the CLI) and from a zip upload: one code path; bad files skipped and listed;
zip bombs and oversized uploads refused."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.app.teach.conftest import BAG, SNEAKER, wait_job
from tests.conftest import ROOT


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_upload_then_teach(teach_client: TestClient, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "z", "model": "products"}).status_code == 201
    entries = {f"shop/sneaker/{i}.png": d for i, d in enumerate(fm_pngs[SNEAKER][:6])}
    entries |= {f"shop/bag/{i}.png": d for i, d in enumerate(fm_pngs[BAG][:6])}
    entries["shop/bag/broken.png"] = fm_pngs[BAG][7][:60]  # truncated PNG
    entries["shop/bag/notes.txt"] = b"not an image"
    entries["shop/readme.md"] = b"top-level file"
    entries["shop/__MACOSX/._x"] = b"resource fork"
    entries["shop/bag/bomb.png"] = b"\0" * 5_000_000  # deflates ~1000:1
    r = c.post(
        "/v1/catalogs/z/items:zip",
        content=_zip(entries),
        headers={"content-type": "application/zip"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["added"] == {"bag": 6, "sneaker": 6}
    reasons = {s["name"].split("/")[-1]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {"broken.png", "notes.txt", "readme.md", "bomb.png"}
    assert "zip bomb" in reasons["bomb.png"] and "class folder" in reasons["readme.md"]
    r = c.post("/v1/catalogs/z/train", json={"model": "zipped"})
    assert wait_job(c, r.headers["location"])["status"] == "succeeded"


def test_zip_refusals(teach_client: TestClient) -> None:
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "zz", "model": "products"}).status_code == 201
    r = c.post("/v1/catalogs/zz/items:zip", content=b"PK\x03\x04 not really a zip")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = c.post("/v1/catalogs/missing/items:zip", content=_zip({"a/b.png": b"x"}))
    assert r.status_code == 404


@pytest.mark.slow
def test_cli_teaches_from_a_folder(tmp_path: Path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "pictures"
    for label, cls in (("sneaker", SNEAKER), ("bag", BAG)):
        (folder / label).mkdir(parents=True)
        for i, data in enumerate(fm_pngs[cls][:8]):
            (folder / label / f"{i}.png").write_bytes(data)
    (folder / "bag" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    service = tmp_path / "service"
    cmd = [
        sys.executable,
        "-m",
        "training",
        "teach",
        "--data-dir",
        str(folder),
        "--name",
        "cli-shoes",
        "--service-data",
        str(service),
        "--models-dir",
        str(ROOT / "models"),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "added 16 images" in out.stdout and "skipped bag/broken.jpg" in out.stdout
    assert "taught cli-shoes v1" in out.stdout and "n=16" in out.stdout
    assert (service / "models" / "cli-shoes" / "1" / "metadata.json").is_file()
    # The CLI must not need TensorFlow.
    check = [sys.executable, "-c", "import sys, app.teach.cli; print('tensorflow' in sys.modules)"]
    assert subprocess.run(check, cwd=ROOT, capture_output=True, text=True).stdout.strip() == "False"
