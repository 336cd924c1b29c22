"""The lecture write-up: shifted test set and the rendered comparison."""

from __future__ import annotations

from training.lecture import SHIFTS, LectureRow, render


def _row(label: str, accs: list[float]) -> LectureRow:
    return LectureRow(label, "x", 1000, 3, 12.0, 54000, dict(zip(SHIFTS, accs, strict=True)))


def test_render_reports_numbers_sizes_and_direction() -> None:
    rows = [
        _row("MLP", [0.978, 0.9, 0.6, 0.35]),
        _row("CNN", [0.988, 0.95, 0.75, 0.5]),
        _row("CNN + shifts", [0.985, 0.984, 0.98, 0.97]),
    ]
    text = render(rows, 10_000, "img/x.png", "test CPU")
    assert "n = 10,000" in text and "54,000" in text and "test CPU" in text
    assert "| MLP | 1,000 | 3 | 12 s | 97.80% | 90.00% | 60.00% | 35.00% |" in text
    assert "keeps more of its accuracy" in text and "![accuracy vs shift](img/x.png)" in text
    worse = [_row("MLP", [0.978, 0.9, 0.8, 0.7]), _row("CNN", [0.988, 0.9, 0.7, 0.5])]
    assert "does not keep more" in render(worse, 10_000, "i.png", "cpu")
