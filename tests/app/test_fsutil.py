"""app.fsutil's storage failure mapping and start-up write check, on real OS and SQLite errors."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.catalog.sqlite import schema_gone
from app.errors import ConfigurationError, InsufficientStorage, StorageUnavailable
from app.fsutil import SERVICE_FOLDERS, FolderIdentity, check_writable, storage_error
from app.main import create_app
from app.teach.core import taught_root
from tests.conftest import ROOT, make_settings
from tests.unprivileged import held_to_file_modes


def test_a_database_locked_by_another_process_is_a_503_with_retry(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(db, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as caught:
        other.execute("INSERT INTO t VALUES (1)")
    holder.execute("ROLLBACK")
    mapped = storage_error(caught.value)
    assert isinstance(mapped, StorageUnavailable)
    assert mapped.status == 503 and mapped.extra["retry_after_s"] > 0


def test_a_read_only_database_is_a_503(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    sqlite3.connect(db).execute("CREATE TABLE t (x)").connection.commit()
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as caught:
        ro.execute("INSERT INTO t VALUES (1)")
    mapped = storage_error(caught.value)
    assert isinstance(mapped, StorageUnavailable) and "read-only" in mapped.detail


def test_running_out_of_file_descriptors_is_a_503_to_retry(tmp_path: Path) -> None:
    """Fuzz round 14: with every fd held by idle clients, a request that had to open a file
    (here a real EMFILE under a lowered limit) answered 500."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    try:
        with pytest.raises(OSError) as caught:
            for _ in range(100):
                held.append((tmp_path / "f").open("w"))
    finally:
        for f in held:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    mapped = storage_error(caught.value)
    assert isinstance(mapped, StorageUnavailable) and mapped.status == 503
    assert "file descriptors" in mapped.detail and mapped.extra["retry_after_s"] == 1


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, InsufficientStorage),
        (errno.EDQUOT, InsufficientStorage),
        (errno.EROFS, StorageUnavailable),
        (errno.EACCES, StorageUnavailable),
    ],
)
def test_os_errors_of_the_disk_map_to_507_or_503(code: int, kind: type) -> None:
    mapped = storage_error(OSError(code, os.strerror(code)))
    assert isinstance(mapped, kind)
    assert mapped.status == (507 if kind is InsufficientStorage else 503)


def test_a_file_that_is_not_a_database_is_a_503(tmp_path: Path) -> None:
    db = tmp_path / "x.sqlite3"
    db.write_bytes(b"not a database, " * 4096)
    with pytest.raises(sqlite3.DatabaseError) as caught:
        sqlite3.connect(db).execute("SELECT * FROM catalogs")
    mapped = storage_error(caught.value)
    assert isinstance(mapped, StorageUnavailable) and "missing or damaged" in mapped.detail


def test_only_the_catalog_schemas_own_tables_missing_mean_a_replaced_database(
    tmp_path: Path,
) -> None:
    """An empty database where the catalog's was: a 503. A query naming a table the schema
    does not have is a bug, and stays a 500."""
    conn = sqlite3.connect(tmp_path / "x.sqlite3")
    for table, gone in (("catalogs", True), ("main.items", True), ("catlogs", False)):
        with pytest.raises(sqlite3.OperationalError) as caught:
            conn.execute(f"SELECT * FROM {table}")
        assert (schema_gone(caught.value) is not None) is gone, table
        assert storage_error(caught.value) is None


