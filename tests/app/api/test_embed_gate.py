"""The embedding gate's turns (app/api/embed_gate.py): at most `turns` image requests decode at
once per process, the others wait their turn (503 after wait_s), and a request cancelled (its
client left) is not decoded for, or keeps its turn until its thread is done."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from app.api.embed_gate import EmbedGate
from app.errors import Overloaded


class Work:
    """Thread work that records how many run at once and when each ran."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.spans: list[tuple[str, float, float]] = []

    def __call__(self, name: str, seconds: float) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        t0 = time.monotonic()
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
            self.spans.append((name, t0, time.monotonic()))
        return name


def test_requests_take_turns_and_one_that_waits_too_long_is_503() -> None:
    """Round 40: 26 costly previews all decoded at once and kept predict answering 503 for
    30 s. With one turn, two requests run one after the other; a third that cannot get its
    turn within wait_s is refused, not queued without end."""
    work = Work()

    async def main() -> list[object]:
        gate = EmbedGate(limit=10, turns=1, wait_s=0.5)
        calls = [
            gate.run_turn(lambda: work("a", 0.3)),
            gate.run_turn(lambda: work("b", 0.3)),
            gate.run_turn(lambda: work("c", 0.3)),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    assert out[:2] == ["a", "b"]
    assert isinstance(out[2], Overloaded)
    assert out[2].extra["retry_after_s"] == 1 and "waited 0.5 s for its turn" in out[2].detail
    assert work.most == 1
    assert [name for name, *_ in work.spans] == ["a", "b"]


def test_a_request_cancelled_while_waiting_is_never_run() -> None:
    work = Work()

    async def main() -> None:
        gate = EmbedGate(limit=10, turns=1, wait_s=5)
        first = asyncio.ensure_future(gate.run_turn(lambda: work("first", 0.3)))
        await asyncio.sleep(0.05)
        waiting = asyncio.ensure_future(gate.run_turn(lambda: work("left", 0.1)))
        await asyncio.sleep(0.05)
        waiting.cancel()  # its client left
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await first == "first"
        assert gate.active == 0

    asyncio.run(main())
    assert [name for name, *_ in work.spans] == ["first"]


def test_a_request_cancelled_while_running_keeps_its_turn_until_its_thread_ends() -> None:
    """The thread cannot be stopped; releasing the turn at the cancellation would let the next
    request decode beside it."""
    work = Work()

    async def main() -> None:
        gate = EmbedGate(limit=10, turns=1, wait_s=5)
        running = asyncio.ensure_future(gate.run_turn(lambda: work("running", 0.4)))
        await asyncio.sleep(0.1)
        running.cancel()
        following = asyncio.ensure_future(gate.run_turn(lambda: work("next", 0.1)))
        with pytest.raises(asyncio.CancelledError):
            await running
        assert await following == "next"
        assert gate.active == 0

    asyncio.run(main())
    assert work.most == 1
    (first, _s1, end1), (second, start2, _e2) = work.spans
    assert (first, second) == ("running", "next") and start2 >= end1


def test_admission_beyond_the_limit_is_refused_at_once() -> None:
    work = Work()

    async def main() -> list[object]:
        gate = EmbedGate(limit=2, turns=1, wait_s=5)
        calls = [gate.run_turn(lambda n=n: work(n, 0.2)) for n in ("a", "b", "c")]
        return await asyncio.gather(*calls, return_exceptions=True)

    t0 = time.monotonic()
    out = asyncio.run(main())
    assert out[:2] == ["a", "b"]
    assert isinstance(out[2], Overloaded) and "(limit 2)" in out[2].detail
    assert time.monotonic() - t0 < 2
