"""The places of gRPC calls (app/grpc_watchdog.py CallGate): a bound per process and one per
calling address, so a client that floods the health service with checks that never send their
message cannot hold every place (round 18)."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from app.grpc_watchdog import CallGate, peer_address
from app.telemetry import REQUESTS


class Aborted(Exception):
    pass


class Call:
    """A servicer context as CallGate sees one: a peer, and abort raising."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def peer(self) -> str:
        return self._peer

    def abort(self, code: grpc.StatusCode, detail: str) -> None:
        self.aborted = (code, detail)
        raise Aborted(detail)


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:40000", "ipv6:[::1]"),
        ("ipv6:[2001:db8::5]:443", "ipv6:[2001:db8::5]"),
        ("unix:/tmp/grpc.sock", "unix:/tmp/grpc.sock"),
        ("", ""),
    ],
)
def test_the_address_is_the_peer_without_its_port(peer: str, address: str) -> None:
    assert peer_address(Call(peer)) == address  # type: ignore[arg-type]


def test_one_address_holds_at_most_its_share_and_others_still_get_places() -> None:
    gate = CallGate(8, "health checks", per_peer=2)
    flood = [Call(f"ipv4:203.0.113.9:{port}") for port in range(40000, 40012)]
    held, refused = [], []
    for call in flood:
        try:
            held.append(gate.enter(call))  # type: ignore[arg-type]
        except Aborted:
            refused.append(call)
    assert held == ["ipv4:203.0.113.9"] * 2 and len(refused) == 10
    code, detail = refused[0].aborted  # type: ignore[misc]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "your address" in detail
    # a probe from another address is served while the flood holds its two places
    probes = [Call(f"ipv4:10.0.0.{i}:5000") for i in range(1, 7)]
    for probe in probes:
        gate.enter(probe)  # type: ignore[arg-type]
    extra = Call("ipv4:10.0.0.99:5000")
    with pytest.raises(Aborted):  # the process-wide bound still holds: 8 places in all
        gate.enter(extra)  # type: ignore[arg-type]
    assert "already serves 8 health checks" in extra.aborted[1]  # type: ignore[index]
    assert extra.aborted[0] == grpc.StatusCode.UNAVAILABLE  # type: ignore[index]
    # places come back when calls end, per address
    gate.leave(held[0])
    again = gate.enter(flood[5])  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        gate.enter(flood[6])  # type: ignore[arg-type]
    for place in [held[1], again, *(peer_address(p) for p in probes)]:  # type: ignore[arg-type]
        gate.leave(place)
    for call in flood[:2] + probes[:6]:
        gate.enter(call)  # type: ignore[arg-type]


def test_without_a_share_an_address_may_take_every_place() -> None:
    """The protocol's own calls keep no per-address bound (perf_analyzer runs at concurrency
    8 from one host)."""
    gate = CallGate(8)
    for port in range(8):
        gate.enter(Call(f"ipv4:127.0.0.1:{port}"))  # type: ignore[arg-type]
    with pytest.raises(Aborted):
        gate.enter(Call("ipv4:127.0.0.1:99"))  # type: ignore[arg-type]


def test_a_place_is_given_back_under_the_address_it_was_taken_with() -> None:
    """A cancelled call's context may name its peer otherwise by the time it ends: places
    were given back under that name, and the address kept them for good (the suite's next
    calls from 127.0.0.1 were refused "8 inference calls from your address")."""
    gate = CallGate(2, per_peer=2)
    call = Call("ipv4:127.0.0.1:5000")
    place = gate.enter(call)  # type: ignore[arg-type]
    call._peer = ""  # what a cancelled call may say
    gate.leave(place)
    for port in (1, 2):
        gate.enter(Call(f"ipv4:127.0.0.1:{port}"))  # type: ignore[arg-type]


def test_refusals_are_retryable_when_the_process_is_full_and_counted_in_metrics() -> None:
    """Round 24: a full process answered RESOURCE_EXHAUSTED, which client retry policies do
    not retry (kserve retries UNAVAILABLE only: 6 of 30 calls from 10 threads failed), and the
    refusals were missing from /metrics, so the sustained-503 alert could not see them."""
    route = "grpc test-gate"

    def counted(status: str) -> float:
        value = REQUESTS.labels(route, "POST", "", status)._value.get()
        return float(value)

    before_full, before_share = counted("503"), counted("429")
    gate = CallGate(2, per_peer=1)
    gate.enter(Call("ipv4:10.0.0.1:1"), route)  # type: ignore[arg-type]
    mine = Call("ipv4:10.0.0.1:2")
    with pytest.raises(Aborted):
        gate.enter(mine, route)  # type: ignore[arg-type]
    assert mine.aborted is not None and mine.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.enter(Call("ipv4:10.0.0.2:1"), route)  # type: ignore[arg-type]
    late = Call("ipv4:10.0.0.3:1")
    with pytest.raises(Aborted):
        gate.enter(late, route)  # type: ignore[arg-type]
    assert late.aborted is not None and late.aborted[0] == grpc.StatusCode.UNAVAILABLE
    assert "retry shortly" in late.aborted[1]
    assert counted("503") == before_full + 1 and counted("429") == before_share + 1


class Waiting(Call):
    """A call with a deadline that a test may cancel."""

    def __init__(self, peer: str, left: float | None = None) -> None:
        super().__init__(peer)
        self.left, self.active = left, True

    def time_remaining(self) -> float | None:
        return self.left

    def is_active(self) -> bool:
        return self.active


def test_calls_beyond_the_limit_wait_for_a_place_in_turn() -> None:
    """Round 43: Triton queues calls beyond those it runs; a gate with room to wait gives a
    place to a waiting call once one is left, and refuses at once beyond that room."""
    gate = CallGate(1, waiting=1, wait_s=5.0)
    first = gate.enter(Waiting("ipv4:10.0.0.1:1"))  # type: ignore[arg-type]
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(gate.enter(Waiting("ipv4:10.0.0.2:1"))))  # type: ignore[arg-type]
    waiter.start()
    time.sleep(0.2)
    assert not got  # waiting
    beyond = Waiting("ipv4:10.0.0.3:1")
    with pytest.raises(Aborted):  # the one place to wait in is taken
        gate.enter(beyond)  # type: ignore[arg-type]
    assert beyond.aborted is not None and beyond.aborted[0] == grpc.StatusCode.UNAVAILABLE
    t0 = time.monotonic()
    gate.leave(first)
    waiter.join(2)
    assert got == ["ipv4:10.0.0.2"] and time.monotonic() - t0 < 1.0


def test_a_waiting_call_gives_up_at_its_deadline_or_when_cancelled() -> None:
    gate = CallGate(1, waiting=4, wait_s=30.0)
    gate.enter(Waiting("ipv4:10.0.0.1:1"))  # type: ignore[arg-type]
    t0 = time.monotonic()
    late = Waiting("ipv4:10.0.0.2:1", left=0.3)  # the client's deadline is the shorter
    with pytest.raises(Aborted):
        gate.enter(late)  # type: ignore[arg-type]
    assert 0.25 < time.monotonic() - t0 < 2.0
    gone = Waiting("ipv4:10.0.0.3:1")
    threading.Timer(0.3, lambda: setattr(gone, "active", False)).start()
    t0 = time.monotonic()
    with pytest.raises(Aborted):
        gate.enter(gone)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 2.0
    # neither keeps its room to wait: four more may wait again
    assert gate._waiters == 0
