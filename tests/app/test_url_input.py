"""JSON image input on /v1 predict: base64 and URLs, with the SSRF rules. A real HTTP server on
127.0.0.1 serves the images; it is reachable only because the test settings allow-list it."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.url_fetch import FetchPolicy, UrlFetchFailed, UrlNotAllowed, check_url, fetch_image
from tests.conftest import DATA, ROOT, make_settings, require
from tests.live_server import serve_stdlib

pytestmark = (
    pytest.mark.slow
)  # local HTTPS and dripping servers (round 29: the fast subset in 2 min)

MAX_IMAGE_BYTES = 64 * 1024
PNG = "mnist_00_7.png"


def digit() -> bytes:
    return require(DATA / "photos" / "foolbox" / PNG).read_bytes()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}) and status != 999:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        if path in ("/digit.png", "/caf%C3%A9.png", "/digit.png?q=%C3%A9&r=a%20b"):
            self._send(200, digit(), {"Content-Type": "image/png"})
        elif path == "/to-cafe":  # a UTF-8 Location (sent as bytes; http.client reads Latin-1)
            self._send(302, headers={"Location": "/caf\u00e9.png".encode().decode("latin-1")})
        elif path == "/page.html":
            self._send(200, b"<!doctype html><html>no image</html>", {"Content-Type": "image/png"})
        elif path == "/big":
            self._send(200, b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES)
        elif path == "/big-no-length":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(MAX_IMAGE_BYTES // 4096 + 2):
                self.wfile.write(b"\0" * 4096)
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\0" * 10)
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/to-digit":
            self._send(302, headers={"Location": "/digit.png"})
        elif path == "/to-metadata":
            self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/to-loopback-name":
            port = self.server.server_address[1]
            self._send(301, headers={"Location": f"http://localhost:{port}/digit.png"})
        elif path == "/loop":
            self._send(307, headers={"Location": "/loop"})
        elif path == "/superscript-length":  # '²'.isdigit() is true; int('²') raises
            self._send(200, digit(), {"Content-Length": "\u00b2", "Connection": "close"})
        elif path == "/to-broken-url":
            self._send(302, headers={"Location": "http://[::1"})
        elif path in ("/drip-headers", "/drip-continue"):
            self._drip(path)
        else:
            self._send(404, b"not found")

    def _drip(self, path: str) -> None:
        """A line every 0.2 s for up to 6 s: each read is quick, the whole is not."""
        line = b"X-Drip: 1\r\n" if path == "/drip-headers" else b"HTTP/1.1 100 Continue\r\n\r\n"
        try:
            if path == "/drip-headers":
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for _ in range(30):
                self.wfile.write(line)
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with serve_stdlib(server) as base:
        yield base


def make_client(tmp_path: Path, **overrides: object) -> TestClient:
    values: dict[str, object] = {
        "enabled_models": ["digits"],
        "allowed_hosts": ["*"],
        "max_image_bytes": MAX_IMAGE_BYTES,
        "url_fetch_enabled": True,
        "url_allow_http": True,  # the test server speaks plain http
        "url_private_allowlist": ["127.0.0.1"],  # the one private address the tests may reach
        "url_timeout_s": 1.5,
    }
    values.update(overrides)
    return TestClient(create_app(make_settings(ROOT / "models", tmp_path, **values)))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("url")) as c:
        yield c


def predict_json(client: TestClient, images: list[dict[str, str]]) -> httpx.Response:
    return client.post("/v1/models/digits/predict", json={"images": images})


def top(r: httpx.Response) -> list[tuple[int, float]]:
    assert r.status_code == 200, r.text
    return [(p["index"], p["score"]) for p in r.json()["results"][0]["predictions"]]


def test_b64_and_url_give_the_multipart_answer(client: TestClient, image_server: str) -> None:
    png = digit()
    expected = top(client.post("/v1/models/digits/predict", files={"file": ("d.png", png)}))
    b64 = base64.b64encode(png).decode()
    assert top(predict_json(client, [{"b64": b64}])) == expected
    assert top(predict_json(client, [{"b64": "data:image/png;base64," + b64}])) == expected
    # What clients send besides strict base64: MIME line breaks, URL-safe, no padding.
    mime = base64.encodebytes(png).decode()
    assert "\n" in mime and top(predict_json(client, [{"b64": mime}])) == expected
    urlsafe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    assert top(predict_json(client, [{"b64": urlsafe}])) == expected
    r = predict_json(client, [{"b64": b64[:40] + "*" + b64[40:]}])
    assert r.status_code == 422 and "base64 alphabet" in r.json()["detail"], r.text
    assert top(predict_json(client, [{"url": f"{image_server}/digit.png"}])) == expected
    assert top(predict_json(client, [{"url": f"{image_server}/to-digit"}])) == expected
    r = predict_json(client, [{"b64": b64}, {"url": f"{image_server}/digit.png"}])
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    assert r.json()["results"][1]["filename"] == "digit.png"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"images": [{"b64": "not base64!"}]}, 422),
        ({"images": []}, 422),
        ({"images": [{"b64": "aGk=", "url": "https://x"}]}, 422),
        ({"images": [{"path": "/etc/passwd"}]}, 422),
        ({"imgs": []}, 422),
        ([1, 2], 422),
        ({"images": [{"b64": base64.b64encode(b"\0" * (MAX_IMAGE_BYTES + 10)).decode()}]}, 413),
        ({"images": [{"b64": "aGk="}] * 40}, 413),
    ],
)
def test_bad_json_bodies(client: TestClient, body: Any, status: int) -> None:
    r = client.post("/v1/models/digits/predict", json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("filler", [b"{},", b"[],", b"1,", b'"":1,'])
def test_json_full_of_tiny_values_is_refused_before_parsing(
    client: TestClient, filler: bytes
) -> None:
    """A body of a million tiny values (30 MB of `{},` became 10 million dicts, +770 MB on a
    live worker) is refused from its punctuation count, before it is parsed."""
    body = b'{"images": [' + filler * 1_000_000 + b'{"b64": "aGk="}]}'
    r = client.post(
        "/v1/models/digits/predict", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    assert "far more values" in r.json()["detail"]


def test_urls_with_commas_and_data_urls_pass_the_structure_check(client: TestClient) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(b"\0" * 64).decode()
    url = "https://img.example/w_100,h_100,c_fill,q_auto:good/a.png"
    r = predict_json(client, [{"b64": data_url}, {"url": url}])
    assert "far more values" not in r.text, r.text


def url_error(client: TestClient, url: str) -> dict[str, Any]:
    r = predict_json(client, [{"url": url}])
    assert 400 <= r.status_code < 500, r.text
    doc: dict[str, Any] = r.json()
    doc["status_code"] = r.status_code
    return doc


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/x.png",  # private
        "http://192.168.0.10/x.png",  # private
        "http://127.0.0.2/x.png",  # loopback, not the allow-listed address
        "http://169.254.169.254/latest/meta-data/",  # link-local: cloud metadata
        "http://[::1]/x.png",  # IPv6 loopback
        "http://[fd00:ec2::254]/",  # IPv6 ULA (AWS metadata over IPv6)
        "http://[::ffff:127.0.0.1]/x.png",  # IPv4-mapped loopback
        "http://224.0.0.1/x.png",  # multicast
        "http://0.0.0.0/x.png",  # unspecified
        "http://100.64.0.1/x.png",  # shared address space (carrier NAT)
        "http://240.0.0.1/x.png",  # reserved
        "http://localhost/x.png",  # a DNS name (here /etc/hosts) resolving to loopback
        # 6to4 embeds an IPv4 address: these carry 127.0.0.1 and 169.254.169.254 (they were
        # called public, and fetched where a 6to4 route exists).
        "http://[2002:7f00:1::]/x.png",
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/",
        "http://[fec0::1]/x.png",  # deprecated IPv6 site-local, still routed internally
    ],
)
def test_non_public_addresses_are_refused(client: TestClient, url: str) -> None:
    doc = url_error(client, url)
    assert doc["status_code"] == 422 and doc["type"] == "/problems/url-not-allowed", doc
    assert "not a public address" in doc["detail"]


def test_non_ascii_urls_are_sent_percent_encoded(client: TestClient, image_server: str) -> None:
    """http.client refuses a non-ASCII request target: these were 500s."""
    want = top(predict_json(client, [{"url": f"{image_server}/digit.png"}]))
    for url in (
        f"{image_server}/caf\u00e9.png",
        f"{image_server}/caf%C3%A9.png",  # already encoded: left as it is
        f"{image_server}/digit.png?q=\u00e9&r=a b",
        f"{image_server}/to-cafe",
    ):
        assert top(predict_json(client, [{"url": url}])) == want, url
    doc = url_error(client, "http://ex\u00e4mple.invalid/x.png")  # IDNA name, no such host
    assert doc["type"] == "/problems/url-fetch-failed" and "does not resolve" in doc["detail"]
    doc = url_error(client, "http://a..b/x.png")  # an empty label is no domain name
    assert doc["status_code"] == 422, doc
    lone = b'{"images": [{"url": "http://127.0.0.1/\\ud800.png"}]}'
    r = client.post(
        "/v1/models/digits/predict", content=lone, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "surrogate" in r.json()["detail"], r.text


def test_redirects_are_checked_on_every_hop(client: TestClient, image_server: str) -> None:
    doc = url_error(client, f"{image_server}/to-metadata")
    assert doc["type"] == "/problems/url-not-allowed" and "169.254.169.254" in doc["detail"]
    doc = url_error(client, f"{image_server}/to-loopback-name")
    assert doc["type"] == "/problems/url-not-allowed" and "localhost" in doc["detail"]
    doc = url_error(client, f"{image_server}/loop")
    assert doc["type"] == "/problems/url-fetch-failed" and "redirected more than" in doc["detail"]


def test_size_time_content_and_status(client: TestClient, image_server: str) -> None:
    assert url_error(client, f"{image_server}/big")["status_code"] == 413
    assert url_error(client, f"{image_server}/big-no-length")["status_code"] == 413
    t0 = time.monotonic()
    doc = url_error(client, f"{image_server}/slow")
    assert time.monotonic() - t0 < 5
    assert doc["type"] == "/problems/url-fetch-failed" and "longer than the limit" in doc["detail"]
    doc = url_error(client, f"{image_server}/page.html")
    assert doc["status_code"] == 415 and "HTML" in doc["detail"]
    doc = url_error(client, f"{image_server}/missing.png")
    assert doc["type"] == "/problems/url-fetch-failed" and "404" in doc["detail"]
    doc = url_error(client, "http://user:pw@example.com/x.png")
    assert doc["type"] == "/problems/url-not-allowed" and "credentials" in doc["detail"]
    doc = url_error(client, "file:///etc/passwd")
    assert doc["type"] == "/problems/url-not-allowed"


def test_a_dripping_server_is_cut_off_at_the_fetch_limit(image_server: str) -> None:
    """Header lines or '100 Continue' lines arriving one by one, each well inside the socket
    timeout: the whole fetch still ends at the policy's time limit (0.5 s here)."""
    policy = FetchPolicy(
        enabled=True, allow_http=True, private_allowlist=["127.0.0.1"], timeout_s=0.5
    )
    for path in ("/drip-headers", "/drip-continue"):
        t0 = time.monotonic()
        with pytest.raises(UrlFetchFailed, match="longer than the limit"):
            fetch_image(f"{image_server}{path}", policy)
        assert time.monotonic() - t0 < 1.5, path


