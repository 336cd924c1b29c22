"""API keys from a file (app/api_keys.py): several keys at once, rotation without a restart,
a file that goes bad keeps the keys read before (never "no key"), and what start-up refuses;
through the real app's routes and the function the gRPC door shares."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import api_keys
from app.api.deps import key_matches
from app.api_keys import KeyFile, check_key_file, matches, parse_keys
from app.errors import ConfigurationError
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_settings

OLD, NEW = "old-key-0123456789abcdef", "new-key-fedcba9876543210"


@pytest.fixture(autouse=True)
def no_recheck_delay(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(api_keys, "RECHECK_S", 0.0)  # every use looks at the file
    monkeypatch.setattr(api_keys, "_files", {})
    yield


def write(path: Path, text: str) -> None:
    """Replace the file as a secret is remounted: a new file renamed over the old one."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_keys_one_per_line_with_comments_and_blank_lines() -> None:
    raw = f"\ufeff# rotated 2026-12-05\n\n  {OLD}  \r\n{NEW}\n".encode()
    assert parse_keys(raw, "f") == (OLD.encode(), NEW.encode())
    assert parse_keys("kl\u00fcssel\n".encode(), "f") == ("kl\u00fcssel".encode(),)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"", "holds no key"),
        (b"# only a comment\n\n", "holds no key"),
        (b"good\nbad\x00key\n", "line 2 holds a control character"),
        (b"\xff\xfe", "not UTF-8"),
        (b"k" * 5000, "line 1 is over 4096 bytes"),
        (b"k\n" * 101, "holds 101 keys"),
        (b"k" * (64 * 1024 + 1), "over 65536 bytes"),
    ],
)
def test_what_cannot_be_keys_is_refused_by_line(raw: bytes, said: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_keys(raw, "IMGCLASS_API_KEY_FILE=f")
    assert said in str(info.value)
    assert "bad" not in str(info.value)  # a key's text is never quoted


def test_a_line_is_split_only_at_newlines() -> None:
    """Round 27: str.splitlines() split 'secret<VT>x' into the keys 'secret' and 'x' (a
    one-character key that then opened writes); now the control character is refused."""
    for sep in ("\v", "\f", "\x1c", "\x1e"):
        with pytest.raises(ConfigurationError, match="line 1 holds a control character"):
            parse_keys(f"{OLD}{sep}x\n".encode(), "f")
    assert parse_keys(f"{OLD}\u2028x\n".encode(), "f") == (f"{OLD}\u2028x".encode(),)


def test_a_folder_in_the_files_place_leaks_no_descriptor(tmp_path: Path) -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(ConfigurationError, match="not a regular file"):
            check_key_file(str(tmp_path))
    assert len(os.listdir("/proc/self/fd")) <= before


def test_start_up_refuses_a_missing_fifo_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        check_key_file(str(tmp_path / "missing"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigurationError, match="not a regular file"):
        check_key_file(str(fifo))  # would block start-up if opened for a blocking read
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="holds no key"):
        check_key_file(str(tmp_path / "empty"))


def test_every_key_matches_and_nothing_else() -> None:
    keys = (OLD.encode(), NEW.encode())
    assert matches(OLD.encode(), keys) and matches(NEW.encode(), keys)
    assert not matches(b"", keys) and not matches(OLD.encode()[:-1], keys)
    assert not matches(OLD.encode(), ())


def test_rotation_and_a_file_gone_bad(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys"
    write(path, OLD + "\n")
    keys = KeyFile(str(path))
    assert keys.keys() == (OLD.encode(),)
    write(path, f"{OLD}\n{NEW}\n")  # step 1: both
    assert keys.keys() == (OLD.encode(), NEW.encode())
    write(path, NEW + "\n")  # step 2: the old one is gone
    assert keys.keys() == (NEW.encode(),)
    with caplog.at_level(logging.WARNING, logger="app.api_keys"):
        write(path, "# nothing here\n")  # a file with no key is never "no key"
        assert keys.keys() == (NEW.encode(),)
        path.unlink()  # mid-remount
        assert keys.keys() == (NEW.encode(),)
        assert keys.keys() == (NEW.encode(),)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # once per change, not once per request
    assert all("1 key(s) read before stay in force" in w for w in warnings)
    assert NEW not in " ".join(warnings)
    write(path, OLD + "\n")
    assert keys.keys() == (OLD.encode(),)


def test_a_file_unreadable_when_a_worker_first_looks_accepts_no_key(tmp_path: Path) -> None:
    keys = KeyFile(str(tmp_path / "not-yet"))
    assert keys.keys() == ()  # fails closed: a keyed server with no key accepted
    write(tmp_path / "not-yet", NEW)
    assert keys.keys() == (NEW.encode(),)


def test_settings_take_one_or_the_other(tmp_path: Path) -> None:
    assert Settings(api_key_file=tmp_path / "k").keyed
    assert Settings(api_key=" padded ").api_key.get_secret_value() == "padded"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not both"):
        Settings(api_key="a", api_key_file=tmp_path / "k")
    with pytest.raises(ValueError, match="is empty"):
        Settings(api_key="")
    # round 27: an empty file setting quietly meant no key, and reads were open to anyone
    with pytest.raises(ValueError, match="is empty"):
        Settings(api_key_file=" ")
    with pytest.raises(ValueError, match="IMGCLASS_API_KEY_FOR_READS is set without a key"):
        Settings(api_key_for_reads=True)


def test_routes_follow_the_file_without_a_restart(tiny_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "keys"
    write(path, OLD + "\n")
    settings = make_settings(tiny_models_dir, tmp_path, api_key_file=path, api_key_for_reads=True)
    with TestClient(create_app(settings)) as c:

        def status(key: str | None) -> int:
            headers = {} if key is None else {"x-api-key": key}
            return c.get("/v1/models", headers=headers).status_code

        access = c.get("/v1/access").json()
        assert access["key_required_for_writes"] and access["key_required_for_reads"]
        assert (status(OLD), status(NEW), status(None)) == (200, 401, 401)
        write(path, f"{OLD}\n{NEW}\n")
        assert (status(OLD), status(NEW)) == (200, 200)
        created = c.post(
            "/v1/catalogs",
            json={"name": "rotated", "model": "tiny"},
            headers={"authorization": f"Bearer {NEW}"},
        )
        assert created.status_code == 201, created.text
        write(path, NEW + "\n")
        assert (status(OLD), status(NEW)) == (401, 200)
        assert key_matches(NEW.encode(), settings) and not key_matches(OLD.encode(), settings)
        write(path, "")  # emptied by mistake: the keys read before stay
        assert (status(OLD), status(NEW), status(None)) == (401, 200, 401)


def test_a_key_ending_in_a_byte_latin1_calls_space_matches(
    tiny_models_dir: Path, tmp_path: Path
) -> None:
    """Round 27: header values arrive decoded as Latin-1, and str.strip() took \\xa0 and \\x85,
    the last UTF-8 byte of letters such as 'a-grave' and the Cyrillic 'kha': such keys never
    matched. Only spaces and tabs around a key are dropped now."""
    path = tmp_path / "keys"
    keys = ["cl\u00e9-\u00e0", "\u043a\u043b\u044e\u0447\u0445", "ends\u00c5"]
    write(path, "\n".join(keys) + "\n")
    settings = make_settings(tiny_models_dir, tmp_path, api_key_file=path, api_key_for_reads=True)
    with TestClient(create_app(settings)) as c:
        for key in keys:
            raw = key.encode()
            for headers in ({"x-api-key": raw}, {"authorization": b"Bearer\t " + raw + b" "}):
                r = c.get("/v1/models", headers=headers)
                assert r.status_code == 200, (key, headers)
