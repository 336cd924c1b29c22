"""Catalog HTTP API round trips on the real tiny bundle: problem+json errors, auth, caching."""

from __future__ import annotations

import base64
import io
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.catalog.outcomes import ItemSpec
from app.catalog.reindex import REINDEX_ROUNDS
from tests.app.catalog.conftest import rebuild_bundle

ClientFactory = Callable[..., TestClient]
N = 40


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 else arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def images(fashion_mnist: Any) -> list[tuple[bytes, str]]:
    fm = fashion_mnist
    return [(png(fm.x_test[i]), fm.class_names[fm.y_test[i]]) for i in range(N)]


def fill(
    c: TestClient, images: list[tuple[bytes, str]], name: str = "fm", model: str = "tiny"
) -> None:
    assert c.post("/v1/catalogs", json={"name": name, "model": model}).status_code == 201
    for start in range(0, len(images), 20):  # within max_batch_images
        part = range(start, min(start + 20, len(images)))
        files = [("file", (f"{i}.png", images[i][0], "image/png")) for i in part]
        form = {
            "id": [f"p{i:03d}" for i in part],
            "label": [images[i][1] for i in part],
            "metadata": [json.dumps({"n": i}) for i in part],
        }
        r = c.post(f"/v1/catalogs/{name}/items", files=files, data=form)
        assert r.status_code == 201, r.text


def problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def test_catalog_round_trip(make_client: ClientFactory, images: list[tuple[bytes, str]]) -> None:
    with make_client() as c:
        r = c.post("/v1/catalogs", json={"name": "fm", "model": "tiny", "description": "FM test"})
        assert r.status_code == 201 and r.headers["location"] == "/v1/catalogs/fm"
        info = r.json()
        assert info["model"]["name"] == "tiny" and len(info["model"]["sha256"]) == 64
        assert info["model"]["embedding_dim"] == 32 and info["stale"] is False
        # per-file fields
        files = [("file", (f"{i}.png", d, "image/png")) for i, (d, _) in enumerate(images[:30])]
        form = {
            "id": [f"p{i:03d}" for i in range(30)],
            "label": [lab for _, lab in images[:30]],
            "metadata": [json.dumps({"n": i}) for i in range(30)],
        }
        r = c.post("/v1/catalogs/fm/items", files=files, data=form)
        assert r.status_code == 201
        assert r.json()["ids"] == [f"p{i:03d}" for i in range(30)]
        # one JSON array for several files; generated ids
        arr = [{"label": images[i][1], "metadata": {"n": i}} for i in range(30, 35)]
        files = [("file", (f"{i}.png", images[i][0], "image/png")) for i in range(30, 35)]
        r = c.post("/v1/catalogs/fm/items", files=files, data={"items": json.dumps(arr)})
        assert r.status_code == 201
        generated = r.json()["ids"]
        assert len(set(generated)) == 5
        # raw body with query parameters
        r = c.post(
            "/v1/catalogs/fm/items?id=raw1&label=Bag&metadata=" + json.dumps({"sku": "B-1"}),
            content=images[35][0],
        )
        assert r.status_code == 201 and r.json()["items"][0]["metadata"] == {"sku": "B-1"}
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 36
        assert [x["name"] for x in c.get("/v1/catalogs").json()["catalogs"]] == ["fm"]

        # listing pages through everything once
        seen: list[str] = []
        after = None
        while True:
            page = c.get(
                "/v1/catalogs/fm/items", params={"limit": 10, **({"after": after} if after else {})}
            ).json()
            seen += [it["id"] for it in page["items"]]
            if page["next_after"] is None:
                break
            after = page["next_after"]
        assert sorted(seen) == seen and len(seen) == 36
        item = c.get("/v1/catalogs/fm/items/p003").json()
        assert item["label"] == images[3][1] and item["metadata"] == {"n": 3}
        assert item["image"]["content_type"] == "image/png" and item["image"]["width"] == 28

        # image and thumbnail: content types, ETag, 304
        r = c.get(item["image_url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == images[3][0] and r.headers["cache-control"] == "no-cache"
        r304 = c.get(item["image_url"], headers={"If-None-Match": r.headers["etag"]})
        assert r304.status_code == 304
        t = c.get(item["thumbnail_url"])
        assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(t.content)).size == (28, 28)  # never upscaled

        # search by stored item: itself excluded, k honoured, scores sorted
        r = c.post("/v1/catalogs/fm/search?k=5", json={"item_id": "p003"})
        body = r.json()
        ids = [n["id"] for n in body["neighbors"]]
        assert r.status_code == 200 and len(ids) == 5 and "p003" not in ids
        scores = [n["score"] for n in body["neighbors"]]
        assert scores == sorted(scores, reverse=True)
        assert body["neighbors"][0]["thumbnail_url"].endswith("/thumbnail")
        # search by image: the identical stored image comes first with cosine ~1
        r = c.post(
            "/v1/catalogs/fm/search?k=3", files=[("file", ("q.png", images[3][0], "image/png"))]
        )
        assert r.json()["neighbors"][0]["id"] == "p003"
        assert r.json()["neighbors"][0]["score"] == pytest.approx(1.0, abs=1e-4)
        assert r.json()["timings"]["embed_ms"] > 0
        # label filter: only that label, and as many as exist
        label = images[3][1]
        n_label = sum(1 for _, lab in images[:30] if lab == label) + sum(
            1 for _, lab in images[30:35] if lab == label
        )
        r = c.post(f"/v1/catalogs/fm/search?k=100&label={label}", content=images[3][0])
        got = r.json()["neighbors"]
        assert {n["label"] for n in got} == {label} and len(got) == n_label
        # search by vector (a client-held embedding of the same model)
        vec = np.random.default_rng(0).standard_normal(32).tolist()
        r = c.post("/v1/catalogs/fm/search", json={"vector": vec, "k": 2})
        assert r.status_code == 200 and len(r.json()["neighbors"]) == 2

        # delete: gone from reads and searches
        assert c.delete("/v1/catalogs/fm/items/p003").status_code == 204
        problem(c.get("/v1/catalogs/fm/items/p003"), 404)
        problem(c.get(item["image_url"]), 404)
        r = c.post("/v1/catalogs/fm/search?k=100", content=images[3][0])
        assert "p003" not in [n["id"] for n in r.json()["neighbors"]]
        assert c.delete("/v1/catalogs/fm").status_code == 204
        problem(c.get("/v1/catalogs/fm"), 404)


def test_predict_returns_neighbours_from_the_same_pass(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    with make_client(default_catalogs={"tiny": "fm"}) as c:
        assert c.get("/v1/models/tiny").json()["default_catalog"] is None  # not created yet
        fill(c, images)
        assert c.get("/v1/models/tiny").json()["default_catalog"] == "fm"
        files = [
            ("file", ("a.png", images[5][0], "image/png")),
            ("file", ("b.png", images[6][0], "image/png")),
        ]
        r = c.post("/v1/models/tiny/predict?similar=4", files=files)
        body = r.json()
        assert r.status_code == 200 and body["catalog"] == "fm"
        assert [len(x["similar"]) for x in body["results"]] == [4, 4]
        assert body["results"][0]["similar"][0]["id"] == "p005"
        assert body["results"][0]["predictions"] and body["timings"]["search_ms"] is not None
        assert (
            c.post("/v1/models/tiny/predict", files=files[:1]).json()["results"][0]["similar"]
            is None
        )


def test_bad_input_is_a_clear_problem(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    shutil.copytree(tiny_models_dir / "tiny", models / "other")
    meta = json.loads((models / "other/metadata.json").read_text())
    meta["name"] = "other"
    (models / "other/metadata.json").write_text(json.dumps(meta))
    with make_client(models_dir=models, default_catalogs={}) as c:
        fill(c, images[:10])
        fill(c, images[:3], name="elsewhere", model="other")
        problem(c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}), 409)
        problem(c.post("/v1/catalogs", json={"name": "x", "model": "nope"}), 404)
        problem(c.post("/v1/catalogs", json={"name": "Bad Name!", "model": "tiny"}), 422)
        problem(c.post("/v1/catalogs/nope/search", json={"item_id": "p001"}), 404)
        problem(c.post("/v1/catalogs/nope/items", content=images[0][0]), 404)
        problem(c.post("/v1/catalogs/fm/search", json={"item_id": "missing"}), 404)
        r = problem(c.post("/v1/catalogs/fm/items", content=b"<html>hello</html>"), 415)
        assert "HTML" in r["detail"]
        problem(c.post("/v1/catalogs/fm/items", content=b"\x89PNG\r\n\x1a\nbroken"), 422)
        bad_meta = c.post(
            "/v1/catalogs/fm/items",
            files=[("file", ("a.png", images[0][0], "image/png"))],
            data={"metadata": "{not json"},
        )
        assert "JSON" in problem(bad_meta, 422)["detail"]
        problem(
            c.post("/v1/catalogs/fm/items?metadata=[1,2]", content=images[0][0]), 422
        )  # not an object
        problem(c.post("/v1/catalogs/fm/items?id=p001", content=images[0][0]), 409)  # duplicate
        problem(c.post("/v1/catalogs/fm/items?id=bad%20id", content=images[0][0]), 422)
        files = [("file", (f"{i}.png", images[i][0], "image/png")) for i in range(3)]
        problem(c.post("/v1/catalogs/fm/items", files=files, data={"id": ["a", "b"]}), 422)
        # Query id/label/metadata are for raw bodies; with multipart they were dropped.
        r = problem(c.post("/v1/catalogs/fm/items?label=shoe&id=q1", files=files[:1]), 422)
        assert "text fields" in r["detail"]
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 10  # nothing half-added
        # wrong embedding size, and another model's catalog
        r = problem(c.post("/v1/catalogs/fm/search", json={"vector": [0.1] * 7}), 422)
        assert "32" in r["detail"]
        problem(c.post("/v1/catalogs/fm/search?k=101", json={"item_id": "p001"}), 422)
        # JSON types as declared: lax parsing took `"k": true` as 1 and "2" in a vector as 2.0.
        r = problem(c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "k": True}), 422)
        assert "k:" in r["detail"] and "integer" in r["detail"], r
        r = problem(c.post("/v1/catalogs/fm/search", json={"vector": [0.1] * 31 + ["2"]}), 422)
        assert "element 31 is a string" in r["detail"], r
        # Round 31: a 256 KiB body of 85,000 `[]`s was 85,000 errors, a 4 MB answer built on
        # the event loop (0.9 s each: two clients held /healthz up for 1.3 s); now one error.
        garbage = b'{"vector":[' + b",".join([b"[]"] * 85_000) + b"]}"
        r = c.post(
            "/v1/catalogs/fm/search", content=garbage, headers={"content-type": "application/json"}
        )
        assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
        assert "vector: element 0 is an array" in r.json()["detail"]
        # unknown keys are one error too (29,600 of them were 0.1-0.46 s each), listing ten
        extra = {f"x{i}": i for i in range(12)} | {"item_id": "p001"}
        r = problem(c.post("/v1/catalogs/fm/search", json=extra), 422)
        assert "unknown key(s) 'x0', 'x1'" in r["detail"] and "'x10'" not in r["detail"], r
        assert "and 2 more; it takes item_id, k, label, vector." in r["detail"], r
        # A whole number written as a float is an integer, as in JSON Schema (json.dumps of a
        # float k writes 2.0; it was a 422); a fraction, or too large a whole number, is not.
        r = c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "k": 2.0})
        assert r.status_code == 200 and len(r.json()["neighbors"]) == 2, r.text
        r = problem(c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "k": 2.5}), 422)
        assert (
            "k: Input should be a valid integer, got a number with a fractional part"
            in (r["detail"])
        ), r
        r = problem(c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "k": 1e300}), 422)
        assert "k:" in r["detail"] and "100" in r["detail"], r
        problem(c.post("/v1/catalogs", json={"name": 7, "model": "tiny"}), 422)
        # Both kinds of query at once: the vector was used and the missing item named as query.
        both = {"item_id": "missing", "vector": [0.1] * 32}
        assert "not both" in problem(c.post("/v1/catalogs/fm/search", json=both), 422)["detail"]
        vec = {"vector": [0.1] * 32}
        problem(c.post("/v1/catalogs/fm/search?item_id=p001", json=vec), 422)
        # An image with ?item_id=: the item was used and the image ignored.
        r = problem(c.post("/v1/catalogs/fm/search?item_id=p001", content=images[0][0]), 422)
        assert "not both" in r["detail"]
        r = problem(c.post("/v1/catalogs/fm/search?item_id=p001", files=files[:1]), 422)
        assert "not both" in r["detail"]
        assert c.post("/v1/catalogs/fm/search?item_id=p001").status_code == 200  # no body
        r = problem(
            c.post("/v1/models/tiny/predict?similar=3&catalog=elsewhere", content=images[0][0]), 409
        )
        assert "other" in r["detail"]
        r = problem(c.post("/v1/models/tiny/predict?similar=3", content=images[0][0]), 422)
        # no default: the catalogs of its embeddings are named (round 42: a user had to guess)
        assert "no default catalog" in r["detail"] and "(its catalogs: fm)" in r["detail"], r
        # catalog= without similar= was ignored in silence; it says what it is for now.
        r = problem(c.post("/v1/models/tiny/predict?catalog=fm", content=images[0][0]), 422)
        assert "similar=k" in r["detail"]


