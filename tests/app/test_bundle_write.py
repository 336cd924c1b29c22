"""app/bundle_write.py: bundles appear whole or not at all, replacing an older version."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from app import bundle_write
from app.bundle import BundleError, load_bundle, write_bundle

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "models" / "digits"  # a committed bundle: real bytes, real metadata


@pytest.fixture(scope="module")
def source():  # type: ignore[no-untyped-def]
    b = load_bundle(SOURCE)
    return b, b.model_path.read_bytes()


def _write(source, directory: Path, version: str = "1", card: str | None = "# card\n"):  # type: ignore[no-untyped-def]
    b, data = source
    meta = b.metadata.model_copy(update={"version": version})
    return bundle_write.write_bundle(
        directory, model_bytes=data, metadata=meta, labels=b.labels, model_card=card
    )


def test_writes_a_verified_bundle_with_hash_and_readable_files(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = _write(source, tmp_path / "copy")
    assert out.name == "copy" and out.metadata.name == "copy"  # name follows the folder
    assert out.metadata.artifact.sha256 == source[0].metadata.artifact.sha256
    assert out.metadata.artifact.bytes == len(source[1])
    assert (tmp_path / "copy" / "README.md").read_text() == "# card\n"
    for f in (tmp_path / "copy").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging left behind


def test_replaces_an_older_version_completely(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _write(source, tmp_path / "m", version="1", card="# old\n")
    (tmp_path / "m" / "stale.txt").write_text("from v1")
    out = _write(source, tmp_path / "m", version="2", card=None)
    assert out.metadata.version == "2"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "labels.txt",
        "metadata.json",
        "model.onnx",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_folder_that_is_not_a_bundle_is_never_replaced(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Round 28: `--out-dir` onto a folder that held other files replaced it (they were gone);
    an empty folder is written into."""
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "important.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not a bundle folder"):
        _write(source, tmp_path / "notes")
    assert (tmp_path / "notes" / "important.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert _write(source, tmp_path / "empty").name == "empty"


def test_a_failed_write_leaves_the_old_version_and_no_debris(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _write(source, tmp_path / "m", version="1")
    b, data = source
    with pytest.raises(BundleError, match="labels"):
        bundle_write.write_bundle(
            tmp_path / "m", model_bytes=data, metadata=b.metadata, labels=b.labels[:3]
        )
    with pytest.raises(ValueError):  # "Bad Name" is not a valid bundle name
        _write(source, tmp_path / "Bad Name")
    assert load_bundle(tmp_path / "m").metadata.version == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_concurrent_reader_never_sees_half_a_bundle(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _write(source, tmp_path / "m", version="0")
    errors: list[Exception] = []
    seen: set[str] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(load_bundle(tmp_path / "m").metadata.version)
            except BundleError as exc:  # a mixed or partial folder
                if (tmp_path / "m").exists():
                    errors.append(exc)
            except FileNotFoundError:
                pass  # only without RENAME_EXCHANGE: absent for an instant, never partial

    t = threading.Thread(target=reader)
    t.start()
    try:
        for v in range(1, 6):
            _write(source, tmp_path / "m", version=str(v))
    finally:
        stop.set()
        t.join()
    assert errors == []
    assert load_bundle(tmp_path / "m").metadata.version == "5"
    assert seen  # the reader did read


def test_staging_is_invisible_to_the_registry_scan(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The registry scans models/*/metadata.json; staging lives one level deeper.
    staged = tmp_path / bundle_write.STAGING_DIR / "m-abc"
    staged.mkdir(parents=True)
    (staged / "metadata.json").write_text("{}")
    assert list(tmp_path.glob("*/metadata.json")) == []


def test_atomic_write_and_the_app_bundle_entry_point(source, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "f.bin"
    bundle_write.atomic_write(target, b"one")
    bundle_write.atomic_write(target, b"two")
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]
    b, data = source
    out = write_bundle(
        tmp_path / "via-bundle", model_bytes=data, metadata=b.metadata, labels=b.labels
    )
    assert out.metadata.artifact.sha256 == b.metadata.artifact.sha256
