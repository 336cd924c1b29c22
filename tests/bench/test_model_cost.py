"""bench.model_cost: the shipped graphs timed side by side (tiny run), and a refusal to compare
graphs that take other inputs."""

from __future__ import annotations

import pytest

from bench.model_cost import main, measure
from tests.conftest import ROOT


def test_times_two_bundles_and_prints_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    ms = measure([ROOT / "models" / "imagenet", ROOT / "models" / "santa"], rounds=2, per_round=2)
    assert len(ms) == 2 and all(m > 0 for m in ms)
    main([str(ROOT / "models" / "imagenet"), "--rounds", "1"])
    out = capsys.readouterr().out
    assert "| 1.00 |" in out and "median of 1 rounds" in out


def test_refuses_bundles_of_another_input_size() -> None:
    with pytest.raises(ValueError, match="224x224"):
        measure([ROOT / "models" / "imagenet", ROOT / "models" / "digits"], rounds=1)
