"""Validators and preconditions on stored images and model downloads (RFC 9110 13): answers
a cache revalidates every time, If-Match answered with 412, byte ranges with long numbers."""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from app.catalog.outcomes import ItemSpec
from app.catalog.types import ItemNotFound

ClientFactory = Callable[..., TestClient]
KEY = "k" * 32


def picture(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def add(c: TestClient, item_id: str, seed: int, **headers: str) -> None:
    r = c.post(f"/v1/catalogs/fm/items?id={item_id}", content=picture(seed), headers=headers)
    assert r.status_code == 201, r.text


def refused(r: httpx.Response) -> None:
    assert r.status_code == 412, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "/problems/precondition-failed"


def test_an_id_added_again_with_another_picture_is_never_served_stale(
    make_client: ClientFactory,
) -> None:
    """`max-age=86400` let a cache show a deleted item's picture for a day under its reused
    id; now every use is revalidated (a cheap 304 while the picture is the same)."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        add(c, "sku-1", 1)
        for url in ("/v1/catalogs/fm/items/sku-1/image", "/v1/catalogs/fm/items/sku-1/thumbnail"):
            r = c.get(url)
            assert r.headers["cache-control"] == "no-cache", url
            again = c.get(url, headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.headers["cache-control"] == "no-cache"
        old = c.get("/v1/catalogs/fm/items/sku-1/image")
        assert c.delete("/v1/catalogs/fm/items/sku-1").status_code == 204
        add(c, "sku-1", 2)
        new = c.get(
            "/v1/catalogs/fm/items/sku-1/image", headers={"If-None-Match": old.headers["etag"]}
        )
        assert new.status_code == 200 and new.content == picture(2)
        assert new.headers["etag"] != old.headers["etag"]


def test_keyed_reads_keep_stored_images_and_downloads_private(
    make_client: ClientFactory,
) -> None:
    with make_client(api_key=KEY, api_key_for_reads=True) as c:
        key = {"X-API-Key": KEY}
        assert (
            c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}, headers=key).status_code
            == 201
        )
        add(c, "a", 1, **key)
        for url in ("/v1/catalogs/fm/items/a/image", "/v1/catalogs/fm/items/a/thumbnail"):
            assert c.get(url, headers=key).headers["cache-control"] == "private, no-cache"
        r = c.get("/v1/models/tiny/download", headers=key)
        assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"


def test_if_match_on_stored_images(make_client: ClientFactory) -> None:
    """RFC 9110 13.1.1: If-Match was ignored, so a stale tag still got the (new) picture."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        add(c, "a", 1)
        for url in ("/v1/catalogs/fm/items/a/image", "/v1/catalogs/fm/items/a/thumbnail"):
            whole = c.get(url)
            etag = whole.headers["etag"]
            for ok in (etag, "*", f'"x", {etag}'):
                r = c.get(url, headers={"If-Match": ok})
                assert r.status_code == 200 and r.content == whole.content, ok
            part = c.get(url, headers={"If-Match": etag, "Range": "bytes=0-3"})
            assert part.status_code == 206 and part.content == whole.content[:4]
            for stale in ('"0123"', f"W/{etag}"):  # compared strongly
                refused(c.get(url, headers={"If-Match": stale}))
            # If-Match is evaluated before If-None-Match (RFC 9110 13.2.2): not a 304.
            refused(c.get(url, headers={"If-Match": '"0123"', "If-None-Match": etag}))
            # No Last-Modified is sent: If-Unmodified-Since is ignored (RFC 9110 13.1.4).
            old = {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
            assert c.get(url, headers=old).status_code == 200
        # A missing item is a 404 whatever the conditions say (RFC 9110 13.2.1).
        assert c.get("/v1/catalogs/fm/items/b/image", headers={"If-Match": "*"}).status_code == 404


def test_delete_with_if_match_removes_only_the_picture_the_client_saw(
    make_client: ClientFactory,
) -> None:
    """Ids are the client's: without a precondition, a client that looked at sku-1, then
    deleted it, could delete another client's newer sku-1."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        add(c, "sku-1", 1)
        seen = c.get("/v1/catalogs/fm/items/sku-1/image").headers["etag"]
        assert c.delete("/v1/catalogs/fm/items/sku-1").status_code == 204
        add(c, "sku-1", 2)  # another client reuses the id
        refused(c.delete("/v1/catalogs/fm/items/sku-1", headers={"If-Match": seen}))
        thumb = c.get("/v1/catalogs/fm/items/sku-1/thumbnail").headers["etag"]
        refused(c.delete("/v1/catalogs/fm/items/sku-1", headers={"If-Match": thumb}))
        r = c.get("/v1/catalogs/fm/items/sku-1/image")
        assert r.status_code == 200 and r.content == picture(2)  # nothing was deleted
        current = r.headers["etag"]
        assert current == f'"{c.get("/v1/catalogs/fm/items/sku-1").json()["image"]["sha256"][:32]}"'
        assert (
            c.delete("/v1/catalogs/fm/items/sku-1", headers={"If-Match": current}).status_code
            == 204
        )
        assert c.get("/v1/catalogs/fm/items/sku-1").status_code == 404
        missing = c.delete("/v1/catalogs/fm/items/sku-1", headers={"If-Match": "*"})
        assert missing.status_code == 404
        add(c, "sku-2", 3)
        # If-None-Match on a delete (RFC 9110 13.2.2 step 3; round 26 attack: it was ignored)
        now = c.get("/v1/catalogs/fm/items/sku-2/image").headers["etag"]
        for names_it in ("*", now, f'"other", {now}'):
            refused(c.delete("/v1/catalogs/fm/items/sku-2", headers={"If-None-Match": names_it}))
        assert c.get("/v1/catalogs/fm/items/sku-2").status_code == 200
        assert c.delete("/v1/catalogs/fm/items/sku-2", headers={"If-Match": "*"}).status_code == 204
        add(c, "sku-3", 4)
        other = {"If-None-Match": '"other"'}
        assert c.delete("/v1/catalogs/fm/items/sku-3", headers=other).status_code == 204


def test_ranges_with_numbers_of_any_length(make_client: ClientFactory) -> None:
    """`\\d{0,18}` made a 20-digit range malformed: the whole file (200) where a range past
    the end must be a 416 and an end past it a 206 clipped to the file."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        add(c, "a", 1)
        url = "/v1/catalogs/fm/items/a/image"
        data = c.get(url).content
        size = len(data)
        for past in ("9" * 20 + "-", "9" * 20 + "-" + "9" * 25, "9" * 5000 + "-"):
            r = c.get(url, headers={"Range": "bytes=" + past})
            assert r.status_code == 416, (past[:30], r.status_code)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["content-range"] == f"bytes */{size}"
        for whole in ("0-" + "9" * 20, "-" + "9" * 20, "0-" + "9" * 5000):
            r = c.get(url, headers={"Range": "bytes=" + whole})
            assert r.status_code == 206 and r.content == data, whole[:30]
            assert r.headers["content-range"] == f"bytes 0-{size - 1}/{size}"


def test_model_download_revalidates_and_answers_if_match(make_client: ClientFactory) -> None:
    with make_client() as c:
        url = "/v1/models/tiny/download"
        whole = c.get(url)
        etag = whole.headers["etag"]
        assert whole.status_code == 200 and whole.headers["cache-control"] == "no-cache"
        for ok in (etag, "*"):
            assert c.get(url, headers={"If-Match": ok}).content == whole.content
        refused(c.get(url, headers={"If-Match": '"0123"'}))
        refused(c.get(url, headers={"If-Match": '"0123"', "If-None-Match": etag}))
        r304 = c.get(url, headers={"If-None-Match": etag})
        assert r304.status_code == 304 and r304.headers["cache-control"] == "no-cache"
        assert c.get("/v1/models/nope/download", headers={"If-Match": "*"}).status_code == 404


def test_a_conditional_delete_cannot_remove_an_item_added_again_meanwhile(
    make_client: ClientFactory,
) -> None:
    """Round 26: the precondition was checked, then the item deleted, so another client's
    delete and re-add of the id landing in between lost the new picture. The check now runs
    under the write guard with the delete: the other client waits, and its picture stays."""
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        add(c, "sku-1", 1)
        seen = c.get("/v1/catalogs/fm/items/sku-1/image").headers["etag"]
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        checked, replaced = threading.Event(), threading.Event()

        def slow_check(item: Any) -> None:  # the check passed; another client acts now
            assert f'"{item.image.sha256[:32]}"' == seen
            checked.set()
            replaced.wait(1.0)  # gives the other client a second to slip in (it cannot)

        def other_client() -> None:
            checked.wait(5)
            with contextlib.suppress(ItemNotFound):  # the first delete went first
                service.delete_item("fm", "sku-1")
            service.add("fm", [picture(2)], [ItemSpec(id="sku-1")])
            replaced.set()

        other = threading.Thread(target=other_client)
        other.start()
        service.delete_item("fm", "sku-1", slow_check)
        other.join(10)
        r = c.get("/v1/catalogs/fm/items/sku-1/image")
        assert r.status_code == 200 and r.content == picture(2)  # the new picture stayed
