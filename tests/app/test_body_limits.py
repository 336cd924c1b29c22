"""Bodies are capped while they stream: a real uvicorn server on loopback, raw sockets sending
chunked bodies (no Content-Length) that never end. The 413 (or 401) must arrive while the
client is still sending, i.e. before the server read past the route's limit."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.main import create_app
from tests.conftest import make_settings
from tests.live_server import read_until_closed, serve_in_thread

KEY = "test-key-0123456789"
IMAGE_LIMIT = 64 * 1024
REQUEST_LIMIT = 160 * 1024
JSON_LIMIT = 8 * 1024
BODY_TIMEOUT_S = 2.0
BOUNDARY = "imgclassboundary"


class Live:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def send_slowly(self, head: str, first: bytes, drip: bytes) -> tuple[str, bytes, float]:
        """Send `head` and `first`, then `drip` every 0.2 s until the server answers; the
        status line, everything it sent until it closed the connection, the seconds taken."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(head.encode() + first)
            got, took, closed = read_until_closed(s, drip, 4 * BODY_TIMEOUT_S + 5)
        if not closed:
            return "still open", got, took
        return got.split(b"\r\n", 1)[0].decode(), got, took

    def send_unending(
        self, path: str, ctype: str, chunks: Iterator[bytes], key: bool = True
    ) -> str:
        """POST a chunked body that is never terminated; the status line the server answers
        with while the body is still open (a timeout means it waited for more)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Content-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
                + (f"X-API-Key: {KEY}\r\n" if key else "")
                + "\r\n"
            )
            s.sendall(head.encode())
            try:
                for chunk in filter(None, chunks):  # an empty chunk would end the body
                    s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed: what we want to see
            # No terminating 0-chunk: a server waiting for the end would time out here.
            s.settimeout(5)
            try:
                data = s.recv(65536)
            except TimeoutError:
                return "timeout"
            return data.split(b"\r\n", 1)[0].decode()


@pytest.fixture(scope="module")
def live(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    settings = make_settings(
        tiny_models_dir,
        tmp_path_factory.mktemp("limits"),
        api_key=KEY,
        max_image_bytes=IMAGE_LIMIT,
        max_request_bytes=REQUEST_LIMIT,
        max_batch_images=4,
        max_json_bytes=JSON_LIMIT,
        body_timeout_s=BODY_TIMEOUT_S,
    )
    with serve_in_thread(create_app(settings)) as port:
        lv = Live(port)
        r = httpx.post(
            f"{lv.url}/v1/catalogs", json={"name": "c", "model": "tiny"}, headers={"x-api-key": KEY}
        )
        assert r.status_code == 201, r.text
        yield lv


def _png(side: int = 28) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (side, side), 40).save(buf, format="PNG")
    return buf.getvalue()


def _zeros(total: int, step: int = 8192) -> Iterator[bytes]:
    for _ in range(0, total, step):
        yield b"\0" * step


def _part_head(name: str, filename: str | None = None) -> bytes:
    disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def test_raw_body_over_the_image_limit_is_refused_while_streaming(live: Live) -> None:
    status = live.send_unending(
        "/v1/models/tiny/predict", "application/octet-stream", _zeros(IMAGE_LIMIT * 4)
    )
    assert " 413 " in status, status


def test_one_multipart_file_over_its_limit_is_refused_before_the_part_ends(live: Live) -> None:
    def body() -> Iterator[bytes]:
        yield _part_head("file", "big.png")
        yield from _zeros(IMAGE_LIMIT * 2)  # under the request limit, over the per-file one

    assert " 413 " in live.send_unending("/v1/models/tiny/predict", MULTIPART, body())


def test_parts_each_within_limits_but_over_the_request_limit(live: Live) -> None:
    def body() -> Iterator[bytes]:
        for i in range(3):  # 3 x 63 KB: each file and the count are fine, the total is not
            yield _part_head("file", f"{i}.bin")
            yield from _zeros(IMAGE_LIMIT - 1024)
            yield b"\r\n"

    status = live.send_unending("/v1/catalogs/c/items", MULTIPART, body())
    assert " 413 " in status, status


def test_json_bodies_are_capped_before_parsing(live: Live) -> None:
    def big_json() -> Iterator[bytes]:
        yield b'{"vector": ['
        while True:
            yield b"0.125," * 1000

    it = big_json()
    chunks = (next(it) for _ in range(20))  # ~120 KB, far over the 8 KiB JSON limit
    assert " 413 " in live.send_unending("/v1/catalogs/c/search", "application/json", chunks)
    chunks = (next(it) for _ in range(20))
    assert " 413 " in live.send_unending("/v1/catalogs", "application/json", chunks)
    chunks = (next(it) for _ in range(20))
    assert " 413 " in live.send_unending("/v1/catalogs/c/train", "application/json", chunks)


def test_the_key_is_checked_before_any_body_is_read(live: Live) -> None:
    for path in ("/v1/catalogs", "/v1/catalogs/c/items", "/v1/catalogs/c/train"):
        status = live.send_unending(path, "application/json", iter([b'{"name": "x"']), key=False)
        assert " 401 " in status, (path, status)


def test_too_many_files_is_413(live: Live) -> None:
    files = [("file", (f"{i}.png", _png(), "image/png")) for i in range(5)]
    for path in ("/v1/models/tiny/predict", "/v1/catalogs/c/items"):
        r = httpx.post(f"{live.url}{path}", files=files, headers={"x-api-key": KEY})
        assert r.status_code == 413, (path, r.text)
        assert r.json()["limit_images"] == 4


def test_search_takes_one_file(live: Live) -> None:
    files = [("file", (f"{i}.png", _png(), "image/png")) for i in range(2)]
    r = httpx.post(f"{live.url}/v1/catalogs/c/search", files=files)
    assert r.status_code == 413, r.text


def test_deeply_nested_json_is_422_never_500(live: Live) -> None:
    deep = "[" * 3000 + "]" * 3000
    meta = '{"a": ' + deep + "}"
    h = {"x-api-key": KEY}
    r = httpx.post(
        f"{live.url}/v1/catalogs/c/items",
        files={"file": ("a.png", _png(), "image/png")},
        data={"metadata": meta},
        headers=h,
    )
    assert r.status_code == 422 and "deeper" in r.json()["detail"], r.text
    items = json.dumps([{"id": "a"}])[:-1] + ', {"metadata": ' + meta + "}]"
    r = httpx.post(
        f"{live.url}/v1/catalogs/c/items",
        files={"file": ("a.png", _png(), "image/png")},
        data={"items": items},
        headers=h,
    )
    assert r.status_code == 422, r.text
    for path in ("/v1/catalogs", "/v1/catalogs/c/search"):
        r = httpx.post(
            f"{live.url}{path}",
            content='{"x": ' + "[" * 2000 + "]" * 2000 + "}",
            headers={**h, "content-type": "application/json"},
        )
        assert r.status_code == 422, (path, r.text)
    # Brackets inside strings are not nesting.
    ok = {"metadata": json.dumps({"s": "[" * 500})}
    r = httpx.post(
        f"{live.url}/v1/catalogs/c/items",
        files={"file": ("a.png", _png(), "image/png")},
        data=ok,
        headers=h,
    )
    assert r.status_code == 201, r.text


def test_limits_leave_normal_requests_alone(live: Live) -> None:
    files = [("file", (f"{i}.png", _png(), "image/png")) for i in range(4)]
    r = httpx.post(
        f"{live.url}/v1/catalogs/c/items",
        files=files,
        data={"label": "x", "metadata": '{"k": [1, {"n": 2}]}'},
        headers={"x-api-key": KEY},
    )
    assert r.status_code == 201, r.text
    assert r.json()["items"][0]["metadata"] == {"k": [1, {"n": 2}]}
    r = httpx.post(f"{live.url}/v1/catalogs/c/search", json={"item_id": r.json()["ids"][0], "k": 2})
    assert r.status_code == 200 and len(r.json()["neighbors"]) == 2, r.text


def test_a_boundary_longer_than_the_parser_takes_is_400_not_500(live: Live) -> None:
    boundary = "b" * 5000  # python-multipart refuses boundaries over 256 bytes when built
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    r = httpx.post(
        f"{live.url}/v1/models/tiny/predict",
        content=body.encode() + _png() + f"\r\n--{boundary}--\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "boundary" in r.json()["detail"].lower()


def test_an_rfc5987_filename_makes_a_file_part(live: Live) -> None:
    """`filename*=UTF-8''...` alone (no plain filename) is a file, not a 1 KB text field."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        "filename*=UTF-8''%e2%82%ac%20price.png\r\n\r\n"
    )
    r = httpx.post(
        f"{live.url}/v1/models/tiny/predict",
        content=head.encode() + _png() + f"\r\n--{BOUNDARY}--\r\n".encode(),
        headers={"content-type": MULTIPART},
    )
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["filename"] == "\u20ac price.png"


