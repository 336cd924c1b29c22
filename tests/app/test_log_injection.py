"""A '%0A' in a request path must not forge a line in the text access log."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import make_settings


def test_encoded_newlines_in_a_path_stay_on_one_log_line(
    tiny_models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tiny_models_dir, tmp_path, access_log=True, log_format="text")
    with TestClient(create_app(settings)) as c:
        capsys.readouterr()
        forged = "2026-01-01 00:00:00,000 INFO app.access [-]: GET /admin 200"
        r = c.get("/v1/models/nope%0D%0A" + forged.replace(" ", "%20") + "%1B[2K")
        assert r.status_code == 404
    lines = capsys.readouterr().err.splitlines()
    assert lines, "the access log wrote nothing"
    assert not any(line.startswith("2026-01-01") for line in lines), lines
    hit = [line for line in lines if "nope" in line and "app.access" in line]
    assert hit and "\\x0d\\x0a" in hit[0] and "\x1b" not in hit[0], lines
