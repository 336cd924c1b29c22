"""uvicorn's httptools protocol with a deadline and a size cap on each request's head.

uvicorn 0.54 bounds neither the request line and headers' time nor their size (a connection
dribbling a header line now and then stayed open for good; 8 MB of headers were accepted). Here
each head (from the connection's start, or the end of the previous response) must be complete
within HEAD_TIMEOUT_S and MAX_HEAD_BYTES, or the connection gets a 408/431 and is closed.
Bodies are the app's business (IMGCLASS_BODY_TIMEOUT_S, per-route byte limits).

Answers are bounded the other way: a connection whose write buffer stayed over its high-water
mark for WRITE_STALL_S (a client that stopped reading) is aborted and the buffer freed.

Fuzz round 14 (docs/hardening.md) added the rest:
- trailers of a chunked body are counted with the head's cap and never stored (144 MB of
  them took a worker to 2.9 GB);
- a connection whose request body was not read to its end when the answer was complete is
  half-closed, the rest read and dropped, and closed LINGER_S or MAX_DROPPED_BYTES later (a
  body refused with 413 held its connection and file descriptor as long as it liked);
- past MAX_PIPELINED requests waiting behind the one being answered, those are answered and
  the connection closes (50,000 from a client that read nothing held 190 MB), and the head
  timer never answers 408 while a response is owed;
- a request with a body and an `Upgrade` (curl --http2 on http://), or a WebSocket
  handshake, is refused with a 400 saying so (app/http_upgrade.py).
A request line naming another version than HTTP/1.0 or 1.1 gets a 400; `Expect:
100-continue` from HTTP/1.0 is ignored (RFC 9110 10.1.1); an absolute-form target's host is
the one the Host allow-list checks (RFC 9112 3.2.2).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Final

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.body_pieces import BodyPieces
from app.errors import BadRequest, HeadersTooLarge, RequestTimeout, ServiceError
from app.http_upgrade import upgrade_refusal
from app.log_format import PeerNoise
from app.raw_answers import HEAD_START_BYTES, close_with

logger = logging.getLogger(__name__)
HEAD_TIMEOUT_S: Final = 10.0
MAX_HEAD_BYTES: Final = 64 * 1024
WRITE_STALL_S: Final = 60.0  # as long as a request body may take (IMGCLASS_BODY_TIMEOUT_S)
MAX_PIPELINED: Final = 1000  # requests waiting behind the one being answered, at most
LINGER_S: Final = 5.0  # a body still arriving after its answer is dropped this long, then closed
MAX_DROPPED_BYTES: Final = 64 * 1024 * 1024  # or until this much of it was dropped
_END: Final = b"\r\n\r\n"


class HeadGuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol; a request's head is timed and counted until its headers are parsed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = PeerNoise(self.logger, {})  # type: ignore[assignment]
        self._pieces = BodyPieces()

    head_timeout_s: float = HEAD_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    write_stall_s: float = WRITE_STALL_S
    linger_s: float = LINGER_S
    max_pipelined: int = MAX_PIPELINED

    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _in_head = False
    _head_bytes = 0
    _tail = b""
    _head_start = b""  # the current head's request line (so far), for a refusal's shape
    _in_trailers = False  # the current message's headers are parsed: headers now are trailers
    _url_seen = False  # the current head's request line is parsed: _head_start is from it
    _trailer_bytes = 0
    _discarding = False  # answered; the rest of the request body is read and dropped
    _dropped = 0
    _pieces: BodyPieces  # the current body's (a new count at each message)
    _refusal: ServiceError | None = None  # sent once the answers owed before it are out

    def _refuse(self, error: ServiceError) -> None:
        """Answer a request that cannot be parsed or served with `error` and close. Requests
        pipelined before it are answered first (round 17: a POST sent just before a bad
        request line ran, and the only answer on the connection was the 400); nothing read
        after it is parsed."""
        owed = self.pipeline or (self.cycle is not None and not self.cycle.response_complete)
        if self.cycle is not None and self.cycle.more_body:
            owed = False  # the bad bytes are the body of the request in hand (round 18)
        if owed and not self.transport.is_closing():
            self._refusal, self._discarding = error, True
            return
        close_with(self.transport, error, self._head_start)

    def _start_head(self) -> None:
        """Count the next head's bytes from here (the previous body has ended)."""
        self._in_head, self._head_bytes, self._tail = True, 0, b""
        self._head_start, self._url_seen = b"", False

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
        if self._owes_response():
            return  # re-armed when the answer is out (on_response_complete)
        if self._in_head:
            detail = (
                f"The request line and headers did not arrive within {self.head_timeout_s:g} s."
            )
            close_with(
                self.transport,
                RequestTimeout(detail, timeout_s=self.head_timeout_s),
                self._head_start,
            )

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
        size = self.transport.get_write_buffer_size()
        if size:  # closing or not: a graceful close() waits for this buffer to drain
            logger.warning(
                "client stopped reading for %g s with %d bytes of its answer unsent: closed",
                self.write_stall_s,
                size,
            )
            self.transport.abort()  # drops the unsent bytes

    def _linger(self) -> None:
        """Close after an answer whose request body is still arriving. Closing at once would
        reset the connection while the client still sends, and a reset can destroy the answer
        before the client reads it; so, as web servers do, the answer is finished with a
        half-close (FIN), what the client still sends is read and dropped, and the connection
        is closed LINGER_S later (or as soon as the client closes its side)."""
        self._discarding = True
        self._end_head()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.flow.resume_reading()  # paused at uvicorn's high-water mark, a client sending its
        # whole body before reading (httpx, requests) waited out the linger: 5 s (round 32)
        self.loop.call_later(self.linger_s, self._linger_over)

    def _linger_over(self) -> None:
        if not self.transport.is_closing():
            self.transport.abort()

    def _owes_response(self) -> bool:
        """A request is being answered, or waits in the pipeline."""
        cycle = getattr(self, "cycle", None)
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def data_received(self, data: bytes) -> None:
        if self._discarding:  # answered and closing: the rest of the body is dropped, up to
            self._dropped += len(data)  # a bound (reading on costs a core's time)
            if self._dropped > MAX_DROPPED_BYTES and not self.transport.is_closing():
                self.transport.abort()
            return
        if self._in_head:
            # Bytes up to the blank line that ends the head (a body may follow in the same read,
            # so the chunk is searched, never copied).
            edge = (self._tail + data[:3]).find(_END) if self._tail else -1
            if edge >= 0:
                head = edge + len(_END) - len(self._tail)
            else:
                end = data.find(_END)
                head = len(data) if end < 0 else end + len(_END)
            if not self._url_seen:  # the request line so far, for a refusal (408, 431)
                self._head_start += bytes(data[: HEAD_START_BYTES - len(self._head_start)])
            self._head_bytes += head
            self._tail = data[-3:] if len(data) >= 3 else (self._tail + data)[-3:]
            if self._head_bytes > self.max_head_bytes:
                self._end_head()
                detail = f"The request line and headers exceed {self.max_head_bytes:,} bytes."
                error = HeadersTooLarge(detail, limit_bytes=self.max_head_bytes)
                close_with(self.transport, error, self._head_start)
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._in_trailers, self._pieces = False, BodyPieces()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        """The request line as parsed, whatever reads it came in (round 32: pipelined or split
        heads were refused with another's method and shape)."""
        super().on_url(url)
        self._head_start = bytes(self.parser.get_method() + b" " + self.url[:HEAD_START_BYTES])
        self._url_seen = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_trailers:
            super().on_header(name, value)
            return
        # A trailer of a chunked body: counted against the head's cap, never kept (the app
        # has its headers already; uvicorn would append every line to them).
        self._trailer_bytes += len(name) + len(value) + 4
        if self._trailer_bytes > self.max_head_bytes and not self.transport.is_closing():
            # The route has this request already: a 431 unless it has begun its answer
            # (round 43: no answer at all, and a WARNING line any client could add)
            detail = f"The chunked body's trailers exceed {self.max_head_bytes:,} bytes."
            self._drop(HeadersTooLarge(detail, limit_bytes=self.max_head_bytes))

    def _drop(self, error: ServiceError) -> None:
        """Close while the route may still be answering, with `error` unless an answer has
        begun: its cycle is marked disconnected first, as connection_lost would, so its
        writes are skipped instead of raising on a closed transport (a traceback per
        request)."""
        cycles = [c for c, _ in self.pipeline] + ([self.cycle] if self.cycle is not None else [])
        began = any(c.response_started for c in cycles)
        for cycle in cycles:
            cycle.disconnected = True
            cycle.message_event.set()
        if began:
            self.transport.close()
        else:
            close_with(self.transport, error, self._head_start)

    def on_headers_complete(self) -> None:
        self._end_head()
        self._in_trailers, self._trailer_bytes = True, 0
        if self.transport.is_closing() or self._refusal is not None:
            # the rest of a read after the connection was closed (a request pipelined behind
            # trailers over the cap, round 15), or behind a refused one: never started
            return
        if self._refuse_upgrade() or self._refuse_version():
            return
        if self.parser.get_http_version() == "1.0":
            self.expect_100_continue = False  # RFC 9110 10.1.1: ignored from 1.0 clients
        if self.url[:1] not in (b"/", b"*") and self._host_from_target():
            return
        super().on_headers_complete()
        if self.parser.should_upgrade():  # served without it: the connection then closes
            self.cycle.keep_alive = False
        self._announce_close(self.cycle)
        if len(self.pipeline) > self.max_pipelined:
            # Too many requests sent ahead of their answers: those in hand are answered, then
            # the connection closes (HTTP lets a server close a pipelined connection; clients
            # send the unanswered requests again); nothing more is read.
            self.pipeline.popleft()  # this one (uvicorn queues on the left), unanswered
            self.pipeline[0][0].keep_alive = False
            self._discarding = True

    def _announce_close(self, cycle: Any) -> None:
        """An answer that starts while its request body is still arriving says `Connection:
        close`, so the client does not send its next request on a connection that will be
        closed after it (on_response_complete lingers, then closes). uvicorn would close at
        once after such an answer; keep_alive is set back before the last piece so the
        linger does it (an immediate close with unread bytes can reset the answer away)."""
        # Weak references only: the wrapper is stored on the cycle, and a strong one to the
        # cycle (or to this protocol, which holds the cycle) made a reference cycle that kept
        # every request's scope, its parsed multipart form included, until a full garbage
        # collection (round 25: 100 refused 19 MB uploads left a worker 475 MiB larger at rest).
        send, cycle_ref, guard_ref = type(cycle).send, weakref.ref(cycle), weakref.ref(self)

        async def send_announcing(message: Any) -> None:
            cycle, guard = cycle_ref(), guard_ref()
            if cycle is None or guard is None:  # never while its request is being answered
                return
            if guard.transport.is_closing():
                # closed under it (a refusal, a pipeline cut, the client): uvicorn would write
                # to the closed transport and log a traceback (round 18)
                cycle.disconnected = True
            if message["type"] == "http.response.start" and cycle.more_body:
                cycle.keep_alive = False  # uvicorn then adds `connection: close`
                cycle.linger_close = True
            elif getattr(cycle, "linger_close", False) and not message.get("more_body", False):
                cycle.keep_alive = True  # closed by the linger, not at once
            await send(cycle, message)

        cycle.send = send_announcing

    def _should_upgrade(self) -> bool:
        """Never hand the connection to a WebSocket protocol, whatever uvicorn was configured
        with: no endpoint speaks it (`_refuse_upgrade` answers the handshake)."""
        return False

    def _refuse_upgrade(self) -> bool:
        """A request asking for an Upgrade: refused or served (app/http_upgrade.py)."""
        refusal = upgrade_refusal(self.headers) if self.parser.should_upgrade() else None
        if refusal is not None:
            self._refuse(refusal)
        return refusal is not None

    def _host_from_target(self) -> bool:
        """An absolute-form target (`GET http://evil.com/v1/models`): RFC 9112 3.2.2 says its
        host replaces the Host header, so that is what the allow-list checks (round 17: the
        Host header was checked and the target's host ignored)."""
        try:
            parsed = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            return False  # uvicorn refuses it itself
        if parsed.schema not in (b"http", b"https"):
            scheme = (parsed.schema or b"").decode("latin-1")[:16]
            self._refuse(
                BadRequest(f"A request target's scheme must be http or https, not {scheme!r}.")
            )
            return True
        if not parsed.host or sum(1 for k, _ in self.headers if k == b"host") != 1:
            return False  # no Host line, or two: the Host checks refuse it (round 18)
        host = b"[" + parsed.host + b"]" if b":" in parsed.host else parsed.host
        authority = host + (b":%d" % parsed.port if parsed.port else b"")
        # in place: the request scope holds this very list
        self.headers[:] = [(k, v) for k, v in self.headers if k != b"host"] + [(b"host", authority)]
        return False

    def _refuse_version(self) -> bool:
        """A request line naming another HTTP version than 1.0 or 1.1 (`HTTP/2.0`, `HTTP/1.2`)
        was served as if it said 1.1; it gets a 400 saying what is spoken, and the connection
        closes (a 4xx, not 505: the project's rule for bad input)."""
        version = self.parser.get_http_version()
        if version in ("1.0", "1.1"):
            return False
        detail = (
            f"HTTP/{version[:8]} is not spoken here: send HTTP/1.1 (or 1.0). For HTTP/2 and "
            "gRPC, use the gRPC port (IMGCLASS_GRPC_PORT) or a proxy in front."
        )
        self._refuse(BadRequest(detail))
        return True

    def on_body(self, body: bytes) -> None:
        if (refusal := self._pieces.add(len(body))) is not None:
            self._drop(refusal)  # its route is reading it: it stops, the client gets the 400
        elif self._refusal is None:  # else the refused request's: not the owed one's
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refusal is not None:
            return
        super().on_message_complete()
        self._start_head()  # a pipelined head is counted at once, timed after the response
        if self.cycle.response_complete and not self.transport.is_closing():
            self._arm()  # answered before its body ended (a 413): the response is out already

    def on_response_complete(self) -> None:
        # With requests pipelined behind it, the answered one's body had ended (the parser
        # moved on); otherwise self.cycle is the answered one.
        announced = getattr(self.cycle, "linger_close", False)
        if (
            not self.pipeline
            and (self.cycle.more_body or announced)
            and not self.transport.is_closing()
        ):
            # Answered before its body ended (a 413, a 404, a route that reads none): the rest
            # of the body would keep the connection open for as long as the client trickles it.
            self._linger()
            return
        super().on_response_complete()
        # self.cycle is the last request parsed: once it is answered and none waits, every
        # answer owed before the refusal is out (round 18: the last one had been cut off)
        if self._refusal is not None and not self.pipeline and self.cycle.response_complete:
            close_with(self.transport, self._refusal, self._head_start)
        elif self._in_head and not self.transport.is_closing():
            self._arm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP/1.1 (a bad request line or header, a
        Content-Length with chunked, an HTTP/2 preface), as problem+json instead of text."""
        detail = (
            "The request is not valid HTTP/1.1 (request line, headers or framing). "
            "Send HTTP/1.1 with either Content-Length or chunked transfer encoding."
        )
        self._refuse(BadRequest(detail))
