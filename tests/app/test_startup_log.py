"""`python -m app` with one worker says at start-up where it serves and where the page and the
API docs are. It said nothing of the kind: uvicorn logs no "running on" line for a socket it is
handed (app/__main__.py binds it), and the README's first commands never mentioned the page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.live_server import live_server


@pytest.mark.slow  # a live server process: full runs only
def test_one_worker_logs_where_the_page_and_the_docs_are(tmp_path: Path) -> None:
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_LOG_LEVEL": "INFO",
        "IMGCLASS_SKIP_CATALOG": "1",
    }
    with live_server(tmp_path, env, entry="app") as server:
        pass
    log = server.log_text()
    expected = f"serving on http://127.0.0.1:{server.port} (page: /, API docs: /docs)"
    assert log.count(expected) == 1, log[-2000:]
