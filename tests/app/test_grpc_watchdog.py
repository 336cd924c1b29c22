"""The places of gRPC calls (app/grpc_watchdog.py CallGate): a bound per process and one per
calling address, so a client that floods the health service with checks that never send their
message cannot hold every place (round 18)."""

from __future__ import annotations

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
