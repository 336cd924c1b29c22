"""uvicorn's httptools protocol with a deadline and a size cap on each request's head.

uvicorn 0.54 bounds neither the request line and headers' time nor their size, and arms its
keep-alive timeout only after a response: a connection that sent nothing, or dribbled a header
line now and then, stayed open for good, and 8 MB of headers were buffered and accepted. Here
each head (from the connection's start, or from the end of the previous response) must be
complete within HEAD_TIMEOUT_S and MAX_HEAD_BYTES, or the connection gets a 408/431 and is
closed. Bodies are the app's business (IMGCLASS_BODY_TIMEOUT_S, per-route byte limits).

Answers are bounded the other way: a client that stops reading leaves the answer in the
connection's write buffer (20 such clients of a 53 MB predict answer held a gigabyte for as
long as they stayed connected). When the buffer has stayed above its high-water mark for
WRITE_STALL_S, the connection is aborted and the buffer freed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.errors import PROBLEM_JSON, BadRequest, HeadersTooLarge, RequestTimeout, ServiceError

logger = logging.getLogger(__name__)
HEAD_TIMEOUT_S: Final = 10.0
MAX_HEAD_BYTES: Final = 64 * 1024
WRITE_STALL_S: Final = 60.0  # as long as a request body may take (IMGCLASS_BODY_TIMEOUT_S)
_END: Final = b"\r\n\r\n"


def _close_with(transport: asyncio.Transport, error: ServiceError) -> None:
    """Answer `error` as problem+json, as the app does, and close the connection."""
    if transport.is_closing():
        return
    body = json.dumps(error.to_problem()).encode()
    reason = HTTPStatus(error.status).phrase.encode()
    transport.write(
        b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
        % (error.status, reason, PROBLEM_JSON.encode(), len(body))
        + body
    )
    transport.close()


class HeadGuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol; a request's head is timed and counted until its headers are parsed."""

    head_timeout_s: float = HEAD_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    write_stall_s: float = WRITE_STALL_S

    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _in_head = False
    _head_bytes = 0
    _tail = b""

    def _start_head(self) -> None:
        """Count the next head's bytes from here (the previous body has ended)."""
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""

    def _arm(self) -> None:
        """Time the head from here: the connection is open and no response is pending."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _end_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            detail = (
                f"The request line and headers did not arrive within {self.head_timeout_s:g} s."
            )
            _close_with(self.transport, RequestTimeout(detail, timeout_s=self.head_timeout_s))

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        self._stop_write_timer()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The write buffer is full (the client is not reading as fast as we answer): it must
        drain within write_stall_s."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_stall_s, self._write_stalled)

    def resume_writing(self) -> None:
        self._stop_write_timer()
        super().resume_writing()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            size = self.transport.get_write_buffer_size()
            logger.warning(
                "client stopped reading for %g s with %d bytes of its answer unsent: closed",
                self.write_stall_s,
                size,
            )
            self.transport.abort()  # drops the unsent bytes (close() would wait to send them)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Bytes up to the blank line that ends the head (a body may follow in the same read,
            # so the chunk is searched, never copied).
            edge = (self._tail + data[:3]).find(_END) if self._tail else -1
            if edge >= 0:
                head = edge + len(_END) - len(self._tail)
            else:
                end = data.find(_END)
                head = len(data) if end < 0 else end + len(_END)
            self._head_bytes += head
            self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
            if self._head_bytes > self.max_head_bytes:
                self._end_head()
                detail = f"The request line and headers exceed {self.max_head_bytes:,} bytes."
                _close_with(
                    self.transport, HeadersTooLarge(detail, limit_bytes=self.max_head_bytes)
                )
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_head()  # a pipelined head is counted at once, timed after the response
        if self.cycle.response_complete and not self.transport.is_closing():
            self._arm()  # answered before its body ended (a 413): the response is out already

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._arm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP/1.1 (a bad request line or header, a
        Content-Length with chunked, an HTTP/2 preface), as problem+json instead of text."""
        detail = (
            "The request is not valid HTTP/1.1 (request line, headers or framing). "
            "Send HTTP/1.1 with either Content-Length or chunked transfer encoding."
        )
        _close_with(self.transport, BadRequest(detail))