def _slow_head(live: Live, path: str, ctype: str, length: int | None) -> str:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{live.port}\r\n"
        f"Content-Type: {ctype}\r\n{framing}\r\nX-API-Key: {KEY}\r\n\r\n"
    )


def _assert_timed_out(status: str, got: bytes, took: float) -> dict:  # type: ignore[type-arg]
    assert " 408 " in status, (status, got[:300])
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower(), head
    assert BODY_TIMEOUT_S * 0.9 <= took < BODY_TIMEOUT_S + 5, took
    return json.loads(body)  # type: ignore[no-any-return]


@pytest.mark.slow  # real sockets and timeouts: several seconds
def test_a_body_shorter_than_its_content_length_gets_408_and_the_connection_closes(
    live: Live,
) -> None:
    head = _slow_head(live, "/v1/models/tiny/predict", "image/png", 10_000)
    status, got, took = live.send_slowly(head, _png()[:100], b"")
    problem = _assert_timed_out(status, got, took)
    assert problem["status"] == 408 and problem["type"].endswith("/request-timeout")
    assert f"within {BODY_TIMEOUT_S:g} s" in problem["detail"], problem
    assert "IMGCLASS_BODY_TIMEOUT_S" in problem["detail"]


@pytest.mark.slow  # real sockets and timeouts: several seconds
def test_a_multipart_body_sent_a_byte_at_a_time_gets_408(live: Live) -> None:
    head = _slow_head(live, "/v1/catalogs/c/items", MULTIPART, None)
    part = _part_head("file", "slow.png")
    status, got, took = live.send_slowly(
        head, f"{len(part):x}\r\n".encode() + part + b"\r\n", b"1\r\n\0\r\n"
    )
    problem = _assert_timed_out(status, got, took)
    assert "did not arrive in full" in problem["detail"], problem


