"""Teach through the HTTP API on real Fashion-MNIST test images with the shipped `products`
backbone: job lifecycle, versions, deletion, limits as problem+json, download, similarity."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.api.teach import TeachRequest
from app.bundle import InputSpec
from app.errors import ModelNotFound
from app.imaging import prepare
from app.ingest import limits_from
from app.main import create_app
from app.teach.compose import STAGING_LEFTOVER_S
from app.teach.download import open_download
from tests.app.teach.conftest import (
    BAG,
    SANDAL,
    SNEAKER,
    add_items,
    make_catalog,
    teach_settings,
    wait_job,
)
from tests.conftest import DATA, require


def teach(c: TestClient, catalog: str, model: str, **kw: object) -> dict[str, object]:
    r = c.post(f"/v1/catalogs/{catalog}/train", json={"model": model}, **kw)  # type: ignore[arg-type]
    assert r.status_code == 202, r.text
    assert r.headers["location"] == r.json()["url"]
    return wait_job(c, r.headers["location"])


def predict_labels(c: TestClient, model: str, images: list[bytes]) -> list[str]:
    files = [("file", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)]
    r = c.post(f"/v1/models/{model}/predict", files=files)
    assert r.status_code == 200, r.text
    return [res["predictions"][0]["label"] for res in r.json()["results"]]


def test_teach_predict_version_delete(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    make_catalog(c, "shop", {"sneaker": fm_pngs[SNEAKER][:8], "bag": fm_pngs[BAG][:8]})
    job = teach(c, "shop", "shoes")
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert isinstance(result, dict)
    assert result["model"] == "shoes" and result["version"] == "1"
    metrics = result["metrics"]
    # 8 per class: 5-fold cross-validation predicts every item once.
    assert metrics["n_samples"] == 16 and metrics["split"] == "cross-validation"
    assert sum(map(sum, metrics["confusion"])) == 16
    # Two ordinary categories: ranked, no yes/no threshold (tests/app/teach/test_two_classes.py).
    assert metrics["threshold"] is None and metrics["positive_label"] is None
    assert any("of 8 held-out pictures" in s for s in result["summary"])
    assert any("only 8 examples" in w for w in job["warnings"])

    # Held-out pictures the catalog never saw.
    held = fm_pngs[SNEAKER][40:50] + fm_pngs[BAG][40:50]
    got = predict_labels(c, "shoes", held)
    truth = ["sneaker"] * 10 + ["bag"] * 10
    assert sum(g == t for g, t in zip(got, truth, strict=True)) >= 18, got

    info = c.get("/v1/models/shoes").json()
    assert info["version"] == "1" and info["num_classes"] == 2

    # Re-teach with a third class: version 2 is the default, version 1 stays addressable.
    make_catalog(
        c,
        "shop3",
        {
            "sneaker": fm_pngs[SNEAKER][:10],
            "bag": fm_pngs[BAG][:10],
            "sandal": fm_pngs[SANDAL][:10],
        },
    )
    assert teach(c, "shop3", "shoes")["status"] == "succeeded"
    assert c.get("/v1/models/shoes").json()["num_classes"] == 3
    assert c.get("/v1/models/shoes@1").json()["num_classes"] == 2
    assert c.get("/v1/models/shoes").json()["versions"] == ["1", "2"]
    assert predict_labels(c, "shoes@1", held[:1]) == ["sneaker"]

    # 'shoes@' names no version: it neither deletes every version nor reads the newest.
    # (It breaks the documented pattern: a 422, a 404 before round 42.)
    for r in (c.delete("/v1/models/shoes@"), c.get("/v1/models/shoes@")):
        assert r.status_code == 422 and "@VERSION or nothing" in r.json()["detail"], r.text
    assert c.get("/v1/models/shoes").json()["versions"] == ["1", "2"]
    r = c.delete("/v1/models/shoes@1")
    assert r.status_code == 200 and r.json()["versions"] == ["1"]
    assert c.get("/v1/models/shoes@1").status_code == 404
    assert c.get("/v1/models/shoes").json()["version"] == "2"
    r = c.delete("/v1/models/shoes")
    assert r.status_code == 200 and r.json()["versions"] == ["2"]
    assert c.get("/v1/models/shoes").status_code == 404
    assert c.delete("/v1/models/shoes").status_code == 404
    # Version numbers are never reused (they were: 1 again here, and 2 again after deleting
    # only @2), so a client holding shoes@2 never reaches a different model by that name.
    assert teach(c, "shop", "shoes")["result"]["version"] == "3"  # type: ignore[index]
    assert c.delete("/v1/models/shoes@3").status_code == 200
    assert teach(c, "shop", "shoes")["result"]["version"] == "4"  # type: ignore[index]
    assert c.get("/v1/models/shoes").json()["versions"] == ["4"]
    r = c.delete("/v1/models/products")
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    for shipped_not_served in ("santa", "digits@1"):  # round 28: these were 404s
        r = c.delete(f"/v1/models/{shipped_not_served}")
        assert r.status_code == 409 and r.json()["type"].endswith("shipped-model"), r.text


def test_refusals_are_problem_json(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    make_catalog(c, "one", {"sneaker": fm_pngs[SNEAKER][:3]})
    make_catalog(c, "thin", {"sneaker": fm_pngs[SNEAKER][:3], "bag": fm_pngs[BAG][:1]})
    make_catalog(c, "pair", {"sneaker": fm_pngs[SNEAKER][:3], "bag": fm_pngs[BAG][:3]})
    trio = {"sneaker": fm_pngs[SNEAKER][:3], "bag": fm_pngs[BAG][:3], "sandal": fm_pngs[SANDAL][:3]}
    make_catalog(c, "trio", trio)
    cases = [
        ("one", {"model": "Bad Name"}, 422, "invalid-model-name"),
        ("one", {"model": "products"}, 409, "model-name-taken"),
        # Shipped but not enabled on this server: a full server would refuse to serve it.
        ("one", {"model": "digits"}, 409, "model-name-taken"),
        ("nope", {"model": "x"}, 404, "catalog-not-found"),
        ("one", {"model": "x"}, 422, "not-enough-examples"),
        ("thin", {"model": "x"}, 422, "not-enough-examples"),
        ("thin", {"model": "x", "seed": -1}, 422, "invalid-request"),
        ("thin", {"model": "x", "epochs": 3}, 422, "invalid-request"),
        ("thin", {"model": "x", "description": "a" * 501}, 422, "invalid-request"),
        # A label the catalog lacks (it was accepted, then ignored or failed inside the job).
        ("pair", {"model": "x", "positive_label": "santa"}, 422, "invalid-request"),
        # Three labels: a threshold for one of them means nothing (it was ignored in silence).
        ("trio", {"model": "x", "positive_label": "bag"}, 422, "invalid-request"),
    ]
    for catalog, body, status, slug in cases:
        r = c.post(f"/v1/catalogs/{catalog}/train", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["type"].endswith(slug), r.json()
    assert c.get("/v1/jobs/doesnotexist").status_code == 404
    r = c.post(
        "/v1/catalogs/one/train", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert c.delete("/v1/models/x@abc").status_code == 404
    assert c.delete("/v1/models/Bad@1").status_code == 422
    assert c.get("/v1/models/nope/download").status_code == 404
    assert c.get("/v1/jobs/..%2F..%2Fetc").status_code == 400  # an encoded / (round 26)


def test_write_key_required(tmp_path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    key = {"X-API-Key": "s3cret"}
    with TestClient(create_app(teach_settings(tmp_path, api_key="s3cret"))) as c:
        r = c.post("/v1/catalogs", json={"name": "k", "model": "products"}, headers=key)
        assert r.status_code == 201
        assert c.post("/v1/catalogs/k/train", json={"model": "m"}).status_code == 401
        assert c.delete("/v1/models/m").status_code == 401
        assert c.delete("/v1/jobs/abc").status_code == 401


def test_class_limit_is_413(tmp_path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    with TestClient(create_app(teach_settings(tmp_path, teach_max_classes=2))) as c:
        make_catalog(c, "three", {str(k): fm_pngs[k][:2] for k in (SNEAKER, BAG, SANDAL)})
        r = c.post("/v1/catalogs/three/train", json={"model": "m"})
        assert r.status_code == 413 and r.json()["type"].endswith("teach-limit")


def test_versions_beyond_the_bound_are_409_at_submit(tmp_path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    settings = teach_settings(tmp_path, teach_max_versions=1, teach_max_models=1)
    with TestClient(create_app(settings)) as c:
        make_catalog(c, "two", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
        assert teach(c, "two", "m")["status"] == "succeeded"
        for model, says in (("m", "already has 1 versions"), ("n", "1 taught models are kept")):
            r = c.post("/v1/catalogs/two/train", json={"model": model})
            assert r.status_code == 409, r.text
            problem = r.json()
            assert r.headers["content-type"] == "application/problem+json"
            assert problem["type"].endswith("taught-model-limit") and says in problem["detail"]
        assert c.delete("/v1/models/m").status_code == 200
        assert teach(c, "two", "n")["status"] == "succeeded"


def test_jobs_are_listed_newest_first(teach_client: TestClient, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    make_catalog(c, "l", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
    assert c.get("/v1/jobs").json() == {"jobs": [], "total": 0}
    first, second = teach(c, "l", "a"), teach(c, "l", "b")
    listed = c.get("/v1/jobs").json()
    assert [j["id"] for j in listed["jobs"]] == [second["id"], first["id"]]
    assert (
        listed["total"] == 2 and listed["jobs"][0] == second
    )  # the same view as GET /v1/jobs/{id}
    one = c.get("/v1/jobs", params={"model": "a", "status": "succeeded", "limit": 1}).json()
    assert [j["id"] for j in one["jobs"]] == [first["id"]] and one["total"] == 1
    assert c.get("/v1/jobs", params={"status": "running"}).json()["total"] == 0
    for bad in ({"status": "done"}, {"limit": 0}, {"limit": 101}):
        r = c.get("/v1/jobs", params=bad)
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"


def test_a_restarted_server_lists_finished_jobs_whole(tmp_path: Path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    """Finished jobs read from their files are cached without result and warnings (round 16:
    500 jobs of 1.4 MB had taken +342 MB of each process); the listed ones are read whole, and
    a listing of more than 10 is built as a big answer."""
    with TestClient(create_app(teach_settings(tmp_path))) as c:
        make_catalog(c, "l", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
        done = teach(c, "l", "a")
    with TestClient(create_app(teach_settings(tmp_path))) as c:  # nothing in memory now
        whole = c.get(f"/v1/jobs/{done['id']}").json()
        assert whole["result"]["labels"] == ["bag", "sneaker"]
        for limit in (1, 11):
            listed = c.get("/v1/jobs", params={"limit": limit}).json()
            assert listed["jobs"] == [whole] and listed["total"] == 1
        runner = c.app.state.teach  # type: ignore[attr-defined]
        cached = runner.store.all()
        assert [j.id for j in cached] == [done["id"]] and cached[0].result is None


def _model_labels(c: TestClient) -> set[str]:
    text = c.get("/metrics").text
    return {
        s.labels["model"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("model")
    }


@pytest.mark.slow
def test_a_deleted_model_leaves_the_metrics(teach_client: TestClient, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    make_catalog(c, "mx", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
    teach(c, "mx", "gone")
    teach(c, "mx", "gone")
    predict_labels(c, "gone", fm_pngs[BAG][40:41])
    predict_labels(c, "gone@1", fm_pngs[BAG][40:41])  # queues under its own name, gone@1
    assert {"gone", "gone@1", "products"} <= _model_labels(c)
    assert c.delete("/v1/models/gone@1").status_code == 200
    labels = _model_labels(c)
    assert "gone" in labels and "gone@1" not in labels
    assert c.delete("/v1/models/gone").status_code == 200
    assert not {"gone", "gone@1"} & _model_labels(c) and "products" in _model_labels(c)


def test_a_resumed_download_never_splices_two_versions(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    """Fuzz round 4: the download honoured Range but had no ETag, so a client resuming
    `name` (the newest version) after a re-teach joined bytes of two versions. Now the ETag
    names the build: with the old one in If-Range the whole new file comes back."""
    c = teach_client
    make_catalog(c, "rs", {"sneaker": fm_pngs[SNEAKER][:8], "bag": fm_pngs[BAG][:8]})
    assert teach(c, "rs", "rsm")["status"] == "succeeded"
    first = c.get("/v1/models/rsm/download", headers={"Range": "bytes=0-99"})
    assert first.status_code == 206 and len(first.content) == 100
    old = first.headers["etag"]
    assert c.get("/v1/models/rsm/download", headers={"If-None-Match": old}).status_code == 304
    more = c.post("/v1/catalogs/rs/items", params={"label": "bag"}, content=fm_pngs[BAG][9])
    assert more.status_code == 201, more.text  # other data: another head, another file
    assert teach(c, "rs", "rsm")["status"] == "succeeded"
    new_whole = c.get("/v1/models/rsm/download")
    assert new_whole.headers["etag"] != old
    resumed = c.get("/v1/models/rsm/download", headers={"Range": "bytes=100-", "If-Range": old})
    assert resumed.status_code == 200 and resumed.content == new_whole.content
    fresh = c.get(
        "/v1/models/rsm/download",
        headers={"Range": "bytes=100-", "If-Range": new_whole.headers["etag"]},
    )
    assert fresh.status_code == 206 and fresh.content == new_whole.content[100:]


@pytest.mark.slow
def test_download_runs_in_plain_onnxruntime_with_the_same_top1(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    classes = {
        "sneaker": fm_pngs[SNEAKER][:10],
        "bag": fm_pngs[BAG][:10],
        "sandal": fm_pngs[SANDAL][:10],
    }
    make_catalog(c, "dl", classes)
    assert teach(c, "dl", "dlm")["status"] == "succeeded"
    r = c.get("/v1/models/dlm/download")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    sess = ort.InferenceSession(r.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert {o.name for o in sess.get_outputs()} == {"probs", "embedding"}
    info = c.get("/v1/models/dlm").json()
    spec = InputSpec.model_validate(info["input"])
    settings = c.app.state.settings  # type: ignore[attr-defined]
    held = fm_pngs[SNEAKER][30:36] + fm_pngs[BAG][30:36] + fm_pngs[SANDAL][30:36]
    batch = np.stack([prepare(d, spec, limits_from(settings)).array for d in held])
    probs, emb = sess.run(["probs", "embedding"], {"image": batch.astype(np.float32)})
    served = predict_labels(c, "dlm", held)
    labels = info["labels"]
    assert [labels[i] for i in probs.argmax(axis=1)] == served
    files = [("file", (f"{i}.png", d, "image/png")) for i, d in enumerate(held)]
    body = c.post("/v1/models/dlm/predict", files=files).json()
    served_p = np.array(
        [
            [p["score"] for p in sorted(r["predictions"], key=lambda p: p["index"])]
            for r in body["results"]
        ]
    )
    assert np.allclose(served_p, probs, atol=1e-4)
    assert emb.shape == (len(held), 256)
    assert r.headers["content-disposition"] == 'attachment; filename="dlm-v1.onnx"'
    # A shipped model downloads as its own file.
    shipped = c.get("/v1/models/products/download")
    assert shipped.status_code == 200 and len(shipped.content) == info_size(c, "products")
    # A delete landing while the first download joins the graph: 404, not a 500 (the join
    # wrote into the folder the delete had just moved away).
    assert teach(c, "dl", "dlm")["status"] == "succeeded"
    loaded = c.app.state.registry.get("dlm@2")  # type: ignore[attr-defined]
    shutil.rmtree(loaded.model.bundle.path)
    with pytest.raises(ModelNotFound, match="was deleted"):
        open_download(loaded)


def test_a_download_works_when_the_data_folder_cannot_take_the_cached_file(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The joined graph is cached next to the taught bundle; on a read-only (or full) data
    folder that write failed and the download answered 503. It is now served uncached."""
    import errno

    import app.teach.download as download

    c = teach_client
    make_catalog(c, "ro", {"sneaker": fm_pngs[SNEAKER][:8], "bag": fm_pngs[BAG][:8]})
    assert teach(c, "ro", "rom")["status"] == "succeeded"

    def read_only(path: Path, data: bytes, mode: int = 0o644) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(download, "atomic_write", read_only)
    first = c.get("/v1/models/rom/download")
    assert first.status_code == 200, first.text
    ranged = c.get("/v1/models/rom/download", headers={"Range": "bytes=10-19"})
    assert ranged.status_code == 206 and ranged.content == first.content[10:20]
    sess = ort.InferenceSession(first.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    loaded = c.app.state.registry.get("rom")  # type: ignore[attr-defined]
    assert not (loaded.model.bundle.path / download.STANDALONE_FILE).exists()
    # once the folder takes writes again the file is cached, byte for byte the same
    monkeypatch.undo()
    assert c.get("/v1/models/rom/download").content == first.content
    assert (loaded.model.bundle.path / download.STANDALONE_FILE).is_file()


def info_size(c: TestClient, name: str) -> int:
    return int(c.get(f"/v1/models/{name}").json()["size_bytes"])


def test_similar_uses_the_source_catalog(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    c = teach_client
    make_catalog(c, "sim", {"sneaker": fm_pngs[SNEAKER][:8], "bag": fm_pngs[BAG][:8]})
    assert teach(c, "sim", "simm")["status"] == "succeeded"
    r = c.post("/v1/models/simm/predict?similar=3", content=fm_pngs[BAG][50])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["catalog"] == "sim"
    hits = body["results"][0]["similar"]
    assert len(hits) == 3 and [h["label"] for h in hits].count("bag") >= 2
    # round 27: a picture unlike every example is `familiar: false` (its labels are a guess)
    floor = c.get("/v1/models/simm").json()["metrics"][0]["extra"]["familiar_min_similarity"]
    assert body["results"][0]["familiar"] is True and hits[0]["score"] >= floor
    photo = require(DATA / "photos" / "foolbox" / "imagenet_01_559.jpg").read_bytes()
    r = c.post("/v1/models/simm/predict?similar=1", content=photo)
    result = r.json()["results"][0]
    assert result["familiar"] is False and result["similar"][0]["score"] < floor, result
    # round 27: items added since under a label the model was not taught are not what it knows
    add_items(c, "sim", "photo", [photo])
    r = c.post("/v1/models/simm/predict?similar=2", content=photo)
    result = r.json()["results"][0]
    assert result["similar"][0]["label"] == "photo" and result["similar"][0]["score"] > 0.999
    assert result["familiar"] is False, result
    plain = c.post("/v1/models/simm/predict", content=fm_pngs[BAG][50]).json()["results"][0]
    assert plain["familiar"] is None  # no neighbours looked up, nothing to compare
    # The source catalog deleted: the 404 said "No catalog named 'sim'" to a client that had
    # named none (a walkthrough); it says which catalog was looked for, and why.
    assert c.delete("/v1/catalogs/sim").status_code == 204
    r = c.post("/v1/models/simm/predict?similar=3", content=fm_pngs[BAG][50])
    assert r.status_code == 404, r.text
    assert "'sim', the catalog it was taught from, which no longer exists" in r.json()["detail"]


def test_teaching_sweeps_what_a_killed_writer_left(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]], tmp_path: Path
) -> None:
    # A worker killed (kill -9) while writing a version leaves its staging folder, e.g.
    # .staging/k9b-1-nthrhi0i/.staging/k9b-pz2ihxkh/model.onnx in a real run; the next write
    # removes such leftovers once they are older than any write takes, never a fresh one.
    staging = tmp_path / "service-data" / "models" / ".staging"
    old_left = staging / "k9b-1-nthrhi0i" / ".staging" / "k9b-pz2ihxkh"
    old_left.mkdir(parents=True)
    (old_left / "model.onnx").write_bytes(b"half a graph")
    fresh = staging / "other-1-abcdef12"  # another process writing right now
    fresh.mkdir()
    then = time.time() - STAGING_LEFTOVER_S - 60
    os.utime(staging / "k9b-1-nthrhi0i", (then, then))
    c = teach_client
    make_catalog(c, "sweep", {"sneaker": fm_pngs[SNEAKER][:4], "bag": fm_pngs[BAG][:4]})
    assert teach(c, "sweep", "swept")["status"] == "succeeded"
    assert sorted(p.name for p in staging.iterdir()) == ["other-1-abcdef12"]