def test_other_errors_stay_unexpected() -> None:
    assert storage_error(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert storage_error(OSError(errno.EIO, "I/O error")) is None
    assert storage_error(ValueError("bug")) is None
    assert storage_error(sqlite3.OperationalError("no such table: t")) is None


def test_check_writable_creates_the_folder_and_leaves_nothing(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []


def test_check_writable_at_once_from_processes_with_the_same_pid(tmp_path: Path) -> None:
    """Two replicas on one data volume are both pid 1 in their containers and start together
    (scripts/ci-docker): their probes must not share a name, or one removes the other's and
    that replica refuses to start ("not writable: No such file or directory"). Threads of one
    process share a pid too."""
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def probe() -> None:
        start.wait()
        try:
            for _ in range(100):
                check_writable(tmp_path)
        except BaseException as exc:  # collected and reported below
            errors.append(exc)

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_folder_it_cannot_create(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ConfigurationError, match="IMGCLASS_DATA_DIR"):
        check_writable(tmp_path / "file" / "data")


def test_check_writable_refuses_a_read_only_folder(tmp_path: Path) -> None:
    """Skipped as root until round 29 (root writes through 0o555): now held to the modes."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    code = (
        "import sys\nfrom pathlib import Path\nfrom app.fsutil import check_writable\n"
        "from app.errors import ConfigurationError\n"
        "try:\n    check_writable(Path(sys.argv[1]))\nexcept ConfigurationError as e:\n"
        "    print(e)\n    sys.exit(3)\n"
    )
    try:
        r = subprocess.run(
            [*held_to_file_modes(), sys.executable, "-c", code, str(folder)],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )  # fmt: skip
    finally:
        folder.chmod(0o755)
    assert r.returncode == 3 and "not writable: Permission denied" in r.stdout, r.stderr
    assert list(folder.iterdir()) == []  # no probe file left behind


def test_the_data_folder_says_when_it_cannot_take_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path
) -> None:
    # /readyz said storage "ok" on a full disk and on a read-only mount (writes then answered
    # 507/503). It says so now, and stays ready: predictions still work.
    folder = FolderIdentity(tmp_path)
    assert folder.writes() == "ok"
    real = os.statvfs(tmp_path)
    real_statvfs = os.statvfs

    def statvfs(avail_blocks: int, flag: int) -> object:
        fields = list(real)
        fields[4], fields[8] = avail_blocks, flag  # f_bavail, f_flag

        def fake(path: object) -> os.statvfs_result:
            real_statvfs(path)  # type: ignore[arg-type]  # a path not there still raises
            return os.statvfs_result(fields)

        return fake

    monkeypatch.setattr(os, "statvfs", statvfs(1, real.f_flag))
    assert folder.writes() == "full"
    monkeypatch.setattr(os, "statvfs", statvfs(real.f_bavail, real.f_flag | os.ST_RDONLY))
    assert folder.writes() == "read-only"
    monkeypatch.setattr(os, "statvfs", statvfs(1, real.f_flag))
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path))) as c:
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["storage"] == "full", r.text


def test_a_file_where_a_service_folder_goes_is_never_taken_for_it(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    """Round 31: `models` as a file at start-up was adopted as the folder (/readyz 200, then a
    teach job ended in a 500 NotADirectoryError), a file made and removed meanwhile left /readyz
    503 until a restart, and `teach` as a file stopped start-up with a traceback."""
    data = tmp_path / "service-data"
    data.mkdir()
    (data / "models").write_text("not a folder")
    with pytest.raises(ConfigurationError, match=r"models is a file \(or a link to no folder"):
        check_writable(data)  # `python -m app` says so in one line before serving
    (data / "teach").symlink_to(data / "nowhere")  # a dangling link: the same
    with pytest.raises(ConfigurationError, match=r"teach is a file"):
        check_writable(data, ("teach",))
    assert not FolderIdentity(data / "teach").intact()
    (data / "teach").unlink()
    assert taught_root(make_settings(tiny_models_dir, tmp_path)).name in SERVICE_FOLDERS
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path))) as c:
        r = c.get("/readyz")
        assert (r.status_code, r.json()["status"]) == (503, "storage-unavailable"), r.text
        r = c.post("/v1/catalogs", json={"name": "c", "model": "tiny"})
        assert r.status_code == 201, r.text  # the catalogs folder is fine
        for i in range(6):
            png = io.BytesIO()
            Image.new("L", (28, 28), 40 * i).save(png, "PNG")
            r = c.post(f"/v1/catalogs/c/items?label={'ab'[i % 2]}", content=png.getvalue())
            assert r.status_code == 201, r.text
        r = c.post("/v1/catalogs/c/train", json={"model": "t"})  # was 202, then failed
        assert r.status_code == 503 and r.json()["type"] == "/problems/storage-unavailable", r.text
        (data / "models").unlink()
        assert c.get("/readyz").status_code == 200
        (data / "teach").rename(data / "teach-away")
        (data / "teach").write_text("not a folder either")
        assert c.get("/readyz").json()["status"] == "storage-unavailable"
        r = c.post("/v1/catalogs/c/train", json={"model": "t"})
        assert r.status_code == 503 and r.json()["type"] == "/problems/storage-unavailable", r.text
        (data / "teach").unlink()
        (data / "teach-away").rename(data / "teach")
        assert c.get("/readyz").status_code == 200


def test_a_folder_created_while_another_thread_looks_is_not_taken_for_replaced(
    tmp_path: Path,
) -> None:
    """CI, stop 57: a server starting on a data folder that did not exist yet failed start-up
    with "removed or replaced". One thread saw nothing there; another created the folder and
    recorded it first; the first then compared its "nothing" with that record."""
    folder = tmp_path / "teach"
    identity = FolderIdentity(folder)
    real_stat, raced = identity._stat, []

    def stat_then_race() -> tuple[int, int] | None:
        now = real_stat()
        if not raced:  # between this thread's stat and its check, another thread's whole call
            raced.append(True)
            folder.mkdir()
            assert identity.intact()
        return now

    identity._stat = stat_then_race  # type: ignore[method-assign]
    assert identity.intact()
    assert raced and identity.intact()
    folder.rename(tmp_path / "away")
    assert not identity.intact()  # once seen, a removed folder is still noticed
    folder.mkdir()
    assert not identity.intact()  # and so is another folder in its place


def test_readyz_storage_is_the_worst_of_the_service_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_models_dir: Path
) -> None:
    """Round 31: with `catalogs` on a volume of its own, full or read-only, /readyz said
    storage "ok" (only the data folder itself was read) while adds answered 507 or 503."""
    real = os.statvfs
    catalogs = str(tmp_path / "service-data" / "catalogs")
    flags: dict[str, int] = {}

    def statvfs(path: object) -> os.statvfs_result:
        got = real(path)  # type: ignore[arg-type]
        if str(path) != catalogs:
            return got
        fields = list(got)
        fields[4] = flags.get("avail", fields[4])
        fields[8] |= flags.get("flag", 0)
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path))) as c:
        assert c.post("/v1/catalogs", json={"name": "c", "model": "tiny"}).status_code == 201
        assert c.get("/readyz").json()["storage"] == "ok"
        flags["avail"] = 1
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json()["storage"] == "full", r.text
        flags["flag"] = os.ST_RDONLY
        assert c.get("/readyz").json()["storage"] == "read-only"


def test_an_item_read_from_a_replaced_catalogs_folder_is_a_503_not_a_404(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    """Round 32: with `catalogs` moved aside and an empty folder made in its place, an item
    still listed (the database stays open) answered 404 "missing from the data folder" for
    its image and thumbnail: the client's mistake, final. It is the folder's: 503, and the
    same request answers 200 once the folder is back."""
    data = tmp_path / "service-data"
    with TestClient(create_app(make_settings(tiny_models_dir, tmp_path))) as c:
        assert c.post("/v1/catalogs", json={"name": "c", "model": "tiny"}).status_code == 201
        png = io.BytesIO()
        Image.new("L", (28, 28), 40).save(png, "PNG")
        r = c.post("/v1/catalogs/c/items?label=a", content=png.getvalue())
        assert r.status_code == 201, r.text
        item = f"/v1/catalogs/c/items/{r.json()['items'][0]['id']}"
        (data / "catalogs").rename(data / "catalogs-away")
        (data / "catalogs").mkdir()
        for path in (f"{item}/image", f"{item}/thumbnail"):
            r = c.get(path)
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "/problems/storage-unavailable"
            assert "cannot be read" in r.json()["detail"]
        (data / "catalogs").rmdir()
        (data / "catalogs-away").rename(data / "catalogs")
        assert c.get(f"{item}/image").content == png.getvalue()
        assert c.get(f"{item}/thumbnail").status_code == 200


def test_the_service_folders_are_made_and_recorded_when_the_app_is_built(
    tmp_path: Path, tiny_models_dir: Path
) -> None:
    """CI, stops 57 and 58: start-up threads creating the folders while others looked made
    start-up fail with "removed or replaced". They are now made before they are watched, so
    every identity is recorded when the app is built, not by the first write."""
    app = create_app(make_settings(tiny_models_dir, tmp_path))
    data = app.state.settings.data_dir
    assert all((data / part).is_dir() for part in SERVICE_FOLDERS)
    assert all(identity._key is not None for identity in app.state.data_folders)
    (data / "teach").rename(tmp_path / "teach-away")
    (data / "teach").mkdir()  # another folder in its place: still noticed
    assert not app.state.data_folders[SERVICE_FOLDERS.index("teach") + 1].intact()


@contextlib.contextmanager
def _no_descriptors_free() -> Iterator[None]:
    """Every file descriptor of this process taken (a soft limit of 64), then given back."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held: list[int] = []
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_refresh_out_of_file_descriptors_keeps_the_served_bundles(
    tiny_models_dir: Path,
) -> None:
    """Round 42: a worker out of descriptors could not list the models folder, took it for
    empty and dropped every bundle ("removed from disk"); once descriptors were back, predict
    answered 503 "still loading" until they had loaded again. The refresh now fails (and is
    tried again) and the bundles stay served."""
    from app.registry import ModelRegistry

    reg = ModelRegistry(tiny_models_dir, providers="cpu", warmup_runs=0)
    reg.load_all()
    assert reg.get("tiny").model is not None
    with _no_descriptors_free(), pytest.raises(OSError) as caught:
        reg.refresh()
    assert caught.value.errno == errno.EMFILE
    assert reg.get("tiny").model is not None  # still served, nothing to reload


def _png(side: int) -> bytes:
    """A gray PNG made without Pillow (which would import its PNG plugin)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    rows = b"".join(b"\0" + bytes([9] * side) for _ in range(side))
    head = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(rows))
        + (chunk(b"IEND", b""))
    )


def test_a_valid_picture_opened_out_of_file_descriptors_is_a_503_not_a_422(
    tmp_path: Path,
) -> None:
    """Round 42: Pillow imports a format's plugin on its first picture; out of descriptors
    that import failed and a valid PNG was answered 422 "damaged header". A fresh interpreter,
    in which no plugin is imported yet."""
    picture = tmp_path / "gray.png"
    picture.write_bytes(_png(28))
    script = f"""
import os, resource
from app.errors import ServiceError
from app.image_limits import ImageLimits
from app.imaging import open_image
data = open({str(picture)!r}, "rb").read()
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
held = []
try:
    while True:
        held.append(os.open(os.devnull, os.O_RDONLY))
except OSError:
    pass
try:
    open_image(data, ImageLimits())
    answer = "opened"
except ServiceError as exc:
    answer = f"{{exc.status}} {{exc.detail}}"
for fd in held:
    os.close(fd)
print(answer)
print(open_image(data, ImageLimits())[0].size)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    said, size = done.stdout.splitlines()[-2:]
    assert said.startswith("503 The server has no file descriptors free"), said
    assert size == "(28, 28)"  # the same picture once descriptors are free


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE])
def test_a_decoder_out_of_file_descriptors_is_a_503_not_a_damaged_picture(code: int) -> None:
    """Round 42: past the header, a decoder that could not open what it needs (a module, a
    file) for want of a descriptor was answered 422 "damaged or truncated"."""
    from app import imaging

    answer = imaging._decode_failed("PNG", OSError(code, os.strerror(code)))
    assert isinstance(answer, StorageUnavailable) and answer.status == 503
    damaged = imaging._decode_failed("PNG", OSError(errno.EIO, "broken data stream"))
    assert damaged.status == 422
