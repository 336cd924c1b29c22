"""A worker's place in the dealing parent (app.serve.Supervisor): its process, its channel,
whether it said it is ready, and whether it keeps taking the connections dealt to it."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import termios
from dataclasses import dataclass
from typing import Final

# A worker whose turn it is but that has this many bytes of dealt connections it has not taken
# (about 770 a connection) yields to the ready worker with the fewest: stopped or stuck, it
# left every other connection dealt to it unanswered (round 40: 278 of 600 with one worker
# stopped by SIGSTOP; 240 with a fixed threshold alone, which a burst fills on both workers).
BACKED_UP_BYTES: Final = 16 * 1024
# A worker that has taken none of its waiting connections for this long while over that mark
# is passed over even when it is least behind (a burst fills every queue: with the rule above
# alone 104-118 of 600 still went to a stopped worker, 70-73 with this); app.serve.HUNG_S
# later it is killed. Passed over means no more than that: another worker takes the connection.
STUCK_S: Final = 0.1


@dataclass
class Slot:
    """One worker of the supervisor (app.serve.Supervisor), restarted in the same slot."""

    channel: socket.socket | None = None  # the parent's end of the pair
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    started_at: float = 0.0
    early_exits: int = 0  # failed starts in a row
    refusals: int = 0  # starts the system refused in a row (no descriptors, processes left)
    queued: int = 0  # unread channel bytes when last looked at (behind)
    moved_at: float = 0.0  # when the worker was last seen taking connections
    retry_at: float = 0.0  # when a refused start is tried again


def behind(slot: Slot, now: float) -> tuple[float, bool]:
    """How long the worker has gone without taking a dealt connection, and whether it is
    stuck: over BACKED_UP_BYTES unread for more than STUCK_S."""
    waiting = unread(slot)
    if waiting == 0 or waiting < slot.queued:
        slot.moved_at = now
    slot.queued = waiting
    waited = now - slot.moved_at
    return waited, waiting > BACKED_UP_BYTES and waited > STUCK_S


def unread(slot: Slot) -> int:
    return 0 if slot.channel is None else unread_bytes(slot.channel)


def unread_bytes(channel: socket.socket) -> int:
    """Bytes sent over a worker's channel that it has not read yet (SIOCOUTQ); 0 if unknown."""
    try:
        raw = fcntl.ioctl(channel.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int.from_bytes(raw, sys.byteorder)
