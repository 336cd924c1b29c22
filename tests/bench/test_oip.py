"""bench.oip's cell: what it counts (no server)."""

from __future__ import annotations

import itertools
import threading

import pytest

from bench.oip import cell


def test_a_cell_keeps_the_latencies_of_right_answers_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lock = threading.Lock()
    counter = itertools.count()

    def make() -> object:
        def send() -> int:
            with lock:
                n = next(counter)
            if n % 5 == 4:
                raise RuntimeError("a failed request")
            return 7 if n % 5 else 3  # every fifth answer wrong, every fifth an error

        return send

    lat = cell(make, clients=3, seconds=0.3, top1=7)  # type: ignore[arg-type]
    total = next(counter)
    assert lat and all(x >= 0 for x in lat)
    assert abs(len(lat) - total * 3 / 5) <= 3  # 3 of 5 right, whichever thread got them
    assert "answers wrong or failed" in capsys.readouterr().out
