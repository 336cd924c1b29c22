"""The lecture write-up: shifted test set and the rendered comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.lecture import SHIFTS, LectureRow, render, run_lecture


def _row(label: str, accs: list[float]) -> LectureRow:
    return LectureRow(
        label, "x", 1000, 3, 12.0, 54000, dict(zip(SHIFTS, accs, strict=True)), n_test=10_000
    )


def test_render_reports_numbers_sizes_and_direction() -> None:
    rows = [
        _row("MLP", [0.978, 0.9, 0.6, 0.35]),
        _row("CNN", [0.988, 0.95, 0.75, 0.5]),
        _row("CNN + shifts", [0.985, 0.984, 0.98, 0.97]),
    ]
    text = render(rows, 10_000, "img/x.png", "test CPU")
    assert "n = 10,000" in text and "54,000" in text and "test CPU" in text
    assert "Reproduce: `python -m training lecture` (" in text
    assert "near 98% is about +-0.3 points, near 50% about +-1.0 points" in text
    assert "| MLP | 1,000 | 3 | 12 s | 97.80% | 90.00% | 60.00% | 35.00% |" in text
    assert "keeps more of its accuracy" in text and "![accuracy vs shift](img/x.png)" in text
    worse = [_row("MLP", [0.978, 0.9, 0.8, 0.7]), _row("CNN", [0.988, 0.9, 0.7, 0.5])]
    assert "does not keep more" in render(worse, 10_000, "i.png", "cpu")


@pytest.mark.slow  # three short trainings (1 epoch each on 810 digits)
def test_report_states_the_test_set_and_epochs_it_was_run_with(
    tmp_path: Path, mnist_small_dir: Path
) -> None:
    """The report said "n = 10,000" and `python -m training lecture` whatever was measured
    (a typed constant): here 300 test digits and --epochs 1."""
    doc = tmp_path / "doc.md"
    rows = run_lecture(
        epochs=1,
        data_dir=mnist_small_dir,
        runs_dir=tmp_path / "runs",
        doc=doc,
        image=tmp_path / "img.png",
    )
    text = doc.read_text()
    assert {r.n_test for r in rows} == {300} and {r.epochs for r in rows} == {1}
    assert "## Results (test accuracy, n = 300 per column)" in text and "10,000" not in text
    assert "Reproduce: `python -m training lecture --epochs 1` (" in text
