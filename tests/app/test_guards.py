"""Safe defaults: Host allow-list (DNS rebinding), no cross-site state change, writes refused
beyond loopback without a key, refused-bundle reasons only for key holders, async probes."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.deps import open_writes_warning
from app.api.guards import (
    IDENTITY,
    OIP_CONTENT_CODINGS,
    coding_refusal,
    host_allowed,
    host_syntax_ok,
    is_loopback,
    repeated_query_name,
    split_host,
)
from app.api.health import healthz, readyz
from app.main import create_app
from tests.conftest import make_settings


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (28, 28), 30).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def make(tiny_models_dir: Path, tmp_path: Path) -> Iterator[object]:
    clients: list[TestClient] = []

    def factory(models: Path | None = None, **overrides: object) -> TestClient:
        c = TestClient(create_app(make_settings(models or tiny_models_dir, tmp_path, **overrides)))
        c.__enter__()
        clients.append(c)
        return c

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


def test_host_parsing() -> None:
    assert split_host("LocalHost:8000") == "localhost"
    assert split_host("[::1]:8000") == "[::1]"
    assert host_allowed("app.localhost:1", ["*.localhost"])
    assert not host_allowed("localhost.evil.com", ["localhost", "*.localhost"])
    assert not host_allowed("", ["localhost"])
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_default_hosts_refuse_a_rebound_name(make) -> None:  # type: ignore[no-untyped-def]
    c = make(allowed_hosts=["localhost", "127.0.0.1", "[::1]"])
    for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
        assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
    r = c.get("/v1/models", headers={"host": "attacker.example:8000"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "IMGCLASS_ALLOWED_HOSTS" in r.json()["detail"]
    # Probes answer whatever name a load balancer uses.
    assert c.get("/healthz", headers={"host": "10.0.0.7:8000"}).status_code == 200


BAD_HOSTS = [
    "localhost:8714@evil.com",
    "evil.com#.localhost",
    "localhost:8714 evil",
    "localhost:abc",
    "..localhost",
    "127.0.0.1:99999",
    "localhost:",
    "[::1",
    "[nope]:80",
    "local host",
    "localhost/x",
]


def test_host_syntax() -> None:
    for good in ("localhost", "LocalHost:8000", "127.0.0.1:8000", "[::1]:8000", "a.b-c_d.example.",
                 "app.localhost:1", "[2001:db8::1]"):  # fmt: skip
        assert host_syntax_ok(good), good
    for bad in BAD_HOSTS:
        assert not host_syntax_ok(bad), bad


@pytest.mark.parametrize("allowed", [["localhost", "*.localhost", "127.0.0.1"], ["*"]])
def test_a_malformed_host_is_a_400(make, allowed: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Fuzz round 14: these passed the allow-list on their first or last part (200)."""
    c = make(allowed_hosts=allowed)
    for host in BAD_HOSTS:
        r = c.get("/v1/models", headers={"host": host})
        assert r.status_code == 400, host
        assert "not a host name or address" in r.json()["detail"]
        assert c.get("/healthz", headers={"host": host}).status_code == 400, host


def test_star_turns_the_host_check_off(make) -> None:  # type: ignore[no-untyped-def]
    c = make(allowed_hosts=["*"])
    assert c.get("/v1/models", headers={"host": "anything.example"}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"origin": "https://evil.example"}, 403),
        ({"origin": "null"}, 403),
        ({"sec-fetch-site": "cross-site"}, 403),
        ({"origin": "http://testserver"}, 200),  # the page itself
        ({"sec-fetch-site": "same-origin"}, 200),
        ({}, 200),  # curl, SDKs
    ],
)
def test_cross_site_posts_are_refused(make, headers: dict[str, str], status: int) -> None:  # type: ignore[no-untyped-def]
    c = make()
    r = c.post("/v1/catalogs", json={"name": "c", "model": "tiny"}, headers=headers)
    assert r.status_code == (201 if status == 200 else status), r.text
    if status == 403:
        assert r.json()["type"].endswith("cross-site-request")
        assert c.get("/v1/catalogs/c").status_code == 404
    # Multipart is a CORS "simple" request: no preflight protects it, the guard does.
    r = c.post(
        "/v1/catalogs/c/items", files={"file": ("a.png", _png(), "image/png")}, headers=headers
    )
    assert (r.status_code == 403) == (status == 403), r.text


