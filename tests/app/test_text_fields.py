"""app.text_fields: descriptions a client stores are printable text, line breaks and tabs
(round 43: a teach job's description kept NUL, escape sequences and a right-to-left override,
and the model card showed them as given)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.api.teach import TeachRequest
from app.main import create_app
from app.schemas import CatalogCreate
from tests.conftest import make_settings


@pytest.mark.parametrize("bad", ["a\u0000b", "\u001b[31mred", "\u202egnp.exe", "bell\u0007"])
def test_control_and_bidi_override_characters_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="control or bidirectional-override"):
        TeachRequest(model="m", description=bad)
    with pytest.raises(ValidationError, match="control or bidirectional-override"):
        CatalogCreate(name="c", model="m", description=bad)


def test_text_line_breaks_tabs_and_emoji_are_kept() -> None:
    text = "Birds of the park\r\n\tphotos by Zoë 🐦‍⬛, عربي"
    assert TeachRequest(model="m", description=text).description == text
    assert CatalogCreate(name="c", model="m", description=text).description == text


def test_over_http_it_is_a_422_problem(tiny_models_dir: Path, tmp_path: Path) -> None:
    app = create_app(make_settings(tiny_models_dir, tmp_path))
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/v1/catalogs", json={"name": "c", "model": "tiny", "description": "\u202ex"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "bidirectional-override" in r.text
