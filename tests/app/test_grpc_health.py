"""The standard gRPC health service's Watch (app/grpc_health.py) against a real `python -m app`
serving a copy of the shipped digits and products bundles: the status at once and on every
change (a bundle removed and put back), SERVICE_UNKNOWN for a name that is not a model with the
call kept open, the key for a model's watch, NOT_SERVING then the end of the stream when the
server stops, the bound on watches answered UNIMPLEMENTED, and gRPC's own client-side health
checking (a channel configured to watch) routing only to a server that says SERVING.

Messages are encoded by hand (the request's field 1: the service name; the answer's field 1:
1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN), so the wire format is checked independently of
the server's message classes (test_grpc_oip.py covers Check)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
import pytest

from app.grpc_health import WATCH_TICK_S, WATCHES_PER_PEER
from tests.conftest import ROOT, free_port
from tests.live_server import LiveServer, grpc_env, live_server

pytestmark = pytest.mark.slow  # a gRPC server per module (round 29: the fast subset in 2 min)

KEY = "watch-test-key"
AUTH = (("x-api-key", KEY),)
SERVING, NOT_SERVING, SERVICE_UNKNOWN = b"\x08\x01", b"\x08\x02", b"\x08\x03"
WATCH = "/grpc.health.v1.Health/Watch"
POLL_S = 0.2


def encoded(service: str) -> bytes:
    """Field 1, length-delimited: its length as a base-128 varint, then the bytes."""
    name, size, n = service.encode(), b"", len(service.encode())
    while True:
        size += bytes([(n & 0x7F) | (0x80 if n > 0x7F else 0)])
        n >>= 7
        if not n:
            break
    return b"\x0a" + size + name if name else b""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int, Path]]:
    """One worker on a copy of two small bundles, polling its models folder every POLL_S."""
    tmp_path = tmp_path_factory.mktemp("watch")
    models = tmp_path / "models"
    for name in ("digits", "products"):
        shutil.copytree(ROOT / "models" / name, models / name)
    port = free_port()
    env = {
        "IMGCLASS_MODELS_DIR": str(models),
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_GRPC_PORT": str(port),
        "IMGCLASS_API_KEY": KEY,
        "IMGCLASS_API_KEY_FOR_READS": "true",
        "IMGCLASS_MODEL_POLL_SECONDS": str(POLL_S),
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path, env, entry="app") as server:
        yield server, port, models


def watch(channel: grpc.Channel, service: str, **kw: Any) -> Any:
    call = channel.unary_stream(WATCH)(encoded(service), timeout=60, **kw)
    return call


def next_within(call: Any, seconds: float) -> bytes:
    """The watch's next message, failing the test if none comes within `seconds`."""
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(next(call, None)), daemon=True)
    reader.start()
    reader.join(seconds)
    assert got, f"no message within {seconds} s"
    assert got[0] is not None, "the stream ended"
    return bytes(got[0])


def first_answer(call: Any, seconds: float) -> bytes | grpc.StatusCode | None:
    """The watch's first message, or the status code that ended it, or None after `seconds`."""
    got: list[Any] = []

    def read() -> None:
        try:
            got.append(next(call, None))
        except grpc.RpcError as exc:
            got.append(exc.code())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    return got[0] if got else None


def test_watch_sends_the_status_at_once_and_on_every_change(
    served: tuple[LiveServer, int, Path],
) -> None:
    _, port, models = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        server_wide = watch(channel, "")  # no key needed, like /readyz
        digits = watch(channel, "digits", metadata=AUTH)
        later = watch(channel, "later", metadata=AUTH)
        assert next_within(server_wide, 5) == SERVING
        assert next_within(digits, 5) == SERVING
        assert next_within(later, 5) == SERVICE_UNKNOWN  # and the call stays open
        assert later.is_active()

        moved = models.parent / "digits-away"
        (models / "digits").rename(moved)  # the bundle leaves: the model is gone
        assert next_within(digits, 5 + WATCH_TICK_S) == SERVICE_UNKNOWN
        # A model of that name comes, whole: made beside the folder and renamed into it, as a
        # deploy does (copied in place, the poller could see it still named "digits" and
        # refused: a NOT_SERVING before the SERVING, in one full run under load)
        staged = models.parent / "later-staged"
        shutil.copytree(moved, staged)
        meta = staged / "metadata.json"
        doc = json.loads(meta.read_text())
        doc["name"] = "later"
        meta.write_text(json.dumps(doc))
        staged.rename(models / "later")
        moved.rename(models / "digits")
        assert next_within(digits, 10 + WATCH_TICK_S) == SERVING
        assert next_within(later, 10 + WATCH_TICK_S) == SERVING
        assert server_wide.is_active()  # products stayed: the server never stopped serving
        for call in (server_wide, digits, later):
            call.cancel()