def test_cross_site_write_never_reaches_the_store(make) -> None:  # type: ignore[no-untyped-def]
    c = make()
    body = {"name": "csrf", "model": "tiny"}
    r = c.post("/v1/catalogs", json=body, headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    assert c.get("/v1/catalogs/csrf").status_code == 404
    listed = make(cors_origins=["https://trusted.example"])
    r = listed.post("/v1/catalogs", json=body, headers={"origin": "https://trusted.example"})
    assert r.status_code == 201, r.text


def test_beyond_loopback_without_key_refuses_writes(make) -> None:  # type: ignore[no-untyped-def]
    c = make(host="0.0.0.0")
    r = c.post("/v1/catalogs", json={"name": "x", "model": "tiny"})
    assert r.status_code == 401
    detail = r.json()["detail"]
    assert "IMGCLASS_API_KEY" in detail and "IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES" in detail
    assert c.get("/v1/catalogs").status_code == 200  # reads stay open
    assert c.get("/v1/access").json()["writes_enabled"] is False
    opted = make(host="0.0.0.0", allow_unauthenticated_writes=True)
    assert opted.post("/v1/catalogs", json={"name": "y", "model": "tiny"}).status_code == 201
    keyed = make(host="0.0.0.0", api_key="k" * 24)
    r = keyed.post(
        "/v1/catalogs", json={"name": "z", "model": "tiny"}, headers={"x-api-key": "k" * 24}
    )
    assert r.status_code == 201


def test_access_tells_the_page_what_to_send(make) -> None:  # type: ignore[no-untyped-def]
    open_ = make().get("/v1/access").json()
    assert open_ == {
        "key_required_for_reads": False,
        "key_required_for_writes": False,
        "writes_enabled": True,
        "key_accepted": False,
    }
    c = make(api_key="secret-key-123", api_key_for_reads=True)
    assert c.get("/v1/access").json()["key_required_for_reads"] is True
    assert c.get("/v1/access", headers={"x-api-key": "wrong"}).json()["key_accepted"] is False
    assert c.get("/v1/access", headers={"x-api-key": "secret-key-123"}).json()["key_accepted"]


def test_a_key_sent_twice_is_no_key(make) -> None:  # type: ignore[no-untyped-def]
    """HTTP read a repeated X-API-Key as its first copy and gRPC as its last: a key header
    sent more than once now presents no key on both doors, and the 401 says to send it once."""
    c = make(api_key="secret-key-123", api_key_for_reads=True)
    for twice in (["secret-key-123"] * 2, ["secret-key-123", "wrong"], ["wrong", "secret-key-123"]):
        headers = [("x-api-key", k) for k in twice]
        assert c.get("/v1/access", headers=headers).json()["key_accepted"] is False
        r = c.get("/v1/models", headers=headers)
        assert r.status_code == 401 and "once" in r.json()["detail"]
    bearer = [("authorization", "Bearer secret-key-123")] * 2
    assert c.get("/v1/models", headers=bearer).status_code == 401
    mixed = [("x-api-key", "secret-key-123"), ("authorization", "Bearer other")]
    assert c.get("/v1/models", headers=mixed).status_code == 200  # x-api-key wins, as documented
    # round 21: a tab after Bearer is whitespace like a space
    assert (
        c.get("/v1/models", headers={"authorization": "Bearer\tsecret-key-123"}).status_code == 200
    )


def test_a_non_ascii_key_is_matched_on_its_utf8_bytes(make) -> None:  # type: ignore[no-untyped-def]
    """Header values arrive decoded as Latin-1; curl and browsers send a key's UTF-8 bytes.
    Comparing the decoded text's UTF-8 left every non-ASCII key unmatchable (401 always)."""
    key = "s3cr3t-k\u00e9y-\u043a\u043b\u044e\u0447"
    c = make(api_key=key, api_key_for_reads=True)

    def accepted(headers: dict[str, bytes]) -> bool:
        return bool(c.get("/v1/access", headers=headers).json()["key_accepted"])

    assert accepted({"x-api-key": key.encode()})
    assert accepted({"authorization": b"Bearer " + key.encode()})
    assert not accepted({"x-api-key": key.encode()[:-1]})
    assert not accepted({"x-api-key": "s3cr3t-k\u00e9y".encode("latin-1")})


def test_refused_reasons_only_for_key_holders(make, tiny_models_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    shutil.copytree(tiny_models_dir / "tiny", models / "broken")
    meta = json.loads((models / "broken/metadata.json").read_text())
    meta["name"] = "broken"
    meta["artifact"]["sha256"] = "0" * 64
    (models / "broken/metadata.json").write_text(json.dumps(meta))
    c = make(models, api_key="secret-key-123")
    ready = c.get("/readyz").json()
    assert ready["refused"] == [{"name": "broken", "reason": None}]
    public = c.get("/v1/models").json()["refused"]
    assert public == [{"name": "broken", "reason": None}]
    assert str(models) not in c.get("/v1/models").text
    held = c.get("/v1/models", headers={"x-api-key": "secret-key-123"}).json()["refused"]
    assert held[0]["reason"] and "sha256" in held[0]["reason"]


def test_probes_answer_while_the_thread_pool_is_busy(make) -> None:  # type: ignore[no-untyped-def]
    """Sync routes and sync dependencies queue in anyio's thread pool behind decodes; the
    probes (and the dependencies they use) must not."""
    assert asyncio.iscoroutinefunction(healthz) and asyncio.iscoroutinefunction(readyz)
    c = make()
    release = threading.Event()
    watchdog = threading.Timer(5.0, release.set)  # frees the pool if a probe would block
    watchdog.start()

    def fill_pool() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

    assert c.portal is not None
    c.portal.call(fill_pool)
    c.portal.start_task_soon(anyio.to_thread.run_sync, release.wait)
    try:
        t0 = time.monotonic()
        for path in ("/healthz", "/readyz"):
            assert c.get(path).status_code == 200
        assert time.monotonic() - t0 < 4.0, "a probe waited for the busy thread pool"
    finally:
        release.set()
        watchdog.cancel()


@pytest.mark.parametrize(("address", "locked"), [("192.168.1.5", True), ("127.0.0.1", False)])
def test_a_connection_on_a_public_interface_locks_writes_whatever_the_setting(
    tiny_models_dir: Path, tmp_path: Path, address: str, locked: bool
) -> None:
    """`uvicorn --host 0.0.0.0` with IMGCLASS_HOST left at 127.0.0.1: the local address the
    request arrived on (ASGI scope 'server') decides."""
    app = create_app(make_settings(tiny_models_dir, tmp_path, allowed_hosts=["*"]))

    async def run() -> tuple[int, bool]:
        transport = httpx.ASGITransport(app=app)  # scope["server"] comes from the URL
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{address}:8000") as c:
            access = (await c.get("/v1/access")).json()
            r = await c.post("/v1/catalogs/none/items", content=b"x")
            return r.status_code, access["writes_enabled"]

    status, enabled = asyncio.run(run())
    assert enabled is not locked
    assert (status == 401) is locked, status


@pytest.mark.parametrize(
    ("headers", "codings", "status"),
    [
        ([], IDENTITY, None),
        ([(b"Transfer-Encoding", b"chunked")], IDENTITY, None),
        ([(b"transfer-encoding", b"gzip, chunked")], IDENTITY, 400),
        ([(b"transfer-encoding", b"chunked"), (b"transfer-encoding", b"br")], IDENTITY, 400),
        ([(b"content-encoding", b"identity")], IDENTITY, None),
        ([(b"content-encoding", b"gzip")], IDENTITY, 415),
        ([(b"content-encoding", b"gzip")], OIP_CONTENT_CODINGS, None),  # v2 infer inflates it
        ([(b"content-encoding", b"deflate")], OIP_CONTENT_CODINGS, None),
        ([(b"content-encoding", b"br")], OIP_CONTENT_CODINGS, 415),
    ],
)
def test_body_codings(
    headers: list[tuple[bytes, bytes]], codings: frozenset[str], status: int | None
) -> None:
    refusal = coding_refusal(headers, codings)
    assert (refusal[0] if refusal else None) == status


def test_the_v2_route_still_takes_gzip_and_other_routes_say_why_not(make) -> None:  # type: ignore[no-untyped-def]
    """The guard refuses compressed bodies (they were read as raw bytes), but the Open
    Inference Protocol route inflates gzip/deflate (tritonclient's request compression)."""
    client = make()
    r = client.post(
        "/v1/models/tiny/predict",
        content=b"\x1f\x8b-not-really",
        headers={"Content-Encoding": "gzip", "Content-Type": "image/png"},
    )
    assert r.status_code == 415 and "uncompressed" in r.json()["detail"]
    assert r.json()["type"].endswith("unsupported-content-coding")
    r = client.post(
        "/v2/models/tiny/infer", content=b"not gzip", headers={"Content-Encoding": "gzip"}
    )
    assert r.status_code == 400 and "could not be decompressed" in r.json()["error"]


@pytest.mark.parametrize(
    ("query", "repeated"),
    [
        (b"", None),
        (b"top_k=3&similar=2", None),
        (b"top_k=3&top_k=9", "top_k"),
        (b"a=&b=1&a", "a"),  # blank values count
        (b"t%6Fp_k=1&top_k=2", "top_k"),  # percent-decoded names
    ],
)
def test_repeated_query_name(query: bytes, repeated: str | None) -> None:
    assert repeated_query_name(query) == repeated


def test_a_query_parameter_given_twice_is_a_422(make) -> None:  # type: ignore[no-untyped-def]
    """`?top_k=1&top_k=1000`: the last one won, silently; now the client is told. On /v2 it is
    a 400, like every other request-validation error there."""
    client = make()
    r = client.get("/v1/models?x=1&x=2")
    assert r.status_code == 422 and "query.x: given more than once" in r.json()["detail"]
    assert r.json()["errors"][0]["loc"] == ["query", "x"]
    r = client.post("/v2/models/tiny/infer?a=1&a=1", json={})
    assert r.status_code == 400 and "more than once" in r.json()["error"]


def test_a_415_says_which_content_codings_are_accepted(make) -> None:  # type: ignore[no-untyped-def]
    """RFC 9110 15.5.16 (round 26): the 415 for a content coding carried no Accept-Encoding."""
    client = make()
    brotli = {"Content-Encoding": "br", "Content-Type": "image/png"}
    r = client.post("/v1/models/tiny/predict", content=b"x", headers=brotli)
    assert r.status_code == 415 and r.headers["accept-encoding"] == "identity"
    r = client.post("/v2/models/tiny/infer", content=b"x", headers=brotli)
    assert r.status_code == 415 and r.headers["accept-encoding"] == "deflate, gzip, x-gzip"
    assert set(r.json()) == {"error"}
    r = client.post("/v1/models/tiny/predict", content=b"x", headers={"Transfer-Encoding": "gz"})
    assert r.status_code == 400 and "accept-encoding" not in r.headers  # not a content coding


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/tiny%2Fpredict",
        "/v1/catalogs/c1%2fitems%2Fitem1%2Fimage",
        "/v1/models/tiny%5Cpredict",
        "/v2/models/tiny%2Fready",
    ],
)
def test_an_encoded_slash_in_the_path_is_a_400(make, path: str) -> None:  # type: ignore[no-untyped-def]
    """Round 26: %2F was decoded into a separator before routing, so `/v1/models/x%2Fdownload`
    downloaded the model past any proxy rule written for `*/download`."""
    client = make()
    r = client.post(path, content=b"x") if "predict" in path else client.get(path)
    assert r.status_code == 400, (path, r.text)
    said = r.json()["error"] if path.startswith("/v2/") else r.json()["detail"]
    assert "%2F or %5C" in said
    # encoded characters other than the separators are decoded as before
    assert client.get("/v1/models/t%69ny").status_code == 200
    assert client.get("/v1/models?x=a%2Fb").status_code == 422  # the query is not the path