def test_lone_surrogates_extreme_numbers_and_padded_label_filters(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    """A `\\ud800` escape is valid JSON syntax but not text: stored in an item's metadata it
    once made every later listing of the catalog a 500; in a search body it was a 500 at once.
    Finite vectors whose float32 squares overflow or underflow have a direction all the same."""
    lone = b'{"a": "\\ud800"}'
    json_body = {"content-type": "application/json"}
    with make_client(default_catalogs={}) as c:
        fill(c, images[:3])
        r = problem(
            c.post(f"/v1/catalogs/fm/items?metadata={lone.decode()}", content=images[3][0]), 422
        )
        assert "surrogate" in r["detail"] and "$.a" in r["detail"]
        form = {"metadata": lone.decode()}
        files = [("file", ("a.png", images[3][0], "image/png"))]
        assert (
            "surrogate"
            in problem(c.post("/v1/catalogs/fm/items", files=files, data=form), 422)["detail"]
        )
        items = json.dumps([{"id": "x", "metadata": {"k": "LONE"}}]).replace("LONE", "\\udfff")
        r = c.post("/v1/catalogs/fm/items", files=files, data={"items": items})
        assert "$[0].metadata.k" in problem(r, 422)["detail"]
        for body in (b'{"label": "\\ud800", "vector": [0.1]}', b'{"item_id": "\\udc00"}'):
            problem(c.post("/v1/catalogs/fm/search", content=body, headers=json_body), 422)
        # The UTF-8 bytes of a surrogate, which json.loads of bytes lets through.
        raw = b'{"item_id": "\xed\xa0\x80"}'
        problem(c.post("/v1/catalogs/fm/search", content=raw, headers=json_body), 422)
        # A proper pair is one character, and welcome.
        pair = b'{"item_id": "\\ud83d\\ude00"}'
        problem(
            c.post("/v1/catalogs/fm/search", content=pair, headers=json_body), 404
        )  # no such id
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 3  # nothing stored
        assert c.get("/v1/catalogs/fm/items").status_code == 200
        for scale in (3e19, 1e38, 1e-23):
            r = c.post("/v1/catalogs/fm/search?k=2", json={"vector": [scale] * 32})
            assert r.status_code == 200, (scale, r.text)
        r = problem(c.post("/v1/catalogs/fm/search", json={"vector": [1e39] * 32}), 422)
        assert "float32" in r["detail"]
        # A number literal beyond float64 became inf: stored as `Infinity`, answered as null.
        for meta in ('{"a": 1E400}', '{"a": [-1e999]}'):
            r = c.post("/v1/catalogs/fm/items", files=files, data={"metadata": meta})
            assert "64-bit float" in problem(r, 422)["detail"], meta
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 3
        # Label filters are trimmed as stored labels are.
        label = images[0][1]
        want = c.get("/v1/catalogs/fm/items", params={"label": label}).json()["items"]
        got = c.get("/v1/catalogs/fm/items", params={"label": f" {label} "}).json()["items"]
        assert want and got == want
        search = "/v1/catalogs/fm/search"
        plain = c.post(search, params={"item_id": "p001", "label": label}).json()["neighbors"]
        spaced = c.post(search, params={"item_id": "p001", "label": f"{label} "}).json()
        spaced = spaced["neighbors"]
        assert plain and spaced == plain
        # Labels are stored composed (NFC): a decomposed 'é' (macOS file names) is the same label.
        one = [("file", ("a.png", images[3][0], "image/png"))]
        assert c.post("/v1/catalogs/fm/items", files=one, data={"label": "cafe\u0301"}).is_success
        got = c.get("/v1/catalogs/fm/items", params={"label": "caf\u00e9"}).json()["items"]
        assert [i["label"] for i in got] == ["caf\u00e9"]


def test_writes_need_the_api_key(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    with make_client(api_key="s3cret") as c:
        problem(c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}), 401)
        key = {"X-API-Key": "s3cret"}
        assert (
            c.post("/v1/catalogs", json={"name": "fm", "model": "tiny"}, headers=key).status_code
            == 201
        )
        problem(c.post("/v1/catalogs/fm/items", content=images[0][0]), 401)
        r = c.post(
            "/v1/catalogs/fm/items?id=a",
            content=images[0][0],
            headers={"Authorization": "Bearer s3cret"},
        )
        assert r.status_code == 201
        problem(c.delete("/v1/catalogs/fm/items/a"), 401)
        problem(c.delete("/v1/catalogs/fm"), 401)
        # reads and searches stay open by default
        assert c.get("/v1/catalogs/fm/items/a").status_code == 200
        assert c.post("/v1/catalogs/fm/search", json={"item_id": "a"}).status_code == 200