@pytest.mark.slow  # real sockets and timeouts: several seconds
def test_a_slow_v2_infer_body_gets_408_in_the_protocol_shape(live: Live) -> None:
    head = _slow_head(live, "/v2/models/tiny/infer", "application/json", 5_000)
    status, got, took = live.send_slowly(head, b'{"inputs": [', b" ")
    error = _assert_timed_out(status, got, took)
    assert f"within {BODY_TIMEOUT_S:g} s" in error["error"], error


def test_messages_say_what_to_send_instead(live: Live) -> None:
    """Errors the fuzz run found misleading: each says what was wrong and what is accepted."""
    h = {"x-api-key": KEY}
    items = f"{live.url}/v1/catalogs/c/items"
    # NaN / Infinity are not JSON (stored, NaN became null).
    for constant in ("NaN", "-Infinity"):
        r = httpx.post(
            items,
            files={"file": ("a.png", _png(), "image/png")},
            data={"metadata": '{"score": ' + constant + "}"},
            headers=h,
        )
        assert r.status_code == 422 and "no NaN or Infinity" in r.json()["detail"], r.text
    # An integer int() refuses to read (more than 4,300 digits) was "not valid UTF-8 JSON".
    r = httpx.post(
        f"{live.url}/v1/catalogs",
        content='{"name": "d", "n": ' + "7" * 5000 + "}",
        headers={**h, "content-type": "application/json"},
    )
    assert r.status_code == 422 and "digits" in r.json()["detail"], r.text
    # A file part without filename= is a text field; PNG bytes are not UTF-8.
    body = _part_head("file") + _png() + f"\r\n--{BOUNDARY}--\r\n".encode()
    r = httpx.post(
        f"{live.url}/v1/models/tiny/predict", content=body, headers={"content-type": MULTIPART}
    )
    assert r.status_code == 422 and 'filename="a.jpg"' in r.json()["detail"], r.text
    # A body that is not multipart at all, under a multipart Content-Type.
    r = httpx.post(
        f"{live.url}/v1/models/tiny/predict",
        content=b"just some bytes",
        headers={"content-type": MULTIPART},
    )
    assert r.status_code == 400 and "Content-Disposition" in r.json()["detail"], r.text


def test_a_body_with_many_faults_is_told_its_first_ten() -> None:
    """Round 31: every fault was listed (85,000 of them in a 256 KiB body, a 4 MB answer)."""
    from pydantic import BaseModel, ValidationError

    from app.api.json_bodies import validation_detail

    class Numbers(BaseModel):
        x: list[int]

    with pytest.raises(ValidationError) as info:
        Numbers.model_validate({"x": ["a"] * 12}, strict=True)
    detail = validation_detail(info.value)
    assert detail.count("x.") == 10 and detail.endswith("; and 2 more"), detail
