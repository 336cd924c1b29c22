"""`skip_duplicates=true` on every add route (multipart, raw body, JSON, zip): an upload whose
answer was lost can be sent again without adding copies. Real tiny model, embedded store."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.app.catalog.test_api import problem
from tests.images import zip_bytes

ClientFactory = Callable[..., TestClient]
ITEMS = "/v1/catalogs/fm/items"


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def pics(fashion_mnist: Any) -> list[bytes]:
    return [png(fashion_mnist.x_test[i].squeeze()) for i in range(12)]


def files(*data: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"f{i}.png", d, "image/png")) for i, d in enumerate(data)]


def count(c: TestClient) -> int:
    n: int = c.get("/v1/catalogs/fm").json()["item_count"]
    return n


def test_multipart_raw_and_json_adds_skip_copies_when_asked(
    make_client: ClientFactory, pics: list[bytes]
) -> None:
    with make_client(default_catalogs={}) as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        first = c.post(ITEMS, files=files(*pics[:3]), data={"label": ["a", "a", "b"]})
        assert first.status_code == 201, first.text
        ids = first.json()["ids"]
        assert first.json()["added"] == 3 and first.json()["duplicates"] == []
        # Sent again with one new picture: only that one is added; each copy names its item.
        again = c.post(
            f"{ITEMS}?skip_duplicates=true",
            files=files(*pics[:4]),
            data={"label": ["a", "a", " b ", "b"]},  # labels compare as stored (trimmed)
        )
        assert again.status_code == 201, again.text
        body = again.json()
        assert body["added"] == 1 and len(body["ids"]) == 1 and body["duplicates_skipped"] == 3
        assert [
            (d["index"], d["filename"], d["label"], d["duplicate_of"]) for d in body["duplicates"]
        ] == [
            (0, "f0.png", "a", ids[0]),
            (1, "f1.png", "a", ids[1]),
            (2, "f2.png", "b", ids[2]),
        ]
        assert all(d["score"] >= 0.99999 for d in body["duplicates"])
        assert count(c) == 4
        # The same picture under another label is not a copy; twice in one request it is.
        r = c.post(
            f"{ITEMS}?skip_duplicates=true",
            files=files(pics[0], pics[5], pics[5]),
            data={"label": ["b", "c", "c"]},
        )
        body = r.json()
        assert r.status_code == 201 and body["added"] == 2, r.text
        assert [(d["index"], d["duplicate_of"]) for d in body["duplicates"]] == [
            (2, body["ids"][1])
        ]
        assert count(c) == 6
        # Raw body: every image a copy -> 200, nothing created, the match named.
        r = c.post(f"{ITEMS}?skip_duplicates=true&label=a", content=pics[0])
        assert r.status_code == 200, r.text
        assert r.json()["ids"] == [] and r.json()["duplicates"][0]["duplicate_of"] == ids[0]
        # JSON images, unlabelled: a copy of the unlabelled item only.
        b64 = {"images": [{"b64": base64.b64encode(pics[6]).decode()}]}
        bare = c.post(ITEMS, json=b64).json()["ids"][0]
        r = c.post(f"{ITEMS}?skip_duplicates=1", json=b64)
        assert r.status_code == 200 and r.json()["duplicates"][0]["duplicate_of"] == bare, r.text
        assert r.json()["duplicates"][0]["label"] is None
        r = c.post(ITEMS, params={"skip_duplicates": "true"}, content=pics[0])  # unlabelled
        assert r.status_code == 201 and r.json()["added"] == 1, r.text
        assert count(c) == 8
        # The default is unchanged: a re-sent picture is added again.
        r = c.post(f"{ITEMS}?label=a", content=pics[0])
        assert r.status_code == 201 and r.json()["added"] == 1 and r.json()["duplicates"] == []
        assert count(c) == 9
        # A value that is not a boolean is a clear 422.
        r = problem(c.post(f"{ITEMS}?skip_duplicates=maybe&label=a", content=pics[0]), 422)
        assert "skip_duplicates" in r["detail"]
        assert count(c) == 9


def test_a_zip_sent_again_after_a_cut_off_upload_adds_only_what_is_missing(
    make_client: ClientFactory, pics: list[bytes]
) -> None:
    """The server killed mid-upload leaves the committed batches; the client, without an
    answer, sends the whole zip again."""
    entries = {f"{'cat' if i % 2 else 'dog'}/{i}.png": p for i, p in enumerate(pics[:10])}
    names = list(entries)
    headers = {"content-type": "application/zip"}
    with make_client(default_catalogs={}) as c:
        assert c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}).status_code == 201
        part = zip_bytes({n: entries[n] for n in names[:4]})  # what went in before the cut
        assert c.post(f"{ITEMS}:zip", content=part, headers=headers).status_code == 200
        before = {i["metadata"]["file"]: i["id"] for i in c.get(ITEMS).json()["items"]}
        r = c.post(f"{ITEMS}:zip?skip_duplicates=true", content=zip_bytes(entries), headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["added"] == {"dog": 3, "cat": 3} and body["duplicates_skipped"] == 4
        assert {d["name"]: d["duplicate_of"] for d in body["duplicates"]} == before
        assert {d["label"] for d in body["duplicates"]} == {"cat", "dog"}
        assert count(c) == 10
        # Once more: everything is a copy, nothing is added.
        r = c.post(f"{ITEMS}:zip?skip_duplicates=true", content=zip_bytes(entries), headers=headers)
        assert r.json()["added"] == {} and r.json()["duplicates_skipped"] == 10, r.text
        assert count(c) == 10
        # Without the flag the zip adds copies, as before.
        r = c.post(f"{ITEMS}:zip", content=part, headers=headers)
        assert r.json()["added"] == {"dog": 2, "cat": 2} and r.json()["duplicates"] == []
        assert count(c) == 14
        problem(c.post(f"{ITEMS}:zip?skip_duplicates=perhaps", content=part, headers=headers), 422)