def test_malformed_answers_from_the_image_host_are_422(
    client: TestClient, image_server: str
) -> None:
    # A Content-Length that is not ASCII digits is ignored (the body is read to the end of the
    # connection, still capped at the image limit): it was a 500 once.
    r = predict_json(client, [{"url": f"{image_server}/superscript-length"}])
    assert r.status_code == 200 and top(r)[0][0] == 7, r.text
    doc = url_error(client, f"{image_server}/to-broken-url")
    assert doc["type"] == "/problems/url-fetch-failed" and "invalid URL" in doc["detail"], doc


def test_https_only_allow_list_and_off_by_default(tmp_path: Path, image_server: str) -> None:
    url = f"{image_server}/digit.png"
    with make_client(tmp_path / "a", url_allow_http=False) as c:
        doc = url_error(c, url)
        assert doc["type"] == "/problems/url-not-allowed" and "https" in doc["detail"]
    with make_client(tmp_path / "b", url_allowed_hosts=["images.example.com"]) as c:
        doc = url_error(c, url)
        assert "IMGCLASS_URL_ALLOWED_HOSTS" in doc["detail"]
    with make_client(tmp_path / "c", url_allowed_hosts=["127.0.0.1"]) as c:
        assert predict_json(c, [{"url": url}]).status_code == 200
    with make_client(tmp_path / "d", url_private_allowlist=[]) as c:
        doc = url_error(c, url)  # 127.0.0.1 itself, once not allow-listed
        assert "not a public address" in doc["detail"]
    with make_client(tmp_path / "e", url_fetch_enabled=False, url_private_allowlist=[]) as c:
        doc = url_error(c, url)
        assert "IMGCLASS_URL_FETCH_ENABLED" in doc["detail"]


