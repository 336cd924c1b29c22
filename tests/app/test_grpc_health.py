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
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from app.grpc_health import WATCH_TICK_S, WATCHES_PER_PEER
from tests.conftest import ROOT, free_port
from tests.live_server import LiveServer, live_server

KEY = "watch-test-key"
AUTH = (("x-api-key", KEY),)
SERVING, NOT_SERVING, SERVICE_UNKNOWN = b"\x08\x01", b"\x08\x02", b"\x08\x03"
WATCH = "/grpc.health.v1.Health/Watch"
POLL_S = 0.2


def encoded(service: str) -> bytes:
    name = service.encode()
    return b"\x0a" + bytes([len(name)]) + name if name else b""


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
        shutil.copytree(moved, models / "later")  # a model of that name comes
        meta = models / "later" / "metadata.json"
        doc = json.loads(meta.read_text())
        doc["name"] = "later"
        meta.write_text(json.dumps(doc))
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
    _, port, _ = served
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        held = [watch(channel, "") for _ in range(WATCHES_PER_PEER)]
        for call in held:
            assert next_within(call, 5) == SERVING
        with pytest.raises(grpc.RpcError) as info:
            next(watch(channel, ""))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "treats the server as healthy" in str(info.value.details())
        held.pop().cancel()  # a place comes back once a watch ends
        deadline = time.monotonic() + 5
        while True:
            try:
                assert next_within(watch(channel, ""), 5) == SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the cancelled watch's place never came back"
                time.sleep(0.2)
        for call in held:
            call.cancel()


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
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_GRPC_PORT": str(port),
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
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
