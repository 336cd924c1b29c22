"""The worker side of the dealing server (app.serve): a uvicorn server that listens on
nothing and serves the connections its parent hands it over a Unix socket pair."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from types import FrameType
from typing import Final

import uvicorn

from app import draining
from app.draining import DrainingServer
from app.settings import Settings
from app.tls_door import plain_http_answered
from app.uvicorn_setup import uvicorn_config
from app.worker_process import READY, WORKER_FLAG, follow_parent

logger = logging.getLogger("app.serve")

TLS_HANDSHAKE_S: Final = 10.0  # a dealt connection's TLS handshake must end within this
# a closing TLS connection waits this long for the client's close_notify: asyncio's 30 s
# default, equal to STOP_GRACE_S, had one idle keep-alive client get its worker killed before
# its shutdown ran (round 27)
TLS_SHUTDOWN_S: Final = 2.0


class DealtServer(DrainingServer):
    """A uvicorn server that listens on nothing: it serves the connections whose sockets the
    parent sends over `channel`, and tells the parent when it is ready for them."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGINT is the parent's to act on: a terminal's Ctrl-C reaches every process of the
        group, and the parent then sends each worker SIGTERM; uvicorn took the two as "quit
        now" and skipped the app's shutdown in 9 of 16 workers (round 27)."""
        if sig != signal.SIGINT:
            super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=[])  # the app's lifespan (models loaded), no listener
        if self.should_exit:
            return
        self._loop = asyncio.get_running_loop()
        self.channel.setblocking(False)
        self._loop.add_reader(self.channel.fileno(), self._take_connections)
        try:
            self.channel.send(READY)
        except OSError:  # the parent died while this worker loaded (BrokenPipeError)
            self._parent_gone()

    def _protocol(self) -> asyncio.Protocol:
        config = self.config
        return config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=self.server_state, app_state=self.lifespan.state
        )

    def _take_connections(self) -> None:
        assert self._loop is not None
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.channel, 1024, 256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, fds = b"", []
        if not data and not fds:
            self._parent_gone()
            return
        for fd in fds:
            conn = socket.socket(fileno=fd)
            conn.setblocking(False)
            self._loop.create_task(self._serve_connection(conn))

    def _parent_gone(self) -> None:
        """The parent is gone (killed: a stop it asked for comes as SIGTERM): take no more
        connections, say `stopping` (readyz, gRPC health) as at a SIGTERM, finish what is in
        flight and exit. Round 40: the gRPC health service still said SERVING meanwhile."""
        if self._loop is not None:
            self._loop.remove_reader(self.channel.fileno())
        logger.warning("the supervising process is gone; finishing the requests in flight")
        draining.begin()
        self.should_exit = True

    async def _serve_connection(self, conn: socket.socket) -> None:
        assert self._loop is not None
        try:
            tls = self.config.ssl
            if tls and await plain_http_answered(self._loop, conn, TLS_HANDSHAKE_S):
                return
            await self._loop.connect_accepted_socket(
                self._protocol,
                conn,
                ssl=tls,
                ssl_handshake_timeout=TLS_HANDSHAKE_S if tls else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_S if tls else None,
            )
        except OSError:  # the client left before the worker got to it
            conn.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._loop is not None:  # take no more connections, then uvicorn's shutdown
            self._loop.remove_reader(self.channel.fileno())
        await super().shutdown(sockets)


def worker_main() -> None:  # pragma: no cover - child
    """A worker's entry: `<python> -c BOOT --imgclass-worker <fd> <log level> <parent pid>`."""
    at = sys.argv.index(WORKER_FLAG)  # app.worker_process starts it
    follow_parent(int(sys.argv[at + 3]))
    channel = socket.socket(fileno=int(sys.argv[at + 1]))
    # Load every model before saying ready: the parent deals connections only to ready
    # workers, so none waits on a worker that is still loading, and none is answered 503
    # "still loading" while /readyz, served by a worker that is ready, says 200.
    os.environ["IMGCLASS_LOAD_IN_BACKGROUND"] = "false"
    config = uvicorn_config(sys.argv[at + 2], Settings().tls)
    config.configure_logging()  # a new interpreter: logging is set up again
    DealtServer(config, channel).run()