@pytest.mark.parametrize(
    ("published", "locked"),
    [
        ("127.0.0.1", False),
        ("localhost", False),
        ("[::1]", False),
        ("0.0.0.0", True),
        ("192.0.2.7", True),
    ],
)
def test_where_a_containers_port_is_published_decides_writes_without_a_key(
    tiny_models_dir: Path, tmp_path: Path, published: str, locked: bool
) -> None:
    """Inside a container the server listens on 0.0.0.0 and requests arrive on its own
    interface; compose passes where the host publishes the port (IMGCLASS_BIND) and that alone
    decides. Round 42: compose set the opt-out instead, so IMGCLASS_BIND=0.0.0.0 alone let
    anyone on the network write."""
    settings = make_settings(
        tiny_models_dir, tmp_path, allowed_hosts=["*"], host="0.0.0.0", published_on=published
    )
    app = create_app(settings)

    async def run() -> tuple[int, str, bool]:
        transport = httpx.ASGITransport(app=app)  # a container's interface
        async with httpx.AsyncClient(transport=transport, base_url="http://172.18.0.2:8000") as c:
            access = (await c.get("/v1/access")).json()
            r = await c.post("/v1/catalogs", json={"name": "x", "model": "tiny"})
            return r.status_code, r.text, access["writes_enabled"]

    status, text, enabled = asyncio.run(run())
    assert enabled is not locked
    assert (status == 401) is locked, text
    if locked:
        assert f"published on {published}" in text and "IMGCLASS_API_KEY" in text
    warning = open_writes_warning(
        settings.model_copy(update={"allow_unauthenticated_writes": True})
    )
    assert (warning is not None) is locked  # the opt-out on a published port is said at start-up
    assert open_writes_warning(settings) is None  # writes are not open: nothing to warn of


def test_probes_ignore_their_query_even_repeated(make) -> None:  # type: ignore[no-untyped-def]
    """Round 44: `/healthz?x=1` was 200 but `/healthz?x=1&x=2` a 422: a liveness probe with a
    cache-buster given twice failed. Probes take no parameters and read none."""
    client = make()
    for path in ("/healthz", "/readyz"):
        assert client.get(f"{path}?x=1&x=2").status_code in (200, 503)
    assert client.get("/v1/models?x=1&x=2").status_code == 422
