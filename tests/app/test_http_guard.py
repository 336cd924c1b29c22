"""Request heads are timed and capped: a real uvicorn server with the protocol `python -m app`
uses (a subclass with a 1 s deadline and a 4 KB cap, to keep the test short), the real app,
raw sockets. Bodies and ordinary keep-alive and pipelined traffic are left alone."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.http_guard import MAX_DROPPED_BYTES, HeadGuardedProtocol
from app.main import create_app
from tests.conftest import make_settings
from tests.live_server import read_until_closed, serve_in_thread


class ShortGuard(HeadGuardedProtocol):
    head_timeout_s = 1.0
    max_head_bytes = 4096


def _served(
    protocol: type[HeadGuardedProtocol], models: Path, tmp: pytest.TempPathFactory
) -> Iterator[int]:
    """A real server on the tiny bundle behind `protocol`; yields its port."""
    app = create_app(make_settings(models, tmp.mktemp(protocol.__name__.lower())))
    with serve_in_thread(app, http=protocol) as number:
        yield number


@pytest.fixture(scope="module")
def port(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _served(ShortGuard, tiny_models_dir, tmp_path_factory)


def _until_closed(s: socket.socket, drip: bytes = b"", limit_s: float = 8.0) -> tuple[bytes, float]:
    got, took, _ = read_until_closed(s, drip, limit_s)
    return got, took


def _png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((160, 160), 60).save(buf, format="PNG")  # ~25 KB
    return buf.getvalue()


def test_an_idle_connection_is_closed_with_408(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        got, took = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    problem = _problem(got)
    assert "did not arrive within 1 s" in problem["detail"] and 0.9 <= took < 4, took
    assert problem["status"] == 408 and problem["timeout_s"] == 1.0


def test_dribbled_headers_are_cut_off(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        got, took = _until_closed(s, drip=b"X-a: b\r\n")
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert took < 4, took


def test_oversized_headers_get_431(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-pad: " + b"a" * 5000
        s.sendall(head)
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    problem = _problem(got)
    assert problem["status"] == 431 and problem["limit_bytes"] == 4096
    assert "exceed 4,096 bytes" in problem["detail"]


@pytest.mark.parametrize(
    "target", [b"/v2/models/m", b"/v2", b"http://127.0.0.1/v2/health/ready", b"/v2?x=1"]
)
def test_a_refused_head_under_v2_gets_the_protocols_error_shape(port: int, target: bytes) -> None:
    """Round 24: a 431 to a 70 KB model name went to tritonclient as problem+json, which it
    could not read ("an exception occurred in the client while decoding the response:
    'error'"). Under /v2 the guard answers {"error": ...}, as the routes do."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nX-pad: " + b"a" * 5000)
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 431 "), got[:200]
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"content-type: application/json\r\n" in head
    assert set(json.loads(body)) == {"error"} and "exceed 4,096 bytes" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nBad Header\x01: x\r\n\r\n",
    ],
)
def test_bytes_that_are_not_http_get_a_400_problem(port: int, head: bytes) -> None:
    """uvicorn answered these in text/plain; the answer is problem+json like every other."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head)
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    assert _problem(got)["status"] == 400 and "HTTP/1.1" in _problem(got)["detail"]


@pytest.mark.parametrize(
    ("codings", "status", "slug"),
    [
        (b"Transfer-Encoding: gzip, chunked\r\n", 400, "unsupported-transfer-coding"),
        (
            b"Transfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n",
            415,
            "unsupported-content-coding",
        ),
    ],
)
def test_a_compressed_body_is_refused_saying_so(
    port: int, codings: bytes, status: int, slug: str
) -> None:
    """A gzip body was read as raw bytes: 'not an image' (415) or, through other routes, an
    empty image (422), which hid the real cause. Now the coding is named."""
    body = gzip.compress(_png())
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: image/png\r\nConnection: close\r\n" + codings + b"\r\n" + chunked
        )
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]
    problem = _problem(got)
    assert str(problem["type"]).endswith(slug) and "gzip" in str(problem["detail"])


def test_a_transfer_coding_is_refused_on_a_get_too(port: int) -> None:
    """Round 16: `Transfer-Encoding: gzip, chunked` was refused on a POST and ignored on a GET;
    a content coding on a GET (whose body is never read) is still ignored."""
    for te, status in ((b"Transfer-Encoding: gzip, chunked\r\n", 400), (b"", 200)):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                + te
                + (b"\r\n0\r\n\r\n" if te else b"Content-Encoding: gzip\r\n\r\n")
            )
            got, _ = _until_closed(s)
        assert got.startswith(b"HTTP/1.1 %d " % status), got[:200]


def test_an_absolute_form_target_is_checked_by_its_host(port: int) -> None:
    """Round 17: `GET http://evil.com/v1/models` with an allowed Host header got 200; RFC 9112
    3.2.2 says the target's host replaces the Host header."""
    cases = [
        (b"http://evil.com/v1/models", b"127.0.0.1", 400),
        (b"http://127.0.0.1:%d/v1/models" % port, b"evil.com", 200),
        (b"http://[::1]:%d/v1/models" % port, b"127.0.0.1", 400),  # not in the test's list
        (b"/v1/models", b"evil.com", 400),  # origin form: the Host header, as before
    ]
    for target, host, status in cases:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
            )
            got, _ = _until_closed(s)
        assert got.startswith(b"HTTP/1.1 %d " % status), (target, host, got[:200])
        if status == 400:  # refused by the allow-list, not as a malformed Host
            assert "IMGCLASS_ALLOWED_HOSTS" in str(_problem(got)["detail"])


