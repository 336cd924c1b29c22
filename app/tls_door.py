"""The HTTPS port's answer to plain HTTP: a 400 saying to use https, as nginx gives, instead of
a connection closed without a word (the TLS layer cannot parse `GET / HTTP/1.1`).

A dealt connection's first byte is peeked before TLS starts: a TLS record of a ClientHello
starts with 0x16 (handshake); anything else is answered in plain HTTP and closed. The wait for
that byte has the handshake's own limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Final

from app.errors import BadRequest
from app.raw_answers import HEAD_START_BYTES, answer_bytes

TLS_HANDSHAKE: Final = 0x16
LINGER_S: Final = 1.0  # the answer is given this long to leave before the socket closes


async def plain_http_answered(
    loop: asyncio.AbstractEventLoop, conn: socket.socket, timeout_s: float
) -> bool:
    """Whether `conn` was dealt with here (plain HTTP answered, or silent past `timeout_s`,
    or gone): it is then closed or closing. False: its first byte starts a TLS handshake."""
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    fd = conn.fileno()
    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(readable, timeout_s)
    except TimeoutError:
        silent = True
    else:
        silent = False
    finally:
        loop.remove_reader(fd)  # before any close: a closed socket has no descriptor
    if silent:
        conn.close()
        return True
    try:
        first = conn.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False  # nothing after all: TLS waits for it within its own limit
    except OSError:
        conn.close()
        return True
    if first and first[0] == TLS_HANDSHAKE:
        return False
    if first:
        _answer(conn)
        loop.call_later(LINGER_S, conn.close)
    else:
        conn.close()
    return True


def _answer(conn: socket.socket) -> None:
    head_start = b""
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):  # what the client sent, so closing does not reset it
            head_start = head_start or chunk[:HEAD_START_BYTES]
    error = BadRequest("This port speaks HTTPS: send the request again with https://, not http://.")
    with contextlib.suppress(OSError):
        conn.send(answer_bytes(error, head_start))  # a few hundred bytes: the buffer takes them
        conn.shutdown(socket.SHUT_WR)
