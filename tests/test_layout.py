"""Repository-wide layout rules (docs/architecture.md): modules stay small enough to read in one
sitting, so no Python module in app/ or training/ grows past 400 lines, and no script or style
sheet of the page (app/static) past 400 and 500 lines."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT

MAX_MODULE_LINES = 400
PACKAGES = ("app", "training")


def module_lengths(root: Path = ROOT) -> dict[str, int]:
    """Line count of every Python module under the packages, keyed by path relative to root."""
    lengths: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            with path.open("rb") as fh:
                lengths[path.relative_to(root).as_posix()] = sum(1 for _ in fh)
    return lengths


def test_no_module_is_over_the_line_limit() -> None:
    lengths = module_lengths()
    assert any(name.startswith("app/") for name in lengths)
    assert any(name.startswith("training/") for name in lengths)
    over = {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not over, f"split these modules (limit {MAX_MODULE_LINES} lines): {over}"


def test_lengths_cover_nested_modules_and_count_every_line(tmp_path: Path) -> None:
    (tmp_path / "app" / "sub").mkdir(parents=True)
    (tmp_path / "app" / "sub" / "big.py").write_text("a = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "small.py").write_text("b = 2")
    (tmp_path / "training" / "notes.txt").write_text("not python\n" * 999)
    assert module_lengths(tmp_path) == {
        "app/sub/big.py": MAX_MODULE_LINES + 1,
        "training/small.py": 1,
    }


PAGE_LIMITS = {".js": 400, ".css": 500}  # the page's modules and style sheets (round 28 split)


def test_no_page_file_is_over_its_line_limit() -> None:
    files = [p for p in sorted((ROOT / "app" / "static").iterdir()) if p.suffix in PAGE_LIMITS]
    assert {p.suffix for p in files} == set(PAGE_LIMITS)
    over = {
        p.name: n for p in files if (n := len(p.read_bytes().splitlines())) > PAGE_LIMITS[p.suffix]
    }
    assert not over, f"split these page files (limits {PAGE_LIMITS}): {over}"
