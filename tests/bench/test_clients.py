"""bench/clients.py: the wrk report parser, and both load generators against a real server."""

from __future__ import annotations

import math
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from bench.clients import BOUNDARY, hey, p99, parse_wrk, wrk
from tests.live_server import serve_stdlib

pytestmark = (
    pytest.mark.slow
)  # benchmark clients against real servers: out of the fast subset (round 28)

WRK_REPORT = """Running 8s test @ http://127.0.0.1:8000/v1/models/imagenet/predict
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    51.23ms    5.12ms   1.20s    70.00%
    Req/Sec   156.00     10.00   170.00     80.00%
  Latency Distribution
     50%  950.00us
     75%   52.00ms
     90%   55.00ms
     99%    1.10s
  1250 requests in 8.00s, 1.23MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 12
Requests/sec:    156.22
Transfer/sec:    157.70KB
"""


def test_parse_wrk_counts_and_units() -> None:
    cell = parse_wrk(WRK_REPORT)
    assert (cell.requests, cell.ok, cell.non2xx, cell.socket_errors) == (1250, 1238, 12, 3)
    assert cell.rps == pytest.approx(1238 / 8.0)
    assert cell.p50 == pytest.approx(0.95)  # us -> ms
    assert cell.p99 == pytest.approx(1100.0)  # s -> ms


def test_parse_wrk_without_errors_or_refusals() -> None:
    text = WRK_REPORT.replace("  Non-2xx or 3xx responses: 12\n", "")
    text = text.replace("  Socket errors: connect 0, read 1, write 0, timeout 2\n", "")
    cell = parse_wrk(text)
    assert (cell.ok, cell.non2xx, cell.socket_errors) == (1250, 0, 0)


def test_parse_wrk_refuses_a_report_without_totals() -> None:
    with pytest.raises(ValueError, match="no request count"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


class _Handler(BaseHTTPRequestHandler):
    """Answers every third POST with 503, the others with 200, after reading the whole body;
    records the bodies' sizes and content types."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[tuple[int, str]]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            self.seen.append((len(body), self.headers.get("Content-Type", "")))
            status = 503 if len(self.seen) % 3 == 0 else 200
        payload = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.seen = []
    with serve_stdlib(ThreadingHTTPServer(("127.0.0.1", 0), _Handler)) as base:
        yield f"{base}/predict"


@pytest.fixture
def body(tmp_path: Path) -> Path:
    path = tmp_path / "640.body"
    path.write_bytes(b"x" * 5000)
    return path


def _sent(body: Path) -> None:
    assert _Handler.seen, "no request reached the server"
    assert {size for size, _ in _Handler.seen} == {body.stat().st_size}
    assert {ctype for _, ctype in _Handler.seen} == {f"multipart/form-data; boundary={BOUNDARY}"}


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk missing: run scripts/setup-system")
def test_wrk_counts_2xx_and_refusals_from_a_real_server(server: str, body: Path) -> None:
    cell = wrk(server, body, clients=2, seconds=1.0)
    _sent(body)
    assert cell.requests == cell.ok + cell.non2xx
    # The server answered every third request with 503 (wrk may stop mid-answer at the end).
    assert abs(cell.requests - len(_Handler.seen)) <= 2
    assert abs(cell.non2xx - len(_Handler.seen) // 3) <= 2
    assert cell.ok > 0 and cell.non2xx > 0 and cell.socket_errors == 0
    assert 0 < cell.p50 <= cell.p99


@pytest.mark.skipif(shutil.which("hey") is None, reason="hey missing: run scripts/setup-system")
def test_hey_separates_200s_and_503s_from_a_real_server(server: str, body: Path) -> None:
    cell = hey(server, body, clients=2, seconds=1.0)
    _sent(body)
    assert cell.ok + cell.s503 + cell.other == len(_Handler.seen)
    assert abs(cell.s503 - len(_Handler.seen) // 3) <= 2
    assert cell.other == 0 and cell.dials == 0
    assert 0 < cell.p50 <= cell.p99 and 0 < cell.p50_503 <= cell.p99_503


def test_p99_of_none_one_and_many() -> None:
    assert math.isnan(p99([]))
    assert p99([123.0]) == 123.0  # a single refusal is its own p99, not "nan"
    assert p99([float(i) for i in range(1, 101)]) == pytest.approx(99.99, abs=0.01)
