"""With IMGCLASS_LOG_FORMAT=json every line the server writes is one JSON object: uvicorn's own
lines (start-up, shutdown, protocol warnings) too, not only the app's, so a JSON log pipeline
never meets a line it cannot parse. Real `python -m app`, one worker and two."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT
from tests.live_server import live_server

pytestmark = pytest.mark.slow  # real servers of their own: out of the fast subset (round 28)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_log_line_is_json(tmp_path: Path, workers: str) -> None:
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_WORKERS": workers,
        "IMGCLASS_LOG_FORMAT": "json",
        "IMGCLASS_LOG_LEVEL": "INFO",
    }
    with live_server(tmp_path, env, entry="app") as server:
        r = httpx.get(server.base + "/v1/models", headers={"X-Request-ID": "json-log-1"})
        assert r.status_code == 200, r.text
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    not_json = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, not_json
    records = [json.loads(line) for line in lines]
    assert any(r["logger"].startswith("uvicorn") for r in records), records
    assert any(r.get("request_id") == "json-log-1" for r in records), records
    # RFC 3339 UTC timestamps with milliseconds (they were local time to the second).
    for r in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["ts"]), r["ts"]
    # One access line per request (app.access, with its fields), not uvicorn's as well.
    access = [r for r in records if r.get("request_id") == "json-log-1" and "access" in r["logger"]]
    assert [r["logger"] for r in access] == ["app.access"], access
    assert access[0]["status"] == 200 and access[0]["path"] == "/v1/models", access