def test_dns_answer_is_checked_and_pinned() -> None:
    """A name whose DNS answer holds a private address is refused even when another answer is
    public; an accepted name is connected to by the checked address."""
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.7"], "ok.example": ["93.184.215.14"]}
    policy = FetchPolicy(enabled=True, resolver=lambda host, port: answers[host])
    with pytest.raises(UrlNotAllowed, match=r"10\.0\.0\.7"):
        check_url("https://mixed.example/cat.jpg", policy)
    target = check_url("https://ok.example:8443/cat.jpg?size=big", policy)
    assert (target.ip, target.host, target.port, target.path) == (
        "93.184.215.14",
        "ok.example",
        8443,
        "/cat.jpg?size=big",
    )
    unresolvable = FetchPolicy(enabled=True, resolver=lambda host, port: [])
    with pytest.raises(UrlFetchFailed):
        fetch_image("https://nowhere.example/x.jpg", unresolvable)


def test_a_name_resolving_to_6to4_of_a_private_address_is_refused() -> None:
    """A DNS answer of 2002:7f00:1:: (6to4 around 127.0.0.1) passed as public; a 6to4 address
    around a public IPv4 still does."""
    answers = {"sneaky.example": ["2002:a9fe:a9fe::"], "fine.example": ["2002:5db8:d70e::1"]}
    policy = FetchPolicy(enabled=True, resolver=lambda host, port: answers[host])
    with pytest.raises(UrlNotAllowed, match="not a public address"):
        check_url("https://sneaky.example/cat.jpg", policy)
    assert check_url("https://fine.example/cat.jpg", policy).ip == "2002:5db8:d70e::1"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same handler over TLS with a throwaway certificate for IP 127.0.0.1 (openssl CLI)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a test certificate")
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serve_stdlib(server, "https") as base:
        yield base, cert


