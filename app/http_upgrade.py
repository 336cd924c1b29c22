"""What to do with a request that asks for a protocol `Upgrade` (app/http_guard.py).

This server speaks HTTP/1.1 only. httptools stops parsing at an upgrade: nothing after the
request's head is read, its body included. So
- a WebSocket handshake is refused with a 400 saying none is served (it broke inside the
  parser's callback: the generic "not valid HTTP/1.1", or a KeyError traceback when a request
  was pipelined before it), looking at every Upgrade line whole (round 21: a long first token,
  or a second line, hid it);
- another Upgrade on a request with a body (curl --http2 on http:// sends `Upgrade: h2c`) is
  refused with a 400 saying so: the body would never reach the route;
- another Upgrade without a body is served as if absent, and the connection closes after its
  answer (round 21: a request pipelined behind it waited until the keep-alive timeout).
"""

from __future__ import annotations

from app.errors import BadRequest

Headers = list[tuple[bytes, bytes]]  # lower-case names, as uvicorn keeps them


def upgrade_refusal(headers: Headers) -> BadRequest | None:
    """The 400 for a request whose head asks for an Upgrade, or None to serve it without."""
    upgrade = b", ".join(v for k, v in headers if k == b"upgrade").decode("latin-1")
    if any(token.strip().lower().startswith("websocket") for token in upgrade.split(",")):
        return BadRequest(
            "WebSocket is not served here: every endpoint answers plain HTTP/1.1 requests "
            "(and the inference protocol over gRPC, on its own port, when enabled). "
            "Send the request without Upgrade."
        )
    heads = dict(headers)
    declared = heads.get(b"content-length", b"0").strip() not in (b"", b"0")
    if not declared and b"transfer-encoding" not in heads:
        return None
    return BadRequest(
        f"Upgrade: {upgrade[:40]} is not supported, and a request that asks for it cannot "
        "carry a body here. Send the request without Upgrade (curl: --http1.1)."
    )
