"""app/bundle_files.py check_enabled: IMGCLASS_ENABLED_MODELS names only bundle folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.bundle_files import check_enabled
from app.errors import ConfigurationError


def _models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    (models / "good").mkdir(parents=True)
    (models / "good" / "metadata.json").write_text("{}")
    (models / "empty").mkdir()
    (models / "afile").write_text("not a bundle")
    (models / ".hidden").mkdir()
    (models / ".hidden" / "metadata.json").write_text("{}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "metadata.json").write_text("{}")
    (models / "link").symlink_to(outside, target_is_directory=True)
    return models


def test_bundle_folders_pass_and_an_empty_list_means_every_bundle(tmp_path: Path) -> None:
    models = _models(tmp_path)
    check_enabled(models, ["good"])
    check_enabled(models, [])
    check_enabled(tmp_path / "missing", ["good"])  # no folder: the registry says so


@pytest.mark.parametrize("name", ["empty", "afile", ".hidden", "link", "prodcuts", "good/"])
def test_names_that_cannot_serve_stop_start_up_naming_what_is_there(
    tmp_path: Path, name: str
) -> None:
    """Round 25: a file, an empty folder and a link out of the folder passed the first form,
    and the server then served nothing (/readyz 503, the reason only in the log)."""
    with pytest.raises(ConfigurationError) as info:
        check_enabled(_models(tmp_path), ["good", name])
    said = str(info.value)
    assert f"names {name!r}, not a bundle folder" in said and "(there: good;" in said
    assert "taught models are not listed" in said