def test_https_is_verified_against_the_url_host(tls_server: tuple[str, Path]) -> None:
    import ssl

    base, cert = tls_server
    trusting = ssl.create_default_context(cafile=str(cert))
    policy = FetchPolicy(enabled=True, private_allowlist=["127.0.0.1", "images.internal"])
    assert fetch_image(f"{base}/digit.png", policy, ssl_context=trusting) == digit()
    # The system trust store does not know the throwaway certificate.
    with pytest.raises(UrlFetchFailed, match="SSL"):
        fetch_image(f"{base}/digit.png", policy)
    # A name that resolves to the same address is still checked as that name: the certificate
    # (for 127.0.0.1 only) does not cover it, so the connection to the pinned IP is refused.
    port = base.rsplit(":", 1)[1]
    named = FetchPolicy(
        enabled=True,
        private_allowlist=["images.internal"],
        resolver=lambda host, port: ["127.0.0.1"],
    )
    with pytest.raises(UrlFetchFailed, match="SSL"):
        fetch_image(f"https://images.internal:{port}/digit.png", named, ssl_context=trusting)


def test_fetched_images_together_are_capped_like_an_upload(
    tmp_path: Path, image_server: str
) -> None:
    # Each URL was capped at max_image_bytes but nothing capped their sum: 32 URLs of 20 MB
    # made one small request download 640 MB. 4 digits (1,016 bytes) fit in 1,024; 5 do not.
    with make_client(tmp_path, max_request_bytes=1024) as c:
        assert predict_json(c, [{"url": f"{image_server}/digit.png"}] * 4).status_code == 200
        r = predict_json(c, [{"url": f"{image_server}/digit.png"}] * 5)
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert detail.startswith("images[4]:") and "together" in detail, detail
        assert c.app.state.body_budget.in_transit == 0  # the fetch's reservation came back