@pytest.mark.parametrize("bad", [b"GET / HTTP/2.0\r\n", b"GET / HTTP/1.2\r\n", b"\x01\x02 x\r\n"])
def test_a_request_pipelined_before_a_bad_one_gets_its_own_answer(port: int, bad: bytes) -> None:
    """Round 17: a POST sent in one segment just before a malformed request ran, and the
    connection's only answer was the 400 for the second line. Now the POST is answered, then
    the 400, then the connection closes; nothing after the bad line is parsed."""
    body = b'{"name": "piped", "model": "tiny"}'
    first = b"POST /v1/catalogs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    first += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    after = b"DELETE /v1/catalogs/piped HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    listing = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(first + listing * 3 + bad + b"Host: 127.0.0.1\r\n\r\n" + after)
        got, _ = _until_closed(s)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)  # a body need not end in CRLF
    assert statuses[0] in (b"201", b"409"), got[:600]
    assert statuses[1:] == [b"200"] * 3 + [b"400"], statuses  # round 18: the last was cut off
    assert httpx.get(f"http://127.0.0.1:{port}/v1/catalogs/piped").status_code == 200


def test_round_18_absolute_form_still_needs_one_host_and_an_http_scheme(port: int) -> None:
    """The target's host replaced every Host line, so no Host, two or an empty one passed;
    ftp:// and ws:// targets were served."""
    heads = {
        b"GET http://127.0.0.1/v1/models HTTP/1.1\r\n": b"not a valid",  # no Host
        b"GET http://127.0.0.1/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n": b"Host",
        b"GET ftp://127.0.0.1/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n": b"http or https",
        b"GET ws://127.0.0.1/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n": b"http or https",
    }
    for head, said in heads.items():
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(head + b"Connection: close\r\n\r\n")
            got, _ = _until_closed(s)
        assert got.startswith(b"HTTP/1.1 400 "), (head, got[:300])
        assert said in got or said == b"not a valid", (head, got[:400])


