"""From a folder (the CLI) and from a zip upload: one code path; bad files skipped and listed;
zip bombs and oversized uploads refused."""

from __future__ import annotations

import errno
import io
import sqlite3
import subprocess
import sys
import time
import zipfile
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.catalog import blobs
from app.catalog.types import StoreUnavailable
from app.errors import InsufficientStorage, PayloadTooLarge, ServiceError
from app.main import create_app
from app.teach import cli as teach_cli
from app.teach.folder import BatchLimits, LabelledImage, ingest
from app.teach.ingest_report import IngestReport
from tests.app.teach.conftest import BAG, SNEAKER, teach_settings, wait_job
from tests.conftest import ROOT
from tests.images import zip_bytes

pytestmark = pytest.mark.slow  # zips of real images (round 29: the fast subset in 2 min)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    return zip_bytes(entries, method)


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
    assert set(reasons) == {"broken.png", "notes.txt", "readme.md", "bomb.png", "._x"}
    assert "zip bomb" in reasons["bomb.png"] and "class folder" in reasons["readme.md"]
    assert "hidden or system file" in reasons["._x"]
    r = c.post("/v1/catalogs/z/train", json={"model": "zipped"})
    assert wait_job(c, r.headers["location"])["status"] == "succeeded"


def test_zip_refusals(teach_client: TestClient) -> None:
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "zz", "model": "products"}).status_code == 201
    r = c.post("/v1/catalogs/zz/items:zip", content=b"PK\x03\x04 not really a zip")
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    r = c.post("/v1/catalogs/missing/items:zip", content=_zip({"a/b.png": b"x"}))
    assert r.status_code == 404
    # An empty zip (only its end record) or one of folders only: 422 saying what is expected.
    for empty in (_zip({}), _zip({"cat/": b""})):
        r = c.post("/v1/catalogs/zz/items:zip", content=empty)
        assert r.status_code == 422 and "holds no files" in r.json()["detail"], r.text


def _post_zip(c: TestClient, catalog: str, data: bytes) -> dict:  # type: ignore[type-arg]
    r = c.post(
        f"/v1/catalogs/{catalog}/items:zip",
        content=data,
        headers={"content-type": "application/zip"},
    )
    assert r.headers["content-type"].startswith("application/"), r.text
    return {"status": r.status_code, **r.json()}