def test_changed_model_build_is_refused_until_reindexed(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    with make_client(models_dir=models) as c:
        fill(c, images[:12])
    rebuild_bundle(models / "tiny")
    with make_client(models_dir=models) as c:
        assert c.get("/v1/catalogs/fm").json()["stale"] is True
        r = problem(c.post("/v1/catalogs/fm/search", json={"item_id": "p001"}), 409)
        assert "reindex" in r["detail"] and r["type"].endswith("model-mismatch")
        problem(c.post("/v1/catalogs/fm/items?id=new", content=images[20][0]), 409)
        r = c.post("/v1/catalogs/fm/reindex")
        assert r.status_code == 200 and r.json()["items"] == 12
        assert (
            r.json()["catalog"]["model"]["version"] == "2" and r.json()["catalog"]["stale"] is False
        )
        r = c.post("/v1/catalogs/fm/search?k=1", content=images[1][0])
        assert r.status_code == 200 and r.json()["neighbors"][0]["id"] == "p001"
        # Bound to the served build now: a reindex has nothing to do, unless forced.
        r = c.post("/v1/catalogs/fm/reindex")
        assert r.status_code == 200 and r.json()["items"] == 0, r.text
        r = c.post("/v1/catalogs/fm/reindex?force=true")
        assert r.status_code == 200 and r.json()["items"] == 12, r.text


def test_an_add_racing_a_reindex_stores_no_vectors_of_the_old_build(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    """Round 26: an add embedded with one build, then committed after a reindex had rebound
    the catalog to another, stored old-build vectors in a catalog that said `stale: false`
    (searches with those pictures scored 0.5 instead of 1). It is a 409 now, nothing added."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    with make_client(models_dir=models) as c:
        fill(c, images[:4])
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        real = service.embeds  # what an add embeds with

        def reindexed_meanwhile(loaded: Any, data: Any, *seen: Any) -> Any:
            vectors = real(loaded, data, *seen)
            service.embeds = real
            rebuild_bundle(models / "tiny")
            c.app.state.registry.refresh()  # type: ignore[attr-defined]
            assert service.reindex("fm")[1] == 4  # rebound to the new build, 4 re-embedded
            return vectors

        service.embeds = reindexed_meanwhile
        r = problem(c.post("/v1/catalogs/fm/items?id=late", content=images[9][0]), 409)
        assert r["type"].endswith("/model-mismatch") and "Send them again" in r["detail"]
        info = c.get("/v1/catalogs/fm").json()
        assert info["item_count"] == 4 and info["stale"] is False
        assert c.post("/v1/catalogs/fm/items?id=late", content=images[9][0]).status_code == 201


def test_a_catalog_is_reindexed_once_at_a_time(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    # Six reindexes of one catalog at once did the same work six times; a second one in the
    # same process is a 409 while the first runs.
    with make_client() as c:
        fill(c, images[:12])
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        entered, release = threading.Event(), threading.Event()
        embed = service.embed

        def held(*args: Any) -> Any:  # the real embedding, once the test lets it go
            entered.set()
            release.wait(30)
            return embed(*args)

        service.embed = held
        first: list[Any] = []
        t = threading.Thread(target=lambda: first.append(service.reindex("fm", force=True)))
        t.start()
        try:
            assert entered.wait(30)
            r = problem(c.post("/v1/catalogs/fm/reindex?force=true"), 409)
            assert "being reindexed already" in r["detail"]
        finally:
            release.set()
            t.join(30)
        assert first and first[0][1] == 12
        service.embed = embed
        assert c.post("/v1/catalogs/fm/reindex?force=true").json()["items"] == 12


def test_catalogs_survive_a_restart(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    with make_client() as c:
        fill(c, images)
        c.delete("/v1/catalogs/fm/items/p007")
        before = c.post("/v1/catalogs/fm/search?k=10", json={"item_id": "p001"}).json()["neighbors"]
    with make_client() as c:
        assert c.get("/v1/catalogs/fm").json()["item_count"] == N - 1
        after = c.post("/v1/catalogs/fm/search?k=10", json={"item_id": "p001"}).json()["neighbors"]
        assert [n["id"] for n in after] == [n["id"] for n in before]
        problem(c.get("/v1/catalogs/fm/items/p007"), 404)
        assert c.get("/v1/catalogs/fm/items/p008/thumbnail").status_code == 200


def test_reindex_with_an_image_file_missing_is_409_naming_the_item(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    """An item whose stored image file is gone (a damaged data folder; it was a
    FileNotFoundError and a 500 once): 409 naming the item and what to do, nothing rebound."""
    with make_client() as c:
        fill(c, images[:12])
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        item = c.get("/v1/catalogs/fm/items/p003").json()
        before = c.get("/v1/catalogs/fm").json()
        service.blobs.image_path(item["image"]["sha256"]).unlink()
        r = problem(c.post("/v1/catalogs/fm/reindex?force=true"), 409)
        assert "'p003'" in r["detail"] and "missing from the data folder" in r["detail"]
        assert c.get("/v1/catalogs/fm").json() == before


def test_a_damaged_image_file_is_named_by_reindex_and_repaired_by_uploading_it_again(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    """A stored image truncated on disk was served as it was, kept when the same image was
    uploaded again, and failed a reindex as "image 1: damaged" naming no item."""
    with make_client() as c:
        fill(c, images[:12])
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        item = c.get("/v1/catalogs/fm/items/p003").json()
        path = service.blobs.image_path(item["image"]["sha256"])
        path.write_bytes(images[3][0][:100])
        r = problem(c.post("/v1/catalogs/fm/reindex?force=true"), 409)
        assert "'p003'" in r["detail"] and "damaged" in r["detail"], r["detail"]
        r = c.post("/v1/catalogs/fm/items?id=again", content=images[3][0])
        assert r.status_code == 201, r.text
        assert c.get("/v1/catalogs/fm/items/p003/image").content == images[3][0]
        assert c.post("/v1/catalogs/fm/reindex?force=true").status_code == 200


def _writes_during_reindex(
    service: Any, images: list[tuple[bytes, str]], every_round: bool
) -> tuple[list[str], list[threading.Thread]]:
    """Make service.embed start a concurrent client's write each time the reindex embeds: an
    add (and, the first time, a delete of p003), in another thread, waited for up to 2 s (a
    write that must wait for the reindex's last round cannot finish before it)."""
    real = service.embed
    added: list[str] = []
    writers: list[threading.Thread] = []

    def write(first: bool, item_id: str, data: bytes) -> None:
        if first:
            service.delete_item("fm", "p003")
        service.add("fm", [data], [ItemSpec(id=item_id)])

    def embed(loaded: Any, datas: list[bytes], *seen: Any) -> Any:
        out = real(loaded, datas, *seen)
        if threading.current_thread() not in writers and (every_round or not added):
            item_id = f"late{len(added)}"
            t = threading.Thread(
                target=write, args=(not added, item_id, images[20 + len(added)][0])
            )
            added.append(item_id)
            writers.append(t)
            t.start()
            t.join(timeout=2)
        return out

    service.embed = embed
    return added, writers


@pytest.mark.parametrize(  # every round: 2.2 s, full runs only
    "every_round",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["one-write", "writes-every-round"],
)
def test_a_reindex_catches_up_with_writes_made_while_it_runs(
    make_client: ClientFactory, images: list[tuple[bytes, str]], every_round: bool
) -> None:
    """Fuzz round 3: a reindex racing a stream of writes answered 'run it again' 65 times in
    77. Now a changed catalog is caught up (only the new images are embedded) and rebound:
    the item deleted meanwhile is gone, those added meanwhile are found by their own image.
    With a write in every round, the last round holds the write guard: the reindex still
    finishes, and the write that had to wait for it lands right after."""
    with make_client() as c:
        fill(c, images[:12])
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        added, writers = _writes_during_reindex(service, images, every_round)
        r = c.post("/v1/catalogs/fm/reindex?force=true")  # the same build: forced
        del service.embed  # searches below embed too
        for t in writers:
            t.join(timeout=30)
        assert r.status_code == 200, r.text
        assert len(added) == (REINDEX_ROUNDS if every_round else 1)
        waited = 1 if every_round else 0  # the write started in the guarded last round
        assert r.json()["items"] == 12 - 1 + len(added) - waited  # p003 deleted
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 12 - 1 + len(added)
        problem(c.get("/v1/catalogs/fm/items/p003"), 404)
        for i, item_id in enumerate(added):
            hit = c.post("/v1/catalogs/fm/search?k=1", content=images[20 + i][0]).json()
            assert hit["neighbors"][0]["id"] == item_id and hit["neighbors"][0]["score"] > 0.999


def test_stored_images_ranges_and_a_delete_mid_answer(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    with make_client() as c:
        fill(c, images[:2])
        url = "/v1/catalogs/fm/items/p001/image"
        whole = c.get(url)
        assert whole.status_code == 200 and whole.content == images[1][0]
        assert whole.headers["accept-ranges"] == "bytes"
        size = len(whole.content)
        part = c.get(url, headers={"Range": "bytes=4-9"})
        assert part.status_code == 206 and part.content == whole.content[4:10]
        assert part.headers["content-range"] == f"bytes 4-9/{size}"
        for ignored in ("bytes=abc", "bytes=9-4", "bytes=0-1,3-4"):
            r = c.get(url, headers={"Range": ignored})
            assert r.status_code == 200 and r.content == whole.content, ignored
        r = problem(c.get(url, headers={"Range": f"bytes={size}-"}), 416)
        assert c.get(url, headers={"Range": f"bytes={size}-"}).headers["content-range"] == (
            f"bytes */{size}"
        )
        assert r["type"].endswith("range-not-satisfiable")
        # Once the stored file is gone (a delete collected it), the answer is a 404 problem.
        service = c.app.state.catalogs  # type: ignore[attr-defined]
        sha = c.get("/v1/catalogs/fm/items/p001").json()["image"]["sha256"]
        service.blobs.image_path(sha).unlink()
        problem(c.get(url), 404)


def test_a_json_key_given_twice_is_a_422_naming_its_path(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    """json.loads keeps the last of two equal keys: a create with two names made the second
    catalog (201), where a repeated query parameter is a 422. Every JSON body is read once."""
    json_body = {"content-type": "application/json"}
    with make_client(default_catalogs={}) as c:
        fill(c, images[:3])
        twice = b'{"name": "one", "model": "tiny", "name": "two"}'
        r = problem(c.post("/v1/catalogs", content=twice, headers=json_body), 422)
        assert "'name' more than once (at $.name)" in r["detail"], r["detail"]
        assert [x["name"] for x in c.get("/v1/catalogs").json()["catalogs"]] == ["fm"]
        body = b'{"item_id": "p001", "k": 2, "k": 5}'
        r = problem(c.post("/v1/catalogs/fm/search", content=body, headers=json_body), 422)
        assert "$.k" in r["detail"]
        # Image JSON (its own parser), the multipart `items` array, metadata, the teach request.
        b64 = base64.b64encode(images[3][0]).decode()
        doc = f'{{"images": [{{"b64": "{b64}", "b64": "{b64}"}}]}}'.encode()
        r = problem(c.post("/v1/catalogs/fm/items", content=doc, headers=json_body), 422)
        assert "$.images[0].b64" in r["detail"] and b64[:20] not in r["detail"]
        one = [("file", ("a.png", images[3][0], "image/png"))]
        items = '[{"id": "x", "metadata": {"sku": 1, "sku": 2}}]'
        r = problem(c.post("/v1/catalogs/fm/items", files=one, data={"items": items}), 422)
        assert "'sku'" in r["detail"] and "$[0].metadata.sku" in r["detail"]
        r = problem(
            c.post("/v1/catalogs/fm/items", files=one, data={"metadata": '{"a":1,"a":1}'}), 422
        )
        assert "$.a" in r["detail"]
        r = c.post('/v1/catalogs/fm/items?metadata={"a":1,"a":2}', content=images[3][0])
        assert "$.a" in problem(r, 422)["detail"]
        body = b'{"model": "taught", "model": "other"}'
        r = c.post("/v1/catalogs/fm/train", content=body, headers=json_body)
        assert "'model' more than once" in problem(r, 422)["detail"]
        assert c.get("/v1/catalogs/fm").json()["item_count"] == 3
        # Equal keys in different objects are fine.
        ok = b'{"item_id": "p001", "label": "x"}'
        assert c.post("/v1/catalogs/fm/search", content=ok, headers=json_body).status_code == 200


def test_a_label_filter_longer_than_any_label_is_a_422(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    """Labels are 1-256 characters: a longer (or empty) filter answered 200 with nothing
    found."""
    long = "x" * 257
    with make_client(default_catalogs={}) as c:
        fill(c, images[:3])
        for r in (
            c.post("/v1/catalogs/fm/search", params={"item_id": "p001", "label": long}),
            c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "label": long}),
            c.post("/v1/catalogs/fm/search", json={"vector": [0.1] * 32, "label": long}),
            c.post("/v1/catalogs/fm/search", params={"label": long}, content=images[0][0]),
            c.get("/v1/catalogs/fm/items", params={"label": long}),
        ):
            detail = problem(r, 422)["detail"]
            assert "Invalid label filter" in detail and "1-256 printable characters" in detail
        # An empty filter (or one that trims to nothing) answered 200 with nothing found too.
        for empty in ("", "   "):
            for r in (
                c.post("/v1/catalogs/fm/search", params={"item_id": "p001", "label": empty}),
                c.post("/v1/catalogs/fm/search", json={"item_id": "p001", "label": empty}),
                c.get("/v1/catalogs/fm/items", params={"label": empty}),
            ):
                assert "label filter is empty" in problem(r, 422)["detail"]
        # 256 characters (and a padded one that trims to 256) are labels that may exist.
        for label in ("y" * 256, f"  {'y' * 256} "):
            r = c.post("/v1/catalogs/fm/search", params={"item_id": "p001", "label": label})
            assert r.status_code == 200 and r.json()["neighbors"] == [], r.text


def test_the_number_of_catalogs_is_bounded(make_client: ClientFactory) -> None:
    """GET /v1/catalogs and /metrics list every catalog (no paging), and nothing bounded how
    many a client could create: 3,000 of them (2 KB descriptions, 7 s to make) made each
    listing 6.8 MB, growing without end. Now IMGCLASS_MAX_CATALOGS, counted under the
    cross-process write guard, so creates racing at the limit cannot pass it."""
    with make_client(max_catalogs=3) as c:
        results: list[int] = []

        def create(i: int) -> None:
            r = c.post("/v1/catalogs", json={"name": f"c{i}", "model": "tiny"})
            results.append(r.status_code)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [201] * 3 + [409] * 5, results
        assert len(c.get("/v1/catalogs").json()["catalogs"]) == 3
        body = problem(c.post("/v1/catalogs", json={"name": "more", "model": "tiny"}), 409)
        assert body["type"] == "/problems/catalog-limit" and body["limit_catalogs"] == 3
        assert "IMGCLASS_MAX_CATALOGS" in body["detail"] and "Delete one" in body["detail"]
        name = c.get("/v1/catalogs").json()["catalogs"][0]["name"]
        assert c.delete(f"/v1/catalogs/{name}").status_code == 204
        assert c.post("/v1/catalogs", json={"name": "more", "model": "tiny"}).status_code == 201


def test_teaching_a_stale_catalog_is_refused_before_a_job_starts(
    make_client: ClientFactory,
    images: list[tuple[bytes, str]],
    tiny_models_dir: Path,
    tmp_path: Path,
) -> None:
    """A catalog whose model was replaced (stale until reindexed): the train call answered 202
    and the job failed a moment later with model-mismatch; it is a 409 now, with no job."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir / "tiny", models / "tiny")
    two_labels = [(img, "ab"[i % 2]) for i, (img, _) in enumerate(images[:12])]
    with make_client(models_dir=models) as c:
        fill(c, two_labels)
    rebuild_bundle(models / "tiny")
    with make_client(models_dir=models) as c:
        r = problem(c.post("/v1/catalogs/fm/train", json={"model": "mine"}), 409)
        assert r["type"].endswith("model-mismatch") and "reindex" in r["detail"]
        assert c.get("/v1/jobs").json()["total"] == 0
        assert c.post("/v1/catalogs/fm/reindex").status_code == 200
        assert c.post("/v1/catalogs/fm/train", json={"model": "mine"}).status_code == 202


def test_metadata_size_is_one_measure_in_every_form(
    make_client: ClientFactory, images: list[tuple[bytes, str]]
) -> None:
    # 1,500 emoji are 6,008 bytes of UTF-8 JSON: under the 16 KB limit as a text field and
    # inside an `items` array alike (the array measured json.dumps' \u escapes, 12 bytes each,
    # and refused it); 5,000 (20 KB) are over it in both.
    files = [("file", ("a.png", images[0][0], "image/png"))]
    with make_client() as c:
        assert c.post("/v1/catalogs", json={"name": "m", "model": "tiny"}).status_code == 201
        for n, status in ((1500, 201), (5000, 422)):
            meta = {"a": "\U0001f385" * n}
            as_field = {"metadata": json.dumps(meta, ensure_ascii=False)}
            as_items = {"items": json.dumps([{"metadata": meta}])}
            for form in (as_field, as_items):
                r = c.post("/v1/catalogs/m/items?skip_duplicates=false", files=files, data=form)
                assert r.status_code == status, (n, list(form), r.text)
                if status == 422:
                    assert "16,384 bytes" in r.json()["detail"]


def test_predict_checks_its_similar_catalog_before_decoding(make_client: ClientFactory) -> None:
    # The body is not an image: the catalog's 404 (or 409) comes first, before the decode and
    # the forward pass it used to wait for (about a second for a batch).
    with make_client() as c:
        r = c.post("/v1/models/tiny/predict?similar=3&catalog=nope", content=b"not an image")
        assert r.status_code == 404 and r.json()["type"].endswith("catalog-not-found"), r.text
        assert c.post("/v1/catalogs", json={"name": "t", "model": "tiny"}).status_code == 201
        r = c.post("/v1/models/tiny/predict?similar=3&catalog=t", content=b"not an image")
        assert r.status_code == 415, r.text  # the catalog is fine: now the image is read