def test_round_18_broken_chunk_framing_is_a_400_at_once(port: int) -> None:
    """A bad chunk-size line inside the request in hand waited for the body timeout (408 after
    60 s): the deferred refusal waited for that very request."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/catalogs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"zz-not-hex\r\n{}\r\n0\r\n\r\n"
        )
        got, took = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 400 ") and took < 3, (got[:200], took)


def _problem(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    parsed: dict[str, object] = json.loads(body)
    return parsed


@pytest.mark.slow  # real sockets and timeouts: several seconds
def test_ordinary_traffic_is_untouched(port: int) -> None:
    """Keep-alive requests with bodies far over the head cap, a body that takes longer than
    the head deadline, pipelined requests: all answered."""
    png = _png()
    assert len(png) > 4 * ShortGuard.max_head_bytes
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            r = client.post("/v1/models/tiny/predict", content=png)
            assert r.status_code == 200, r.text
            time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(
            b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(png)
        )
        for i in range(0, len(png), len(png) // 5 + 1):  # over ~2 s: twice the head deadline
            time.sleep(0.4)
            s.sendall(png[i : i + len(png) // 5 + 1])
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2)
        got, _ = _until_closed(s, limit_s=6)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    # The predict, both pipelined probes, then the idle connection's 408.
    assert statuses == [b"200", b"200", b"200", b"408"], got[-500:]


class StallGuard(HeadGuardedProtocol):
    write_stall_s = 1.0


@pytest.mark.slow  # 5 s: a live server waits out its send timeout (full runs only)
@pytest.mark.parametrize("connection", [b"keep-alive", b"close"])
def test_a_client_that_stops_reading_is_dropped_and_its_answer_freed(
    tiny_models_dir: Path, tmp_path: Path, connection: bytes
) -> None:
    # A predict answer of ~30 MB (32 images x 60 neighbours x 15 KB of metadata) to a client
    # that never reads: it sat in the write buffer for as long as the client stayed connected
    # (20 such clients held a gigabyte). Now the connection is aborted once the buffer has
    # not drained for write_stall_s, and the server answers others as before; also when the
    # connection was closing already (Connection: close, or keep-alive's timer: round 14
    # found a graceful close that waited for the buffer for good).
    app = create_app(make_settings(tiny_models_dir, tmp_path))
    png = _png_small()
    with serve_in_thread(app, http=StallGuard) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{base}/v1/catalogs", json={"name": "m", "model": "tiny"}).is_success
        meta = json.dumps({"notes": "x" * 15_000})
        for start in range(0, 60, 20):
            files = [("file", (f"{i}.png", png, "image/png")) for i in range(start, start + 20)]
            r = httpx.post(f"{base}/v1/catalogs/m/items", files=files, data={"metadata": meta})
            assert r.status_code == 201, r.text
        body = (
            b"".join(
                b"--b\r\nContent-Disposition: form-data; name=file; filename=a.png\r\n"
                b"Content-Type: image/png\r\n\r\n" + png + b"\r\n"
                for _ in range(32)
            )
            + b"--b--\r\n"
        )
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            s.sendall(
                b"POST /v1/models/tiny/predict?similar=60&catalog=m HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Connection: %s\r\nContent-Length: %d\r\n\r\n" % (connection, len(body)) + body
            )
            time.sleep(4)  # not reading: the answer waits in the server's buffers
            got, _, closed = read_until_closed(s, limit_s=20)
        assert closed
        assert got.startswith(b"HTTP/1.1 200 ")
        length = int(re.search(rb"content-length: (\d+)", got[:2000], re.I).group(1))  # type: ignore[union-attr]
        assert length > 25_000_000 and len(got) < length / 2, (length, len(got))
        assert httpx.get(f"{base}/healthz").status_code == 200


def _png_small() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 120).save(buf, format="PNG")
    return buf.getvalue()


# Fuzz round 14 ------------------------------------------------------------------------------


class RoundGuard(HeadGuardedProtocol):
    head_timeout_s = 1.0
    max_head_bytes = 4096
    linger_s = 1.0
    max_pipelined = 5


@pytest.fixture(scope="module")
def guarded(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _served(RoundGuard, tiny_models_dir, tmp_path_factory)


def test_chunked_trailers_are_capped_and_never_kept(
    guarded: int, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn appended every trailer line to the request's headers: 144 MB of trailers took
    a worker to 2.9 GB, with no time limit on a GET. Now they count against the head's cap
    and the connection closes past it."""
    logging.getLogger("uvicorn").addHandler(caplog.handler)  # it does not propagate
    png = _png_small()
    for head in (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
        # a route still answering when the cap closes the connection (round 15: its writes
        # then raised on the closed transport, a traceback each)
        b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n" % (len(png), png),
    ):
        with socket.create_connection(("127.0.0.1", guarded)) as s:
            s.sendall(head)
            try:
                for _ in range(200):  # 1.2 MB of trailer lines, far past the 4 KB cap
                    s.sendall(b"X-t: a\r\n" * 800)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed while we were still sending: what the cap does
            got, took, closed = read_until_closed(s, limit_s=5)
        assert closed and took < 4, (took, got[:200])
    # trailers over the cap and a request pipelined behind them, in one read (round 15:
    # the pipelined request was started on the closed connection, a traceback 9 times in 10)
    trailers = b"".join(b"X-T%d: %s\r\n" % (j, b"a" * 100) for j in range(60)) + b"\r\n"
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", guarded)) as s:
            s.sendall(
                b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"%x\r\n%s\r\n0\r\n%s"
                % (len(png), png, trailers)
                + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            )
            _, _, closed = read_until_closed(s, limit_s=5)
        assert closed
    time.sleep(0.5)
    logging.getLogger("uvicorn").removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[-2000:]


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n",
        b"POST /v1/models/nope/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n",
        b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nContent-Length: 1000000000\r\n\r\n",
    ],
)
def test_a_body_still_arriving_after_its_answer_ends_the_connection(
    guarded: int, head: bytes
) -> None:
    """A body nobody reads (a GET's, a 404's, a 413's) held the connection and its file
    descriptor for as long as the client trickled it. The answer arrives whole, then the
    connection is half-closed and closed linger_s later however the client goes on."""
    with socket.create_connection(("127.0.0.1", guarded)) as s:
        s.sendall(head + b"a" * 100)
        got, took, closed = read_until_closed(s, drip=b"a", limit_s=6)
    assert closed and took < 3.5, took
    status = int(got.split(b" ", 2)[1])
    assert status in (200, 404, 413), got[:200]
    length = int(re.search(rb"content-length: (\d+)", got, re.I).group(1))  # type: ignore[union-attr]
    assert len(got.split(b"\r\n\r\n", 1)[1]) == length  # the whole answer came through
    # and it said so, or a client reuses the connection and loses its next request (the soak
    # test's keep-alive client saw "Server disconnected without sending a response")
    assert b"connection: close" in got.split(b"\r\n\r\n", 1)[0].lower()


