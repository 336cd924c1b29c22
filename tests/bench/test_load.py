"""bench.load's targets table: what it computes from the cells (no server, no client)."""

from __future__ import annotations

import pytest

from bench.clients import Cell, WrkCell
from bench.load import targets


def _cell(rps: float, p99: float) -> Cell:
    return Cell(
        ok=int(rps * 8),
        rps=rps,
        p50=p99 / 2,
        p99=p99,
        s503=0,
        other=0,
        dials=0,
        p50_503=float("nan"),
        p99_503=float("nan"),
    )


def _wrk(rps: float) -> WrkCell:
    n = int(rps * 8)
    return WrkCell(requests=n, ok=n, rps=rps, non2xx=0, socket_errors=0, p50=40.0, p99=80.0)


def _row(out: str, model: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"| {model} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_targets_give_32_over_8_as_measured_and_over_each_cells_ceiling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The machine ran 10% slower during the 32-client cell: its ceiling was 180 against 200.
    results = {("m", "640", 8): _cell(170.0, 60.0), ("m", "640", 32): _cell(153.0, 180.0)}
    ratios = {("m", "640", 8): 170 / 200, ("m", "640", 32): 153 / 180}
    wrk = {("m", "640", 8): _wrk(176.0), ("m", "640", 32): _wrk(162.0)}
    wrk_ratios = {("m", "640", 8): 176 / 200, ("m", "640", 32): 162 / 180}
    targets(results, ratios, wrk, wrk_ratios)
    row = _row(capsys.readouterr().out, "m")
    # model, image, 8 x ceiling (hey, wrk), 32/8 req/s (hey, wrk), 32/8 x ceiling (hey, wrk), p99
    assert row == ["m", "640", "0.85", "0.88", "0.90", "0.92", "1.00", "1.02", "3.00"]


def test_targets_without_a_32_client_cell_print_dashes(capsys: pytest.CaptureFixture[str]) -> None:
    results = {("m", "640", 8): _cell(100.0, 50.0)}
    targets(results, {("m", "640", 8): 0.9}, {}, {})
    row = _row(capsys.readouterr().out, "m")
    assert row[2] == "0.90" and row[4:8] == ["-"] * 4 and row[8] == "-"