def test_a_models_watch_needs_the_key_and_a_bad_message_is_refused(
    served: tuple[LiveServer, int, Path],
) -> None:
    _, port, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as info:
            next(watch(channel, "digits"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "x-api-key" in str(info.value.details())
        with pytest.raises(grpc.RpcError) as info:
            next(channel.unary_stream(WATCH)(b"\xff\xff\xff", timeout=10))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watches_past_the_bound_are_unimplemented_so_clients_treat_the_server_as_healthy(
    served: tuple[LiveServer, int, Path],
) -> None:
    server, port, _ = served
    wait_for_no_watches(server)  # earlier tests' cancelled watches have given their places back
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        held = [watch(channel, "") for _ in range(WATCHES_PER_PEER)]
        for call in held:
            assert next_within(call, 5) == SERVING
        assert open_watches(server) == WATCHES_PER_PEER
        with pytest.raises(grpc.RpcError) as info:
            next(watch(channel, ""))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "treats the server as healthy" in str(info.value.details())
        held.pop().cancel()  # a place comes back once a watch ends
        deadline = time.monotonic() + 5
        while (answer := first_answer(watch(channel, ""), 5)) != SERVING:
            # refused until the cancelled watch has ended (the refusal ends the call in the
            # reading thread, which next_within took for "no message": round 28)
            assert answer == grpc.StatusCode.UNIMPLEMENTED, answer
            assert time.monotonic() < deadline, "the cancelled watch's place never came back"
            time.sleep(0.2)
        for call in held:
            call.cancel()
    wait_for_no_watches(server)  # each ends within a moment of its cancel


def wait_for_no_watches(server: LiveServer) -> None:
    deadline = time.monotonic() + 5
    while open_watches(server) != 0:
        assert time.monotonic() < deadline, open_watches(server)
        time.sleep(0.1)
    time.sleep(0.1)  # the gauge drops just before the place is given back


def open_watches(server: LiveServer) -> float:
    """imgclass_grpc_health_watches from the server's /metrics."""
    text = httpx.get(f"{server.base}/metrics", headers=dict(AUTH), timeout=10).text
    line = next(x for x in text.splitlines() if x.startswith("imgclass_grpc_health_watches "))
    return float(line.split()[1])


def config(service: str) -> list[tuple[str, str]]:
    """A channel whose service config asks gRPC itself to watch the server (round_robin with
    healthCheckConfig, gRPC's A17)."""
    health = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {}}
    health["healthCheckConfig"] = {"serviceName": service}
    return [("grpc.service_config", json.dumps(health))]


@pytest.mark.slow  # a server of its own
def test_client_side_health_checking_then_a_stopping_server_says_not_serving(
    tmp_path: Path,
) -> None:
    """gRPC's own client-side health checking routes calls to the server while the watched
    name is SERVING and never while it is SERVICE_UNKNOWN; when the server stops, a watch
    hears NOT_SERVING and its stream ends without error (no key here: a client's own health
    checking sends no call metadata)."""
    port = free_port()
    env = grpc_env(port)
    live = "/inference.GRPCInferenceService/ServerLive"
    address = f"127.0.0.1:{port}"
    got: list[bytes] = []
    with grpc.insecure_channel(address) as channel:
        with live_server(tmp_path, env, entry="app"):
            for service in ("", "digits"):
                with grpc.insecure_channel(address, options=config(service)) as watched:
                    answer = watched.unary_unary(live)(b"", timeout=10, wait_for_ready=True)
                    assert answer == b"\x08\x01"  # live: true
            with grpc.insecure_channel(address, options=config("no-model")) as watched:
                with pytest.raises(grpc.RpcError) as info:
                    watched.unary_unary(live)(b"", timeout=3, wait_for_ready=True)
                assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            call = watch(channel, "")
            got.append(next_within(call, 10))
        # live_server's exit sent SIGTERM and waited for the process to end
        got.extend(bytes(m) for m in call)  # the rest of the stream; it ends without error
        assert call.code() == grpc.StatusCode.OK
    assert got == [SERVING, NOT_SERVING]


def test_a_name_longer_than_any_model_is_refused_at_once(
    served: tuple[LiveServer, int, Path],
) -> None:
    """Round 27: a watch looked its name up every second; 32 watches of 8 MiB names kept a core
    busy and the process 700 MB larger."""
    _, port, _ = served
    long_name = "m" * 257
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for call in (
            lambda: next(watch(channel, long_name, metadata=AUTH)),
            lambda: channel.unary_unary("/grpc.health.v1.Health/Check")(
                encoded(long_name), timeout=10, metadata=AUTH
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "257 characters" in str(info.value.details())
        assert next_within(watch(channel, "m" * 256, metadata=AUTH), 5) == SERVICE_UNKNOWN


@pytest.mark.slow  # servers of their own
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_tells_watchers_at_once_while_http_still_drains(
    tmp_path: Path, workers: int
) -> None:
    """Round 27: the health service said SERVING until uvicorn had drained HTTP, which waits
    for uploads in flight up to the body timeout (64 s with one stalled upload; Kubernetes
    kills after 30 s). Now SIGTERM turns it NOT_SERVING at once and lets the port go."""
    port = free_port()
    env = grpc_env(port, workers, IMGCLASS_BODY_TIMEOUT_S="30")
    check = "/grpc.health.v1.Health/Check"
    with live_server(tmp_path, env, entry="app") as server:
        parent = next(
            p
            for p in psutil.process_iter(["cmdline", "environ"])
            if (p.info["cmdline"] or [])[-2:] == ["-m", "app"]
            and (p.info["environ"] or {}).get("IMGCLASS_PORT") == str(server.port)
        )
        with (
            socket.create_connection(("127.0.0.1", server.port)) as stalled,
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            stalled.sendall(
                b"POST /v1/models/digits/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: image/png\r\nContent-Length: 100000\r\n\r\n" + b"\x89PNG"
            )
            time.sleep(0.5)  # the upload is in flight
            watches = [watch(channel, "") for _ in range(3)]  # one process at least gets one
            assert all(next_within(w, 10) == SERVING for w in watches)
            parent.terminate()
            t0 = time.monotonic()
            for w in watches:
                assert next_within(w, 5) == NOT_SERVING
            assert time.monotonic() - t0 < 5
            assert parent.is_running()  # still draining the stalled upload
            # and the port is let go at once (round 42): a new call is refused, so a client's
            # check or a load balancer's probe sees an unhealthy server all the same
            with pytest.raises(grpc.RpcError) as refused:
                channel.unary_unary(check)(b"", timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


class FreezingProxy:
    """A TCP proxy to `port` that can stop passing bytes without closing anything: a client
    whose network vanished (its machine gone, a NAT entry dropped) as the server sees it."""

    def __init__(self, port: int) -> None:
        self.target, self.frozen = port, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pass, args=(a, b), daemon=True).start()

    def _pass(self, source: socket.socket, sink: socket.socket) -> None:
        while not self.frozen.is_set():
            try:
                data = source.recv(65536)
                if not data or self.frozen.is_set():
                    return  # frozen: what arrives now is never passed on
                sink.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow  # a server of its own
def test_a_vanished_clients_watch_frees_its_place_after_the_keepalive(tmp_path: Path) -> None:
    """Round 28: a watch from a client whose network vanished is ended by gRPC keepalive
    (IMGCLASS_GRPC_KEEPALIVE_S, then IMGCLASS_GRPC_KEEPALIVE_TIMEOUT_S for the ping's answer),
    so such clients cannot hold the process's WATCHES places for good."""
    port = free_port()
    env = grpc_env(port, IMGCLASS_GRPC_KEEPALIVE_S="1", IMGCLASS_GRPC_KEEPALIVE_TIMEOUT_S="1")
    proxy = FreezingProxy(port)
    try:
        with (
            live_server(tmp_path, env, entry="app") as server,
            grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel,
        ):
            call = watch(channel, "")
            assert next_within(call, 10) == SERVING
            time.sleep(3)  # pings come and are answered: a quiet, healthy watch stays
            assert open_watches(server) == 1
            proxy.frozen.set()
            started = time.monotonic()
            while open_watches(server) != 0:
                assert time.monotonic() - started < 15, "the vanished watch was kept"
                time.sleep(0.2)
            call.cancel()
    finally:
        proxy.close()


def counted(server: LiveServer, route: str, status: str) -> float:
    """imgclass_requests_total for one gRPC route and status (0 before the first)."""
    text = httpx.get(f"{server.base}/metrics", headers=dict(AUTH), timeout=10).text
    want = (f'route="{route}"', f'status="{status}"')
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("imgclass_requests_total{") and all(w in line for w in want)
    )


def test_every_probe_and_watch_is_counted_like_an_http_request(
    served: tuple[LiveServer, int, Path],
) -> None:
    """Round 28: ServerLive, ServerReady and the server-wide Check answered without a trace in
    /metrics (HTTP counts /healthz and /readyz), and watches were never counted."""
    server, port, _ = served
    routes = ("grpc ServerLive", "grpc ServerReady", "grpc Health.Check")
    before = {r: counted(server, r, "200") for r in routes}
    watches_before = counted(server, "grpc Health.Watch", "499")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        for _ in range(3):
            channel.unary_unary("/inference.GRPCInferenceService/ServerLive")(b"", timeout=10)
            channel.unary_unary("/inference.GRPCInferenceService/ServerReady")(b"", timeout=10)
            assert channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10) == SERVING
        call = watch(channel, "")
        assert next_within(call, 5) == SERVING
        call.cancel()  # the client leaves: counted as a cancelled call (499), like HTTP's
    wait_for_no_watches(server)
    assert {r: counted(server, r, "200") - before[r] for r in routes} == dict.fromkeys(routes, 3)
    assert counted(server, "grpc Health.Watch", "499") == watches_before + 1