def test_an_upgrade_with_a_body_is_refused_saying_so(guarded: int) -> None:
    """curl --http2 on http:// sends `Upgrade: h2c` with its POST; httptools stops at the
    upgrade, so the body never reached the route, which answered 422 "no image data"."""
    png = _png_small()
    with socket.create_connection(("127.0.0.1", guarded)) as s:
        s.sendall(
            b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n"
            b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(png) + png
        )
        got, _ = _until_closed(s, limit_s=4)
    assert got.startswith(b"HTTP/1.1 400 "), got[:300]
    assert "Upgrade: h2c is not supported" in _problem(got)["detail"]
    # without a body the Upgrade is ignored, as before
    r = httpx.get(
        f"http://127.0.0.1:{guarded}/healthz",
        headers={"Connection": "Upgrade", "Upgrade": "h2c"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Upgrade: websocket\r\nConnection: Upgrade",
        b"Upgrade: WebSocket, h2c\r\nConnection: keep-alive, Upgrade",
        # round 21: a long first token, and a second Upgrade line, hid it
        b"Upgrade: " + b"x" * 40 + b", websocket\r\nConnection: Upgrade",
        b"Upgrade: websocket\r\nUpgrade: foo\r\nConnection: Upgrade",
    ],
)
def test_a_websocket_handshake_is_refused_saying_none_is_served(
    guarded: int, upgrade: bytes
) -> None:
    """A WebSocket handshake broke inside the parser's callback: the generic "not valid
    HTTP/1.1" 400, or with one request pipelined before it, a KeyError traceback."""
    handshake = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + upgrade + b"\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    plain = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for sent, answers in ((handshake, 1), (plain + handshake, 2)):
        with socket.create_connection(("127.0.0.1", guarded)) as s:
            s.sendall(sent)
            got, _ = _until_closed(s, limit_s=4)
        assert len(re.findall(rb"HTTP/1\.1 \d{3} [A-Z]", got)) == answers, got[:600]
        if answers == 2:
            assert got.startswith(b"HTTP/1.1 200 ")
            got = got[got.index(b"HTTP/1.1 400 ") :]
        assert got.startswith(b"HTTP/1.1 400 "), got[:300]
        assert "WebSocket is not served" in str(_problem(got)["detail"])