def test_job_log_lines_carry_the_train_request_id(
    teach_client: TestClient, fm_pngs: dict[int, list[bytes]]
) -> None:
    """A teach job runs in its own thread, after the train request has been answered; its log
    lines still carry that request's X-Request-ID, so one id finds both."""
    import logging

    from tests.app.test_request_ids import Records

    c = teach_client
    make_catalog(c, "rid", {"sneaker": fm_pngs[SNEAKER][:6], "bag": fm_pngs[BAG][:6]})
    root = logging.getLogger("app")
    handler, level = Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        job = teach(c, "rid", "rid-shoes", headers={"X-Request-ID": "teach-req-42"})
        # The job thread saves "succeeded" (what the poll above sees) and then logs it: wait
        # for that line before the handler goes, or a loaded machine answers the poll first.
        deadline = time.monotonic() + 30
        while job["status"] == "succeeded" and not handler.ids("app.teach.jobs", "succeeded"):
            assert time.monotonic() < deadline, "no 'succeeded' log line from the job"
            time.sleep(0.02)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert job["status"] == "succeeded", job
    assert handler.ids("app.teach.jobs", "succeeded") == ["teach-req-42"]


def test_positive_label_is_matched_as_labels_are_stored() -> None:
    # Trimmed and NFC like catalog labels: " k " was refused as "not a label" of a catalog
    # whose labels are "j" and "k", and a decomposed "é" never matched the stored one.
    assert TeachRequest(model="x", positive_label=" k ").positive_label == "k"
    assert TeachRequest(model="x", positive_label="cafe\u0301").positive_label == "caf\u00e9"
    assert TeachRequest(model="x").positive_label is None
