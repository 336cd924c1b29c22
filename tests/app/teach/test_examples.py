"""Reading a catalog's labelled examples for a teach job (app/teach/examples.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.catalog.service import CatalogService
from app.catalog.types import Vector
from app.main import create_app
from app.teach.errors import NotEnoughExamples
from app.teach.examples import Limits, read_examples
from tests.app.teach.conftest import BAG, SNEAKER, make_catalog, teach_settings


def test_an_item_deleted_while_the_examples_are_read_is_left_out(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]]
) -> None:
    """The items are listed a page at a time and their vectors read one by one: an item deleted
    in between (a client tidying the catalog while a job starts) failed the whole job with
    'no item'. It is left out, as if it had been deleted a moment earlier."""
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        make_catalog(c, "shoes", {"sneaker": fm_pngs[SNEAKER][:6], "bag": fm_pngs[BAG][:6]})
        service: CatalogService = c.app.state.catalogs  # type: ignore[attr-defined]
        store = service.store
        real = store.get_vector
        gone: list[str] = []

        def delete_first(name: str, item_id: str) -> Vector:
            if not gone:  # the first item read is deleted just before its vector is
                gone.append(item_id)
                store.delete_item(name, item_id)
            return real(name, item_id)

        store.get_vector = delete_first  # type: ignore[method-assign]
        try:
            _, ex = read_examples(service, "shoes", Limits())
        finally:
            store.get_vector = real  # type: ignore[method-assign]
        assert gone
        assert len(ex.y) == 11 and ex.x.shape[0] == 11
        assert sorted(ex.labels) == ["bag", "sneaker"]


def test_the_rules_are_checked_on_what_was_read(
    tmp_path: Path, fm_pngs: dict[int, list[bytes]]
) -> None:
    """Deletes during the read that leave a class with one item are refused like any other
    catalog with too few examples (422), not taught from one picture."""
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        make_catalog(c, "shoes", {"sneaker": fm_pngs[SNEAKER][:2], "bag": fm_pngs[BAG][:6]})
        service: CatalogService = c.app.state.catalogs  # type: ignore[attr-defined]
        store = service.store
        real = store.get_vector
        sneakers = [
            it.id for page in store.iter_items("shoes") for it in page if it.label == "sneaker"
        ]

        def delete_a_sneaker(name: str, item_id: str) -> Any:
            if item_id == sneakers[0]:
                store.delete_item(name, item_id)
            return real(name, item_id)

        store.get_vector = delete_a_sneaker  # type: ignore[method-assign]
        try:
            with pytest.raises(NotEnoughExamples):
                read_examples(service, "shoes", Limits())
        finally:
            store.get_vector = real  # type: ignore[method-assign]