@pytest.mark.parametrize("version", [b"2.0", b"1.2", b"3.0"])
def test_a_request_line_in_another_http_version_gets_a_400(port: int, version: bytes) -> None:
    """`GET / HTTP/2.0` was served as if it said HTTP/1.1."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /healthz HTTP/" + version + b"\r\nHost: 127.0.0.1\r\n\r\n")
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    # httptools itself refuses 1.2 and 3.0 (send_400_response); 2.0 it parses
    said = "is not spoken here" if version == b"2.0" else "not valid HTTP/1.1"
    assert said in _problem(got)["detail"]
    for ok in (b"1.0", b"1.1"):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"GET /healthz HTTP/" + ok + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            got, _ = _until_closed(s)
        assert got.startswith(b"HTTP/1.1 200 "), got[:200]


def test_an_http_1_0_client_gets_no_100_continue(port: int) -> None:
    """RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request is ignored; an
    HTTP/1.1 client still gets its interim 100 (round 16)."""
    for version, interim in ((b"1.0", False), (b"1.1", True)):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/catalogs HTTP/" + version + b"\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                b"Expect: 100-continue\r\nConnection: close\r\n\r\n{}"
            )
            got, _ = _until_closed(s)
        assert (b" 100 Continue" in got) is interim, got[:200]


def test_a_long_pipeline_is_answered_in_part_then_closed(guarded: int) -> None:
    """uvicorn parsed and queued every pipelined request (50,000 from a client that read
    nothing held 190 MB). Past max_pipelined waiting, those in hand are answered and the
    connection closes; a pipeline within the cap is answered whole and stays open."""
    probe = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", guarded)) as s:
        s.sendall(probe * 40)
        got, took, closed = read_until_closed(s, limit_s=5)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", got)
    assert closed and statuses == [b"200"] * 6 and took < 2, (statuses, took)
    with socket.create_connection(("127.0.0.1", guarded)) as s:
        s.sendall(probe * 5)
        got, _, _ = read_until_closed(s, limit_s=3)
    # five answers, then the idle connection's 408 (head deadline 1 s), never one mid-stream
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", got) == [b"200"] * 5 + [b"408"]


def test_a_request_pipelined_behind_an_ignored_upgrade_is_not_left_waiting(
    guarded: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 21: `GET` with `Upgrade: h2c` (no body) is served as if it had no Upgrade, but
    httptools parses nothing after it: a request pipelined behind it got no answer and the
    connection idled until the keep-alive timeout (5 s). The answer now closes the connection
    (the client sends the next request again), and uvicorn's two WARNING lines per such
    request are gone."""
    logging.getLogger("uvicorn").addHandler(caplog.handler)  # it does not propagate
    first = (
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    )
    second = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", guarded)) as s:
            s.sendall(first + second)
            got, took = _until_closed(s, limit_s=4)
    finally:
        logging.getLogger("uvicorn").removeHandler(caplog.handler)
    assert got.startswith(b"HTTP/1.1 200 ") and len(re.findall(rb"HTTP/1\.1 \d{3} [A-Z]", got)) == 1
    assert b"connection: close" in got.split(b"\r\n\r\n", 1)[0].lower()
    assert took < 2.0, took
    assert "Unsupported upgrade request" not in caplog.text


