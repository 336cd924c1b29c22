"""The gRPC port: the checks before the workers start, each worker's bind, the server's
options, and its release when the process starts stopping."""

from __future__ import annotations

import concurrent.futures
import errno
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from app import draining
from app.errors import ConfigurationError
from app.settings import Settings
from app.tls_files import TlsFiles

SEND_MESSAGE_BYTES = 64 << 20  # the largest answer (a batch's embeddings)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's channel options."""
    return [
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_send_message_length", SEND_MESSAGE_BYTES),
        ("grpc.so_reuseport", 1),
        # a connection's TLS handshake or HTTP/2 preface within this (gRPC's own default held
        # one that sent nothing for 120 s, fuzz round 22)
        ("grpc.server_handshake_timeout_ms", 10_000),
        # a vanished client's connection closes within keepalive + timeout (its quiet health
        # watches held their places for hours, round 27): pings go on while no data flows
        # and on connections without calls, and grpcio 1.85 acts on a missing answer only
        # through ping_timeout (round 28)
        ("grpc.keepalive_time_ms", round(settings.grpc_keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", round(settings.grpc_keepalive_timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", round(settings.grpc_keepalive_timeout_s * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # fixed 64 KiB stream windows: with gRPC's window probing (BDP) the transport read the
        # messages of calls refused for want of a place, about 8 MiB per connection (160
        # clients: +1.58 GB); a 6 MiB upload at 40 ms round trip takes 0.4 s instead of 0.1
        ("grpc.http2.bdp_probe", 0),
        # at most 100 streams open per connection: without a limit one client opening and
        # resetting streams as fast as it could ("rapid reset") made other clients' health
        # checks fail (round 28); the server runs 8 inference calls per process at once
        ("grpc.max_concurrent_streams", 100),
    ]


def bind(server: grpc.Server, address: str, tls: TlsFiles | None) -> int:
    """`server` on `address`, over TLS with the certificate and key when given: the port, or
    0 when gRPC cannot bind it or use the pair."""
    try:
        if tls is None:
            return int(server.add_insecure_port(address))
        cert, key = Path(tls.cert).read_bytes(), tls.key_pem()
        return int(server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)])))
    except RuntimeError:
        return 0


def check_grpc_tls(tls: TlsFiles | None) -> None:
    """Before any worker starts: gRPC's TLS (BoringSSL) takes the certificate and key, which
    Python's OpenSSL accepted (DSA, Ed448 and RSA-PSS keys it does not: each worker failed
    with a traceback blaming the port, fuzz round 22)."""
    if tls is None:
        return
    probe = grpc.server(concurrent.futures.ThreadPoolExecutor(1))
    try:
        bound = bind(probe, "127.0.0.1:0", tls)
    finally:
        probe.stop(None)
    if not bound:
        raise ConfigurationError(
            f"gRPC cannot use IMGCLASS_TLS_CERTFILE={tls.cert} with its key (IMGCLASS_GRPC_PORT is "
            "set): give an RSA or ECDSA certificate"
        )


# How long the parent's check waits for a port in use to be let go: a stopping imgclass (its
# parent killed, or sent SIGTERM) releases it within milliseconds of hearing so (round 42)
RELEASE_WAIT_S = 2.0


def check_grpc_port(host: str, port: int, *, alone: bool = False) -> None:
    """The gRPC port can be bound, else ConfigurationError. A worker binds beside its
    siblings (SO_REUSEPORT, which the workers share the port with). The parent, before any
    worker starts, asks `alone`: nobody may hold the port, another imgclass included, whose
    workers' SO_REUSEPORT would otherwise let this one join them and take a share of their
    connections (round 24: 2 of 12 clients of the first server reached the second); a port
    in use is tried again for RELEASE_WAIT_S."""
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    deadline = time.monotonic() + (RELEASE_WAIT_S if alone else 0.0)
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # SO_REUSEADDR: a restart may bind beside its last run's connections in TIME_WAIT
            option = socket.SO_REUSEADDR if alone else socket.SO_REUSEPORT
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
            try:
                sock.bind((bare, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    raise ConfigurationError(
                        f"cannot listen on {host}:{port} (IMGCLASS_GRPC_PORT): {exc.strerror}"
                    ) from None
        time.sleep(0.1)


class PortRelease:
    """A started gRPC server lets its port go as soon as the process starts stopping (parent
    gone, SIGTERM): it takes no new call and closes its listening socket at once, the calls
    in flight get `grace_s` (gRPC's `stop(grace)`). Round 40: after `kill -9` of the parent, a
    worker still finishing an upload held the port until its last request ended, and a new
    server started then was refused it. `before` runs first (health watchers hear
    NOT_SERVING)."""

    def __init__(self, server: grpc.Server, grace_s: float, before: Callable[[], None]) -> None:
        self.server, self.grace_s, self.before = server, grace_s, before
        self._lock = threading.Lock()
        self._stopped: threading.Event | None = None
        self._forget = draining.on_stop(self.release)
        if draining.stopping():  # asked to stop while it started: its hooks have run
            self.release()

    def release(self) -> None:
        self.before()
        self._stop(self.grace_s)

    def _stop(self, grace_s: float) -> tuple[threading.Event, float]:
        with self._lock:
            if self._stopped is None:
                self._stopped = self.server.stop(grace_s)
                return self._stopped, grace_s
            return self._stopped, self.grace_s  # already stopping: its calls keep their grace

    def close(self, grace_s: float) -> None:
        """At the end of the app's lifespan: stop (if not yet) and wait for the calls."""
        self._forget()
        self.before()
        stopped, grace = self._stop(grace_s)
        stopped.wait(grace + 1.0)


_CLAIMS: list[socket.socket] = []  # held for the life of the process


def claim_grpc_port(host: str, port: int) -> None:
    """The parent's claim on the gRPC port, held for its life: an abstract Unix socket named
    for the port (Linux; gone with the process, never a file left behind). check_grpc_port
    sees the port bound only once the workers listen, seconds later: two servers started
    within 2 s both passed it and shared the port (round 25). A second claim fails at once.
    Nothing is claimed where abstract sockets do not exist."""
    if not sys.platform.startswith("linux"):
        return
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0imgclass-grpc-port-{port}")
    except OSError:
        claim.close()
        raise ConfigurationError(
            f"cannot listen on {host}:{port} (IMGCLASS_GRPC_PORT): another imgclass on this "
            "machine has claimed it (starting, serving or stopping)"
        ) from None
    _CLAIMS.append(claim)


def keep_claims() -> None:
    """The claims survive the exec into the dealing parent (app.dealer), which holds them for
    the server's life."""
    for claim in _CLAIMS:
        claim.set_inheritable(True)
