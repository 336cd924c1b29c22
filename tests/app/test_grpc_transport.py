"""The gRPC port's transport options (app/grpc_ports.py `server_options`) and the body budget
under gRPC, against a real `python -m app` (round 28): messages of calls that get no place are
not read ahead into memory, a message the gRPC limit allows is never told to retry forever, and
keepalive pings close a connection that went quiet without making any call, and a client
resetting streams as fast as it opens them (HTTP/2 "rapid reset") does not starve health
checks."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest

from tests.conftest import free_port
from tests.live_server import LiveServer, grpc_env, live_server

pb = pytest.importorskip("tritonclient.grpc.service_pb2", reason="pip install tritonclient grpcio")

INFER = "/inference.GRPCInferenceService/ModelInfer"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, SETTINGS_ACK = (
    b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    b"\x00\x00\x00\x04\x01\x00\x00\x00\x00",
)


def junk_request(size: int) -> bytes:
    """A ModelInfer message carrying `size` bytes that are not an image (INVALID_ARGUMENT once
    read: the answer says the message was taken in)."""
    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(size.to_bytes(4, "little") + b"\0" * size)
    return bytes(request.SerializeToString())


def server_process(server: LiveServer) -> psutil.Process:
    return next(
        p
        for p in psutil.process_iter(["cmdline", "environ"])
        if (p.info["cmdline"] or [])[-2:] == ["-m", "app"]
        and (p.info["environ"] or {}).get("IMGCLASS_PORT") == str(server.port)
    )


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A server whose body budget (4 MB) is below the gRPC message limit (8 MiB), with
    keepalive pings every second."""
    tmp = tmp_path_factory.mktemp("grpc-transport")
    port = free_port()
    env = grpc_env(
        port,
        IMGCLASS_MAX_BODY_BYTES_IN_FLIGHT="4000000",
        IMGCLASS_MAX_REQUEST_BYTES="3000000",
        IMGCLASS_TEACH_MAX_ZIP_BYTES="3000000",
        IMGCLASS_GRPC_KEEPALIVE_S="1",
        IMGCLASS_GRPC_KEEPALIVE_TIMEOUT_S="1",
    )
    with live_server(tmp, env, entry="app"):
        yield port


@pytest.mark.slow  # a server of its own
def test_a_message_the_grpc_limit_allows_is_not_told_to_retry_forever(small_budget: int) -> None:
    """Round 28: a 5 MB message under the 8 MiB gRPC limit but over a 4 MB body budget was
    answered UNAVAILABLE "retry in 1 s" every time, on an idle server: the budget is raised to
    the largest message any door accepts, the gRPC port's included."""
    with grpc.insecure_channel(f"127.0.0.1:{small_budget}") as channel:
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(INFER)(junk_request(5_000_000), timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()


@pytest.mark.slow  # a server of its own
def test_a_connection_that_never_makes_a_call_is_pinged_and_closed(small_budget: int) -> None:
    """Round 28: keepalive pinged only connections with a call in flight; one that finished
    the HTTP/2 greeting and went quiet (answering nothing more) stayed open for good. Now it is
    pinged too and closed when the ping is not answered (1 s + 1 s here)."""
    with socket.create_connection(("127.0.0.1", small_budget)) as sock:
        sock.sendall(PREFACE + SETTINGS)
        sock.settimeout(0.5)
        started, acked, closed = time.monotonic(), False, False
        while time.monotonic() - started < 15:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            if not acked:  # the server's SETTINGS, answered once; its pings never are
                sock.sendall(SETTINGS_ACK)
                acked = True
        assert closed, "the quiet connection was kept"
        assert time.monotonic() - started > 1.5  # by keepalive, not at once


@pytest.mark.slow  # a server of its own; 80 clients send 8 MiB each
def test_messages_of_calls_without_a_place_are_not_read_ahead(tmp_path: Path) -> None:
    """Round 28: with gRPC's window probing the transport read every client's message, about
    8 MiB a connection, before the call was refused for want of a place: 80 clients sending an
    8 MiB message at once took the process +830 MB, 160 clients +1.58 GB. With fixed stream
    windows only the 8 calls that hold a place read theirs (+314 MB for 80, +335 for 160)."""
    port = free_port()
    message = junk_request((8 << 20) - 200)
    with live_server(tmp_path, grpc_env(port), entry="app") as server:
        process = server_process(server)
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}") for _ in range(80)]
        try:
            for channel in channels:
                grpc.channel_ready_future(channel).result(timeout=10)
            base, peak, done = process.memory_info().rss, [0], threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.02)

            codes: list[grpc.StatusCode] = []

            def call(channel: grpc.Channel) -> None:
                try:
                    channel.unary_unary(INFER)(message, timeout=60)
                except grpc.RpcError as exc:
                    codes.append(exc.code())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            callers = [threading.Thread(target=call, args=(c,)) for c in channels]
            for t in callers:
                t.start()
            for t in callers:
                t.join(90)
            done.set()
            sampler.join()
        finally:
            for channel in channels:
                channel.close()
    assert len(codes) == 80 and set(codes) <= {
        grpc.StatusCode.INVALID_ARGUMENT,  # read, not an image
        grpc.StatusCode.UNAVAILABLE,  # no place: retry
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }, codes
    grown_mb = (peak[0] - base) / 2**20
    assert grown_mb < 450, f"+{grown_mb:.0f} MB while 80 clients sent 8 MiB each"


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def literal_headers(fields: list[tuple[str, str]]) -> bytes:
    """HPACK literal fields without indexing or Huffman coding (every length under 127)."""
    out = b""
    for name, value in fields:
        out += b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return out


@pytest.mark.slow  # a server of its own
def test_rapid_reset_does_not_starve_health_checks(tmp_path: Path) -> None:
    """Round 28: one raw client opening 100,000 streams and resetting each at once (about
    1.5 s) made 6-8 of 16-19 health checks from another connection fail (CANCELLED, or
    RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded") while /readyz said 200. A connection
    now has at most 100 streams open (`grpc.max_concurrent_streams`): every check answered."""
    port = free_port()
    with live_server(tmp_path, grpc_env(port), entry="app"):
        headers = literal_headers(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/inference.GRPCInferenceService/ServerLive"),
                (":authority", f"127.0.0.1:{port}"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ]
        )
        answers: list[object] = []
        done = threading.Event()

        def probe() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                while not done.is_set():
                    try:
                        answers.append(check(b"", timeout=3))
                    except grpc.RpcError as exc:
                        answers.append(exc.code())
                    time.sleep(0.05)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(PREFACE + SETTINGS + SETTINGS_ACK)
            sock.settimeout(0.001)
            for start in range(1, 200_001, 2_000):  # streams 1, 3, 5 ...: 100,000 of them
                burst = b"".join(
                    frame(1, 0x4, sid, headers) + frame(3, 0, sid, (8).to_bytes(4, "big"))
                    for sid in range(start, start + 2_000, 2)
                )
                try:
                    sock.sendall(burst)
                except OSError:
                    break  # the server closed the connection: also fine
                try:
                    sock.recv(1 << 20)  # take what the server sends, so it is never blocked
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
        time.sleep(1.0)
        done.set()
        prober.join(10)
    refused = [a for a in answers if a != b"\x08\x01"]
    assert len(answers) >= 10 and not refused, refused