def test_bytes_that_are_not_http_get_a_400_and_no_warning_line(
    guarded: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Round 22: uvicorn logged "Invalid HTTP request received." at WARNING for every such
    connection, so any client could add a line per connection (526 in the round); it is
    DEBUG now, and the answer is still the problem+json 400."""
    logging.getLogger("uvicorn").addHandler(caplog.handler)  # it does not propagate
    try:
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            for junk in (
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            ):
                with socket.create_connection(("127.0.0.1", guarded)) as s:
                    s.sendall(junk)
                    got, _ = _until_closed(s, limit_s=4)
                assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    finally:
        logging.getLogger("uvicorn").removeHandler(caplog.handler)
    assert "Invalid HTTP request" not in caplog.text


@pytest.mark.slow  # 1.1 s: full runs only
def test_an_answered_request_is_freed_without_the_cycle_collector() -> None:
    """Round 25: the wrapper this protocol puts on each request's `send` held the request's
    cycle (and the protocol), a reference cycle that kept the request's scope, with the parsed
    multipart form stored in it, until a full garbage collection: 100 refused 19 MB uploads
    left a worker 475 MiB larger at rest. With the collector off, every answered request's
    cycle must be gone by reference counting alone."""
    import gc
    import os

    path = "/upload-freed-by-refcount"

    async def keeper(scope: dict[str, object], receive: object, send: object) -> None:
        body = b""
        while True:
            message = await receive()  # type: ignore[operator]
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        scope.setdefault("state", {})["kept"] = bytes(body)  # type: ignore[union-attr]
        await send({"type": "http.response.start", "status": 415, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"not an image"})  # type: ignore[operator]

    def left() -> int:
        return sum(
            type(o).__name__ == "RequestResponseCycle" and o.scope.get("path") == path
            for o in gc.get_objects()
        )

    with serve_in_thread(keeper, http=HeadGuardedProtocol, lifespan="off") as port:  # type: ignore[arg-type]
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
                    assert c.post(path, content=os.urandom(100_000)).status_code == 415
            deadline = time.monotonic() + 3
            while left() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert left() == 0
        finally:
            gc.enable()


def _other_400s(port: int) -> float:
    return _other_or_post_400s(port, "other")


@pytest.mark.parametrize("method", [b"FOO", b"BREW", b"X" * 40])
def test_an_unknown_method_gets_a_request_id_and_is_counted(port: int, method: bytes) -> None:
    """Round 31: a method the HTTP parser does not know was answered 400 (right) with no
    X-Request-ID, which every answer carries, and never counted in /metrics."""
    before = _other_400s(port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(method + b" /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got, _ = _until_closed(s)
    assert got.startswith(b"HTTP/1.1 400 "), got[:200]
    head = got.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    ids = [line.split(": ", 1)[1] for line in head.split("\r\n") if line.startswith("x-request-id")]
    assert len(ids) == 1 and re.fullmatch(r"[0-9a-f]{32}", ids[0]), head
    assert _other_400s(port) == before + 1


def _other_or_post_400s(port: int, method: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    series = (
        f'imgclass_requests_total{{method="{method}",model="",route="<unmatched>",status="400"}}'
    )
    lines = [line for line in text.splitlines() if line.startswith(series + " ")]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


@pytest.mark.parametrize(
    ("second", "shape", "method"),
    [
        (b"FOO /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "problem", "other"),
        # its own path and method, parsed, though its bytes arrived in the read of the first
        (b"POST /v2/models/tiny/infer HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", "v2", "POST"),
        (
            b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            "problem",
            "POST",
        ),
    ],
)
def test_a_bad_request_pipelined_behind_a_good_one_is_answered_as_itself(
    port: int, second: bytes, shape: str, method: str
) -> None:
    """Round 32: a refused request read together with the one before it was answered and
    counted with that one's method, and in the /v2 error shape when that one was /v2."""
    before = _other_or_post_400s(port, method)
    first = b"/v2/health/live" if shape == "problem" else b"/healthz"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET " + first + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + second)
        got, _ = _until_closed(s)
    answered, _, rest = got.partition(b"HTTP/1.1 400 ")
    if b"chunked" not in second:  # (a bad chunk still cuts the first answer off: not fixed)
        assert answered.startswith(b"HTTP/1.1 200 "), got[:300]
    head, _, body = rest.partition(b"\r\n\r\n")
    if shape == "problem":
        assert b"application/problem+json" in head.lower() and b'"error"' not in body, rest
    else:
        assert json.loads(body).keys() == {"error"}, rest
    assert _other_or_post_400s(port, method) == before + 1


class LongLinger(HeadGuardedProtocol):
    linger_s = 30.0


@pytest.fixture(scope="module")
def lingering(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    yield from _served(LongLinger, tiny_models_dir, tmp_path_factory)


def _post_whole_body_then_read(port: int, size: int) -> bytes:
    """What httpx and requests do: send the whole body, then read the answer."""
    head = (
        b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nContent-Length: %d\r\n\r\n" % size
    )
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head + b"\0" * size)
        got, _, _ = read_until_closed(s, b"", 20)
    return got


def test_a_client_that_sends_its_whole_body_first_gets_the_413_without_waiting(
    lingering: int,
) -> None:
    """Round 32: after an early 413 the connection stopped reading (uvicorn's flow control
    had paused it), so a client sending its whole body before reading, as httpx and requests
    do, waited out the linger (5 s) for an answer curl had in 0.03 s: its send only ended when
    the connection was closed. The rest of the body is read and dropped."""
    body = b"\0" * (21 * 1024 * 1024)  # over the 20 MiB image cap
    url = f"http://127.0.0.1:{lingering}/v1/models/tiny/predict"
    for _ in range(3):  # the stall depended on when the answer beat the body: some were quick
        r = httpx.post(url, content=body, headers={"Content-Type": "image/png"}, timeout=10)
        assert r.status_code == 413, r.text


def test_what_is_dropped_after_an_answer_is_bounded(lingering: int) -> None:
    """Reading on after the answer costs the server's time: past MAX_DROPPED_BYTES the
    connection is cut, long before the linger (30 s here) ends."""
    t0 = time.monotonic()
    with pytest.raises(OSError):
        _post_whole_body_then_read(lingering, MAX_DROPPED_BYTES + 80 * 1024 * 1024)
    assert time.monotonic() - t0 < LongLinger.linger_s / 2


@pytest.mark.parametrize("split", ["headers-later", "byte-by-byte"])
def test_a_v2_refusal_keeps_its_shape_however_its_head_is_split(port: int, split: str) -> None:
    """Round 32 (attacked again): a head whose request line came in one read and its headers
    in the next (pipelined behind another request), or sent a byte at a time, was refused in
    problem+json and counted as `other`, not as the /v2 PUT it was."""
    before = _other_or_post_400s(port, "PUT")
    bad = b"PUT /v2/models/tiny/ready HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        if split == "headers-later":
            line, _, rest = bad.partition(b"\r\n")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + line + b"\r\n")
            time.sleep(0.3)
            s.sendall(rest)
        else:
            for i in range(len(bad)):
                s.sendall(bad[i : i + 1])
                time.sleep(0.002)
        got, _ = _until_closed(s)
    body = got.partition(b"HTTP/1.1 400 ")[2].partition(b"\r\n\r\n")[2]
    assert json.loads(body).keys() == {"error"}, got[-400:]
    assert _other_or_post_400s(port, "PUT") == before + 1


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_a_body_in_tiny_chunks_is_refused_saying_so(port: int) -> None:
    """Round 43: each piece of a body costs the same round of Python work whatever its size:
    20 MiB in 1-byte chunks took 6.6 s of a worker's CPU. Past 4,096 pieces averaging under
    256 bytes, the request gets a 400 saying so; the same body in ordinary chunks is served."""
    png = _png()
    head = (
        b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for size, status in ((1, b"400"), (256, b"200")):
        with socket.create_connection(("127.0.0.1", port)) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(head + _chunked(png, size))  # refused while still sending: fine
            got, _, _ = read_until_closed(s, limit_s=5)
        assert got.startswith(b"HTTP/1.1 " + status), got[:300]
        if status == b"400":
            assert b"pieces of 1 bytes on average" in got and b"larger chunks" in got


def test_trailers_over_the_cap_get_a_431_when_no_answer_has_begun(guarded: int) -> None:
    """Round 43: the connection was closed without an answer (and a WARNING line logged)."""
    png = _png_small()
    with socket.create_connection(("127.0.0.1", guarded)) as s:
        s.sendall(
            b"POST /v1/models/tiny/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n0\r\n" % (len(png), png) + b"X-t: a\r\n" * 1000
        )
        got, _, closed = read_until_closed(s, limit_s=5)
    assert closed and got.startswith(b"HTTP/1.1 431"), got[:300]
    assert b"trailers exceed 4,096 bytes" in got
