"""Every IMGCLASS_* setting is documented in the README's configuration table, and the table
names no setting that does not exist."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.conftest import ROOT


def _documented() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## Configuration")
    end = text.find("\n## ", start + 1)
    names: set[str] = set()
    for line in text[start : end if end > 0 else None].splitlines():
        if line.startswith("|"):
            names |= set(re.findall(r"IMGCLASS_[A-Z0-9_]+", line.split("|")[1]))
    return names


def test_every_setting_has_a_readme_row() -> None:
    fields = {f"IMGCLASS_{name.upper()}" for name in Settings.model_fields}
    documented = _documented()
    missing = sorted(fields - documented)
    assert not missing, (
        "README.md '## Configuration' has no row (first column) for: "
        + ", ".join(missing)
        + ". Add `| `NAME` | default | meaning |` rows for them."
    )
    stale = sorted(documented - fields)
    assert not stale, f"README.md documents settings app/settings.py does not have: {stale}"


def test_settings_that_would_serve_nothing_or_bound_nothing_are_refused() -> None:
    """Round 32: an empty host allow-list started a server that answered every request 400,
    `inf` passed as a decode budget (none), `nan` was refused as "should be <= 3600"."""
    with pytest.raises(ValidationError, match="answers no request"):
        Settings(allowed_hosts=[])
    with pytest.raises(ValidationError, match="'Bad Name!' is not a catalog name"):
        Settings(default_catalogs={"products": "Bad Name!"})
    for field in ("decode_time_budget_s", "model_poll_seconds"):
        for value in ("inf", "nan", "-inf"):
            with pytest.raises(ValidationError, match="finite number"):
                Settings(**{field: value})  # type: ignore[arg-type]
    assert Settings(allowed_hosts=["*"], decode_time_budget_s=0.5).decode_time_budget_s == 0.5