def test_unsafe_and_hidden_paths_are_listed_never_made_classes(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """An absolute zip path made a class named "/" (all entries under "/cat/"); hidden files
    vanished without a word. Both are now in `skipped` with the reason."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "p", "model": "products"}).status_code == 201
    bag = fm_pngs[BAG]
    only_absolute = _zip({"/cat/1.png": bag[0], "/cat/2.png": bag[1]})
    body = _post_zip(c, "p", only_absolute)
    assert body["status"] == 200 and body["added"] == {}, body
    assert [s["reason"].split(";")[0] for s in body["skipped"]] == ["an absolute path"] * 2
    entries = {f"bag/{i}.png": d for i, d in enumerate(bag[:3])}
    entries |= {
        "../up/1.png": bag[3],
        "bag/../../x.png": bag[4],
        "C:/win/1.png": bag[5],
        "bag/.hidden.png": bag[6],
        ".git/config": b"[core]",
    }
    body = _post_zip(c, "p", _zip(entries))
    assert body["status"] == 200 and body["added"] == {"bag": 3}, body
    reasons = {s["name"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == set(entries) - {"bag/0.png", "bag/1.png", "bag/2.png"}
    assert "'..'" in reasons["../up/1.png"] and "'..'" in reasons["bag/../../x.png"]
    assert reasons["C:/win/1.png"].startswith("an absolute path")
    assert "hidden" in reasons["bag/.hidden.png"] and "hidden" in reasons[".git/config"]
    labels = {i["label"] for i in c.get("/v1/catalogs/p/items").json()["items"]}
    assert labels == {"bag"}


def test_backslashes_separate_folders_as_windows_tools_write_them(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Round 44: a zip from PowerShell 5's Compress-Archive (`bag\\1.png`) was refused as
    "none of the zip's files is inside a class folder"."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "w", "model": "products"}).status_code == 201
    entries = {f"shop\\bag\\{i}.png": d for i, d in enumerate(fm_pngs[BAG][:2])}
    entries |= {f"shop\\sneaker\\{i}.png": d for i, d in enumerate(fm_pngs[SNEAKER][:2])}
    entries |= {"..\\up\\1.png": fm_pngs[BAG][3], "shop\\bag\\": b""}
    body = _post_zip(c, "w", _zip(entries))
    assert body["status"] == 200 and body["added"] == {"bag": 2, "sneaker": 2}, body
    assert [s["name"] for s in body["skipped"]] == ["..\\up\\1.png"], body


def test_round_16_zip_names_that_crashed_and_a_report_that_had_no_bound(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Fuzz round 16: an entry named '' (or starting with NUL) or '.', and a file beside two
    class folders under one root, answered 500 (IndexError); 190 MB of skipped long names made
    a 1.1 GB answer. Names without a file name are skipped; the report lists 100, counts all."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "r16", "model": "products"}).status_code == 201
    bag = fm_pngs[BAG]
    placeholder = "@NUL@.png"  # zipfile will not write a name starting with NUL: patched in
    with_nul = _zip({placeholder: b"abc", "bag/1.png": bag[1]}, zipfile.ZIP_STORED)
    with_nul = with_nul.replace(placeholder.encode(), b"\x00" + placeholder.encode()[1:])
    assert zipfile.ZipFile(io.BytesIO(with_nul)).namelist()[0] == ""  # as the server reads it
    for data in [with_nul] + [_zip({odd: bag[0], "bag/1.png": bag[1]}) for odd in (".", "./.")]:
        body = _post_zip(c, "r16", data)
        assert body["status"] == 200 and body["added"] == {"bag": 1}, body
        assert "without a file name" in body["skipped"][0]["reason"]
    beside = _zip({"a": b"x", "a/x/1.png": bag[2], "a/y/2.png": bag[3]})
    body = _post_zip(c, "r16", beside)
    assert body["status"] == 200 and body["added"] == {"a": 2}, body
    many = _zip({f"{i}-{'n' * 1000}.txt": b"" for i in range(300)} | {"bag/4.png": bag[4]})
    body = _post_zip(c, "r16", many)
    assert body["status"] == 200 and body["added"] == {"bag": 1}, body
    assert body["skipped_count"] == 300 and len(body["skipped"]) == 100
    assert max(len(s["name"]) for s in body["skipped"]) == 256


def _damage_entry(data: bytes, name: str, damage: str) -> bytes:
    """`data` (a zip) with entry `name` made unreadable: "corrupt", its deflate stream starts
    with an invalid block type; "truncated", the central directory says its compressed data is
    8 bytes long, so the stream ends early."""
    d = bytearray(data)
    raw = name.encode()
    if damage == "corrupt":
        local = d.find(b"PK\x03\x04")  # walk the local headers to `name`
        while d[local + 30 : local + 30 + len(raw)] != raw:
            local = d.find(b"PK\x03\x04", local + 4)
        n = int.from_bytes(d[local + 26 : local + 28], "little")
        m = int.from_bytes(d[local + 28 : local + 30], "little")
        d[local + 30 + n + m] = 0xFF  # BTYPE=11: no such deflate block type
    else:
        central = d.find(b"PK\x01\x02")
        while d[central + 46 : central + 46 + len(raw)] != raw:
            central = d.find(b"PK\x01\x02", central + 4)
        d[central + 20 : central + 24] = (8).to_bytes(4, "little")
    return bytes(d)


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_entry_is_skipped_with_the_reason(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
    damage: str,
) -> None:
    """A corrupt deflate stream raised zlib.error out of the zip reader: a 500 with the
    entries before it already added. Now the entry is skipped and named, the rest added."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "d", "model": "products"}).status_code == 201
    bag = fm_pngs[BAG]
    data = _zip(
        {"bag/0.png": bag[0], "bag/1.png": bag[1], "bag/bad.png": bag[2], "bag/3.png": bag[3]}
    )
    body = _post_zip(c, "d", _damage_entry(data, "bag/bad.png", damage))
    assert body["status"] == 200 and body["added"] == {"bag": 3}, body
    (skipped,) = body["skipped"]
    assert skipped["name"] == "bag/bad.png" and "unreadable in the zip" in skipped["reason"]


def test_an_error_after_committed_batches_says_what_stays(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Images are added in committed batches of 32: an error raised later (the zip reader's
    mid-stream size check) leaves the first batch in the catalog, and the error says so."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "half", "model": "products"}).status_code == 201
    service = c.app.state.catalogs  # type: ignore[attr-defined]

    def images():  # type: ignore[no-untyped-def]
        for i in range(40):
            yield LabelledImage("bag", f"bag/{i}.png", fm_pngs[BAG][i])
        raise PayloadTooLarge("The zip unpacks to more than its headers declare.")

    with pytest.raises(PayloadTooLarge) as info:
        ingest(service, "half", images(), IngestReport())
    assert info.value.extra["added"] == {"bag": 32}
    assert "32 image(s) read before this were added" in info.value.detail
    assert c.get("/v1/catalogs/half").json()["item_count"] == 32


def test_a_disk_that_fills_mid_upload_says_what_stays(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk filled after the first committed batch: the 507 said "nothing was stored"
    while 32 items were, and a client retrying as told stored them twice. Now it says what
    stays and how to resend without copies; the images after it are not tried one by one."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "full", "model": "products"}).status_code == 201
    service = c.app.state.catalogs  # type: ignore[attr-defined]
    write = blobs.atomic_write
    written = [0]

    def disk(path: Path, data: bytes, **kw: object) -> None:  # full after 32 images
        written[0] += 1
        if written[0] > 2 * 32:  # an image and its thumbnail each
            raise OSError(errno.ENOSPC, "No space left on device")
        write(path, data, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(blobs, "atomic_write", disk)
    images = (LabelledImage("bag", f"bag/{i}.png", fm_pngs[BAG][i]) for i in range(60))
    with pytest.raises(InsufficientStorage) as info:
        ingest(service, "full", images, IngestReport())
    assert info.value.extra["added"] == {"bag": 32}
    detail = info.value.detail
    assert "disk is full" in detail and "nothing was stored" not in detail
    assert "32 image(s) read before this were added" in detail and "skip_duplicates" in detail
    assert written[0] == 2 * 32 + 1  # the second batch failed once, not image by image
    assert c.get("/v1/catalogs/full").json()["item_count"] == 32


def test_a_vector_store_failing_mid_upload_ends_it(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Milvus failing after the first batch: the zip answered 200 with every later entry
    "skipped" for the store's failure, each tried one by one. Now the upload ends at once, as
    on a full disk, saying what stays."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "vs", "model": "products"}).status_code == 201
    service = c.app.state.catalogs  # type: ignore[attr-defined]
    add = service.add_checked
    calls = [0]

    def failing(*args: object, **kw: object) -> object:
        calls[0] += 1
        if calls[0] > 1:
            raise StoreUnavailable("The Milvus vector store failed; the server log says why.")
        return add(*args, **kw)

    monkeypatch.setattr(service, "add_checked", failing)
    images = (LabelledImage("bag", f"bag/{i}.png", fm_pngs[BAG][i]) for i in range(60))
    with pytest.raises(StoreUnavailable) as info:
        ingest(service, "vs", images, IngestReport())
    assert info.value.extra["added"] == {"bag": 32} and calls[0] == 2
    assert "skip_duplicates" in info.value.detail


def test_added_counts_use_the_labels_as_stored(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """A folder 'bag ' is stored as label 'bag' and reported so (it was reported as 'bag ');
    a folder of whitespace is refused under its own name, not as ''."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "t", "model": "products"}).status_code == 201
    bag = fm_pngs[BAG]
    body = _post_zip(c, "t", _zip({"bag /0.png": bag[0], "bag/1.png": bag[1], "\t/2.png": bag[2]}))
    assert body["status"] == 200 and body["added"] == {"bag": 2}, body
    (skipped,) = body["skipped"]
    assert skipped["reason"].startswith("Invalid label '\\t'"), skipped
    labels = [i["label"] for i in c.get("/v1/catalogs/t/items").json()["items"]]
    assert labels == ["bag", "bag"]


def _big_png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 90).save(buf, format="PNG")  # a few KB: decoding is the cost
    return buf.getvalue()


def test_zip_work_is_bounded_before_anything_is_decoded(tmp_path: Path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    settings = teach_settings(tmp_path, teach_max_items=4, teach_zip_max_pixels=50_000_000)
    with TestClient(create_app(settings)) as c:
        assert c.post("/v1/catalogs", json={"name": "b", "model": "products"}).status_code == 201
        big = _big_png(4000, 5000)  # 20 MP each, 3 of them: 60 MP declared
        body = _post_zip(c, "b", _zip({f"a/{i}.png": big for i in range(3)}))
        assert body["status"] == 413, body
        assert "declare 60,000,000 pixels in all; at most 50,000,000" in body["detail"], body
        assert body["limit_pixels"] == 50_000_000
        five = {f"a/{i}.png": d for i, d in enumerate(fm_pngs[BAG][:5])}
        body = _post_zip(c, "b", _zip(five))
        assert body["status"] == 413 and "at most 4 (IMGCLASS_TEACH_MAX_ITEMS)" in body["detail"]
        # Counted from the end-of-central-directory record, before zipfile reads the entries.
        body = _post_zip(c, "b", _zip({f"x/{i}": b"" for i in range(17)}))
        assert body["status"] == 413 and "17 entries; at most 16" in body["detail"], body
        assert c.get("/v1/catalogs/b/items").json()["items"] == []
        ok = _post_zip(c, "b", _zip({f"a/{i}.png": d for i, d in enumerate(fm_pngs[BAG][:4])}))
        assert ok["status"] == 200 and ok["added"] == {"a": 4}, ok


def test_cli_refuses_a_shipped_name_before_adding_images(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI serves only its backbone, yet a name of any shipped bundle ('digits' here) is
    refused: such a taught model would never be served (README's teach walk-through found it)."""
    folder = tmp_path / "pictures"
    for label, cls in (("sneaker", SNEAKER), ("bag", BAG)):
        (folder / label).mkdir(parents=True)
        for i, data in enumerate(fm_pngs[cls][:2]):
            (folder / label / f"{i}.png").write_bytes(data)
    service = tmp_path / "service"
    argv = ["--data-dir", str(folder), "--name", "digits", "--service-data", str(service)]
    code = teach_cli.main([*argv, "--models-dir", str(ROOT / "models")])
    out = capsys.readouterr()
    assert code == 2 and "'digits' is a shipped model" in out.err
    assert "added" not in out.out and not (service / "models" / "digits").exists()
    db = service / "catalogs" / "catalogs.sqlite3"
    if db.exists():
        with closing(sqlite3.connect(db)) as con:
            rows = con.execute("SELECT count(*) FROM catalogs WHERE name = 'digits'").fetchone()
        assert rows == (0,)


def test_cli_names_the_bundles_when_the_backbone_is_not_one(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown --backbone is one line that lists the bundles there (it said 'Available:
    none' after logging an unrelated refusal), before anything is added."""
    folder = tmp_path / "pictures"
    (folder / "bag").mkdir(parents=True)
    (folder / "bag" / "0.png").write_bytes(fm_pngs[BAG][0])
    service = tmp_path / "service"
    argv = ["--data-dir", str(folder), "--name", "shoes", "--service-data", str(service)]
    code = teach_cli.main([*argv, "--models-dir", str(ROOT / "models"), "--backbone", "nosuch"])
    out = capsys.readouterr()
    assert code == 2 and "--backbone 'nosuch' is not a servable bundle" in out.err
    assert "products" in out.err and "imagenet" in out.err and "added" not in out.out


def test_an_empty_class_folder_is_listed_not_dropped_in_silence(tmp_path: Path) -> None:
    from app.teach.folder import folder_images
    from app.teach.ingest_report import IngestReport

    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "a.png").write_bytes(b"not read here")
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / ".DS_Store").write_bytes(b"hidden, so no image")
    report = IngestReport()
    labels = [i.label for i in folder_images(tmp_path, report, 1 << 20)]
    assert labels == ["cats"]
    assert report.skipped == [
        {"name": "dogs/", "reason": "an empty class folder: no images, no class"}
    ]


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
    # Teaching again from the same folder, grown by two pictures: only those two are added.
    for i, data in enumerate(fm_pngs[SNEAKER][8:10]):
        (folder / "sneaker" / f"new{i}.png").write_bytes(data)
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "added 2 images" in again.stdout, again.stdout
    assert "left out 16 copies" in again.stdout, again.stdout
    assert "taught cli-shoes v2" in again.stdout and "n=18" in again.stdout
    # The CLI must not need TensorFlow.
    check = [sys.executable, "-c", "import sys, app.teach.cli; print('tensorflow' in sys.modules)"]
    assert subprocess.run(check, cwd=ROOT, capture_output=True, text=True).stdout.strip() == "False"


def test_batches_are_bounded_by_bytes_and_declared_pixels(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch closes before it would pass any of its limits: counted by images alone, 32
    zip entries of 20 MB each were held (640 MB) per upload, and a batch over the request
    pixel budget was refused whole and decoded again one image at a time."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "bb", "model": "products"}).status_code == 201
    service = c.app.state.catalogs  # type: ignore[attr-defined]
    sizes: list[int] = []
    add = service.add_checked

    def counting_add(name, images, specs, **kw):  # type: ignore[no-untyped-def]
        sizes.append(len(images))
        return add(name, images, specs, **kw)

    monkeypatch.setattr(service, "add_checked", counting_add)
    bag = fm_pngs[BAG][:7]
    by_bytes = BatchLimits(max_bytes=sum(len(b) for b in bag[:3]))
    ingest(service, "bb", (LabelledImage("bag", f"{i}", d) for i, d in enumerate(bag)),
           IngestReport(), by_bytes)  # fmt: skip
    assert sum(sizes) == 7 and max(sizes) <= 3 and len(sizes) >= 3, sizes
    sizes.clear()
    by_pixels = BatchLimits(max_pixels=2 * 784)
    report = ingest(service, "bb", (LabelledImage("bag", f"{i}", d, 784) for i, d in enumerate(bag)),
                    IngestReport(), by_pixels)  # fmt: skip
    assert sizes == [2, 2, 2, 1] and report.added == {"bag": 7}
    sizes.clear()
    ingest(service, "bb", (LabelledImage("bag", f"{i}", d) for i, d in enumerate(bag)),
           IngestReport(), BatchLimits(max_images=4))  # fmt: skip
    assert sizes == [4, 3]
    # One image over every limit is still tried, alone (and refused or added on its own).
    assert not BatchLimits(max_bytes=1).full([], LabelledImage("a", "a", b"xx", 10**9))
    assert c.get("/v1/catalogs/bb").json()["item_count"] == 21


def test_zips_of_one_process_unpack_in_turns() -> None:
    """At most `unpack_limit` zip uploads unpack at once; the others wait, holding their slot."""
    import asyncio

    from app.api.embed_gate import EmbedGate

    gate = EmbedGate(limit=10, unpack_limit=2)
    running, peak = 0, 0

    async def one() -> None:
        nonlocal running, peak
        async with gate.slot(), gate.unpack_turn():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(6)))

    asyncio.run(main())
    assert peak == 2 and gate.active == 0
    assert EmbedGate(limit=3, unpack_limit=0).unpack_limit == 1


def test_round_17_zip_offsets_and_a_lying_entry_count(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Round 17: a central-directory offset past the data ('negative seek value') answered
    500; an end record claiming 1 entry over many more let zipfile parse them all first."""
    import struct
    import zlib

    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "r17", "model": "products"}).status_code == 201
    good = _zip({"bag/1.png": fm_pngs[BAG][0], "sneaker/2.png": fm_pngs[SNEAKER][0]})
    bad_offset = good[:-6] + struct.pack("<L", 10**9) + good[-2:]
    body = _post_zip(c, "r17", bad_offset)
    assert body["status"] in (200, 422), body  # read what can be read, or refused: never 500
    too_new = bytearray(good)  # round 18: 'version needed to extract' 25.5 answered 500
    struct.pack_into("<H", too_new, too_new.find(b"PK\x01\x02") + 6, 0xFF)
    body = _post_zip(c, "r17", bytes(too_new))
    assert body["status"] == 422 and "zip file version" in body["detail"], body
    name = b"a/b"
    crc = zlib.crc32(b"")
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, 0, 0, len(name), 0)
    entry = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, 0, 0, len(name), 0, 0, 0, 0, 0, 0
    )
    n = 90_000  # over 4 x the test settings' item limit
    cd = (entry + name) * n
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(local + name), 0)
    body = _post_zip(c, "r17", local + name + cd + end)
    assert body["status"] == 413 and f"{n:,} entries" in body["detail"], body


@pytest.mark.slow  # decodes 40 MP pictures: a few seconds of CPU
def test_round_19_a_zip_stops_unpacking_when_its_client_leaves(
    tmp_path: Path,
) -> None:
    """A 20 KB zip of solid 40 MP pictures takes about 0.5 s of CPU per picture, and the
    server went on decoding all of them after the client had given up (60 in 28 s). Now the
    batch in hand is finished and the rest is not read."""
    import httpx

    from tests.live_server import live_server

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(30):
            png = io.BytesIO()
            Image.new("RGB", (7000, 5700), (i * 3, 90, 40)).save(png, "PNG", compress_level=1)
            zf.writestr(f"{'ab'[i % 2]}/{i}.png", png.getvalue())
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["products"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path, env, entry="app", ready_path="/readyz") as s:
        assert httpx.post(f"{s.base}/v1/catalogs", json={"name": "z", "model": "products"})
        with pytest.raises(httpx.TimeoutException):
            httpx.post(
                f"{s.base}/v1/catalogs/z/items:zip",
                content=buf.getvalue(),
                headers={"content-type": "application/zip"},
                timeout=2,
            )
        time.sleep(8)  # the batch in hand (at most 32 pictures, about 0.5 s each) ends
        first = httpx.get(f"{s.base}/v1/catalogs/z").json()["item_count"]
        time.sleep(3)
        assert httpx.get(f"{s.base}/v1/catalogs/z").json()["item_count"] == first < 30
        assert "Traceback" not in s.log_text()


def test_folders_in_folders_are_unwrapped_to_their_classes(
    teach_client: TestClient,
    tmp_path: Path,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Round 25: a zip of `export/shop/{sneaker,bag}/...` was added as one class, `export`, and
    the CLI made one class `a` of `a/b/{cat,dog}`: pictures of different classes under one
    label. Every wrapper folder that holds only one folder is looked through, in zips and
    folders alike; a single class folder stays a class."""
    from app.teach.folder import folder_images
    from app.teach.ingest_report import IngestReport

    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "w", "model": "products"}).status_code == 201
    entries = {f"export/shop/sneaker/{i}.png": d for i, d in enumerate(fm_pngs[SNEAKER][:3])}
    entries |= {f"export/shop/bag/{i}.png": d for i, d in enumerate(fm_pngs[BAG][:3])}
    r = c.post(
        "/v1/catalogs/w/items:zip",
        content=_zip(entries),
        headers={"content-type": "application/zip"},
    )
    assert r.status_code == 200 and r.json()["added"] == {"bag": 3, "sneaker": 3}, r.text

    for label, images in (("sneaker", fm_pngs[SNEAKER][:2]), ("bag", fm_pngs[BAG][:2])):
        (tmp_path / "pics" / "a" / "b" / label).mkdir(parents=True)
        for i, data in enumerate(images):
            (tmp_path / "pics" / "a" / "b" / label / f"{i}.png").write_bytes(data)
    labels = [i.label for i in folder_images(tmp_path / "pics", IngestReport(), 1 << 20)]
    assert sorted(labels) == ["bag", "bag", "sneaker", "sneaker"]
    single = tmp_path / "one"
    (single / "cat").mkdir(parents=True)
    (single / "cat" / "0.png").write_bytes(fm_pngs[BAG][0])
    assert [i.label for i in folder_images(single, IngestReport(), 1 << 20)] == ["cat"]


def test_a_catalog_deleted_during_an_upload_is_a_404_not_a_report_of_items_gone(
    teach_client: TestClient,
    fm_pngs,  # type: ignore[no-untyped-def]
) -> None:
    """Round 28: a zip whose catalog was deleted part-way answered 200, counting as `added`
    the items deleted with it and trying every remaining image one at a time (each skipped as
    "No catalog")."""
    c = teach_client
    assert c.post("/v1/catalogs", json={"name": "gone", "model": "products"}).status_code == 201
    service = c.app.state.catalogs  # type: ignore[attr-defined]
    tried: list[str] = []

    def images():  # type: ignore[no-untyped-def]
        for i, data in enumerate(fm_pngs[BAG][:8]):
            tried.append(str(i))
            if i == 4:  # two batches of 2 are in: the catalog goes
                assert c.delete("/v1/catalogs/gone").status_code == 204
            yield LabelledImage("bag", f"{i}.png", data)

    with pytest.raises(ServiceError) as info:
        ingest(service, "gone", images(), IngestReport(), BatchLimits(max_images=2))
    assert info.value.status == 404 and "deleted while this zip" in info.value.detail
    assert "added" not in info.value.extra
    assert len(tried) <= 6  # stopped at the first batch that found no catalog
