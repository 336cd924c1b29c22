"""A request body's pieces, counted as the HTTP protocol hands them on.

Each piece of a body (a chunk of chunked encoding, or one read of the socket) costs a round of
Python work in the protocol and the app, whatever its size: a 20 MiB upload sent in 1-byte
chunks took 6.6 s of a worker's CPU and a 64 MiB zip 21.8 s (round 43), where one sent
ordinarily takes 0.1 s. Past FREE_PIECES pieces, a body whose pieces average fewer than
MIN_PIECE_BYTES is refused (400). Ordinary clients send chunks of kilobytes and the socket
hands on what arrived at once; a link that delivers a few bytes at a time is refused only once
it has sent FREE_PIECES such pieces.
"""

from __future__ import annotations

from typing import Final

from app.errors import BadRequest

FREE_PIECES: Final = 4096
MIN_PIECE_BYTES: Final = 256


class BodyPieces:
    """One request body's count; `add` says when it is to be refused."""

    def __init__(self) -> None:
        self.pieces = 0
        self.bytes = 0

    def add(self, size: int) -> BadRequest | None:
        self.pieces += 1
        self.bytes += size
        if self.pieces <= FREE_PIECES or self.bytes >= self.pieces * MIN_PIECE_BYTES:
            return None
        return BadRequest(
            f"The request body arrived in {self.pieces:,} pieces of {self.bytes // self.pieces} "
            f"bytes on average; past {FREE_PIECES:,} pieces each must average at least "
            f"{MIN_PIECE_BYTES} bytes (each costs the server the same work whatever its size). "
            "Send the body in larger chunks, or with Content-Length."
        )
