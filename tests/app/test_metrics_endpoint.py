"""/metrics (prometheus-client text format), request ids and structured access logs, on the
shipped digits bundle served in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from tests.conftest import DATA, ROOT, make_settings, require

DIGIT = "mnist_00_7.png"


def digit() -> bytes:
    return require(DATA / "photos" / "foolbox" / DIGIT).read_bytes()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture()
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        ROOT / "models", tmp_path, enabled_models=["digits"], allowed_hosts=["*"]
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_metrics_label_route_templates_models_and_statuses(app_client: TestClient) -> None:
    before = app_client.get("/metrics").text
    route = "/v1/models/{name}/predict"
    for _ in range(2):
        r = app_client.post("/v1/models/digits/predict", files={"file": ("d.png", digit())})
        assert r.status_code == 200
    assert app_client.post("/v1/models/no-such-model/predict", content=digit()).status_code == 404
    # `name@version` (taught models have versions; a shipped one answers 404) counts under the
    # model's name; an unknown model with a version is "" like any unknown name.
    assert app_client.post("/v1/models/digits@99/predict", content=digit()).status_code == 404
    assert app_client.post("/v1/models/nope@1/predict", content=digit()).status_code == 404
    assert app_client.get("/some/random/path/42").status_code == 404
    r = app_client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = r.text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": route, "method": "POST", "model": "digits", "status": "200"}
    assert delta("imgclass_requests_total", **ok) == 2
    assert delta("imgclass_requests_total", **{**ok, "status": "404"}) == 1
    # An unknown model name does not become a label value (bounded cardinality).
    missing = {"route": route, "method": "POST", "model": "", "status": "404"}
    assert delta("imgclass_requests_total", **missing) == 2
    unmatched = {"route": "<unmatched>", "method": "GET", "model": "", "status": "404"}
    assert delta("imgclass_requests_total", **unmatched) == 1
    assert not any("random" in line for line in after.splitlines() if "imgclass_" in line)
    assert delta("imgclass_request_duration_seconds_count", route=route, model="digits") == 3
    assert value(after, "imgclass_requests_in_flight", model="digits") == 0
    # The serving scheduler's hooks (app.batching): per image, per request, per pass.
    assert delta("imgclass_decode_seconds_count", model="digits") == 2
    assert delta("imgclass_queue_wait_seconds_count", model="digits") == 2
    assert delta("imgclass_inference_seconds_count", model="digits") == 2
    assert delta("imgclass_batch_size_sum", model="digits") == 2
    assert ("imgclass_queue_depth", (("model", "digits"),)) in samples(after)
    assert value(after, "imgclass_queue_depth", model="digits") == 0
    meta = json.loads((ROOT / "models" / "digits" / "metadata.json").read_text())
    info = {
        "model": "digits",
        "version": meta["version"],
        "sha256": meta["artifact"]["sha256"],
        "provider": "CPUExecutionProvider",
    }
    assert value(after, "imgclass_model_info", **info) == 1
    assert value(after, "imgclass_model_load_seconds", model="digits") > 0


def test_v2_records_decode_inference_and_batch_size(app_client: TestClient) -> None:
    import base64

    before = app_client.get("/metrics").text
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [3],
                "data": [base64.b64encode(digit()).decode()] * 3,
            }
        ]
    }
    assert app_client.post("/v2/models/digits/infer", json=body).status_code == 200
    after = app_client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("imgclass_decode_seconds_count", model="digits") == 3
    assert delta("imgclass_inference_seconds_count", model="digits") == 1
    assert delta("imgclass_batch_size_sum", model="digits") == 3
    assert delta("imgclass_images_total", model="digits") == 3


def test_catalog_item_counts(app_client: TestClient) -> None:
    r = app_client.post("/v1/catalogs", json={"name": "shelf", "model": "digits"})
    assert r.status_code == 201, r.text
    text = app_client.get("/metrics").text
    assert value(text, "imgclass_catalog_items", catalog="shelf", model="digits") == 0
    r = app_client.post("/v1/catalogs/shelf/items", files={"file": ("d.png", digit())})
    assert r.status_code == 201, r.text
    text = app_client.get("/metrics").text
    assert value(text, "imgclass_catalog_items", catalog="shelf", model="digits") == 1


def test_metrics_need_the_key_when_reads_do(tmp_path: Path) -> None:
    key = "s" * 32
    settings = make_settings(
        ROOT / "models",
        tmp_path,
        enabled_models=["digits"],
        allowed_hosts=["*"],
        api_key=key,
        api_key_for_reads=True,
    )
    with TestClient(create_app(settings)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": key}).status_code == 200


def _log_lines(err: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_request_ids_and_json_access_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        ROOT / "models",
        tmp_path,
        enabled_models=["digits"],
        allowed_hosts=["*"],
        access_log=True,
        log_format="json",
    )
    with TestClient(create_app(settings)) as c:
        capsys.readouterr()
        png = digit()
        r = c.post(
            "/v1/models/digits/predict", content=png, headers={"X-Request-ID": "trace-123.abc"}
        )
        assert r.status_code == 200 and r.headers["x-request-id"] == "trace-123.abc"
        generated = c.get("/healthz").headers["x-request-id"]
        assert len(generated) == 32 and generated != "trace-123.abc"
        for bad in ["x" * 129, "has space", "new\nline", "semi;colon", ""]:
            rid = c.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
            assert rid != bad and len(rid) == 32
        # A problem response carries it too.
        r = c.post("/v1/models/nope/predict", content=png, headers={"X-Request-ID": "e-1"})
        assert r.status_code == 404 and r.headers["x-request-id"] == "e-1"
        err = capsys.readouterr().err
    lines = _log_lines(err)
    mine = [line for line in lines if line["request_id"] == "trace-123.abc"]
    access = [line for line in mine if line["logger"] == "app.access"]
    assert len(access) == 1, lines
    entry = access[0]
    assert entry["route"] == "/v1/models/{name}/predict"
    assert entry["model"] == "digits" and entry["status"] == 200 and entry["method"] == "POST"
    assert entry["bytes_in"] == len(png) and entry["bytes_out"] > 0 and entry["latency_ms"] > 0
    # Every line logged while serving the request (scheduler start-up included) has the id;
    # lines outside any request have '-'.
    assert all("request_id" in line for line in lines)
    assert {line["request_id"] for line in lines if line["logger"] == "app.access"} >= {
        "trace-123.abc",
        "e-1",
        generated,
    }
    failed = [line for line in lines if line["request_id"] == "e-1" and "status" in line]
    assert failed and failed[0]["status"] == 404 and failed[0]["model"] == ""


def test_teach_jobs_by_status(tmp_path: Path) -> None:
    """The gauge reads the job files every worker shares (app.teach.job_store.JobStore)."""
    from app.teach.job_store import Job, JobStore

    settings = make_settings(
        ROOT / "models", tmp_path, enabled_models=["digits"], allowed_hosts=["*"]
    )
    with TestClient(create_app(settings)) as c:
        store = JobStore(settings.data_dir / "teach" / "jobs")
        for i, status in enumerate(["succeeded", "succeeded", "failed"]):
            store.save(Job(id=f"job{i}", catalog="c", model="digits", options={}, status=status))
        text = c.get("/metrics").text
    assert value(text, "imgclass_teach_jobs", status="succeeded") == 2
    assert value(text, "imgclass_teach_jobs", status="failed") == 1
    # Statuses no job has reached yet are 0, not absent (alerts compare against them).
    for status in ("queued", "running", "cancelled"):
        assert value(text, "imgclass_teach_jobs", status=status) == 0


def test_unusual_methods_share_one_label_value(app_client: TestClient) -> None:
    """The HTTP server parses some 40 methods; each one sent to each route and model was a
    series of its own (PROPFIND on /v1/models: one more series per method)."""
    labels = {"route": "/v1/models/{name}/predict", "model": "digits", "status": "405"}
    before = value(
        app_client.get("/metrics").text, "imgclass_requests_total", method="other", **labels
    )
    unusual = ("PROPFIND", "MKCOL", "PURGE", "SEARCH")
    for method in unusual:
        r = app_client.request(method, "/v1/models/digits/predict")
        assert r.status_code == 405
    after = app_client.get("/metrics").text
    methods = {dict(s[1])["method"] for s in samples(after) if s[0] == "imgclass_requests_total"}
    assert not methods & set(unusual), methods
    assert value(after, "imgclass_requests_total", method="other", **labels) - before == 4


def test_a_set_multiprocess_folder_is_emptied_with_one_worker_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With PROMETHEUS_MULTIPROC_DIR set, one worker writes its samples there too. The folder
    was emptied only for several workers: after a crash with a request in flight, the next
    run showed imgclass_requests_in_flight 1 for good, and the old run's counters."""
    from app.multiproc import MULTIPROC_ENV, prepare_multiprocess_dir

    stale = tmp_path / "gauge_livesum_4242.db"
    stale.write_bytes(b"\0" * 64)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    assert prepare_multiprocess_dir(1) == tmp_path
    assert not stale.exists()
    monkeypatch.delenv(MULTIPROC_ENV)
    assert prepare_multiprocess_dir(1) is None  # none set, one worker: no folder at all


def test_the_api_documents_are_counted_under_their_own_routes(app_client: TestClient) -> None:
    """/openapi.json and /docs are plain Starlette routes: they leave no route in the scope and
    were counted as route="<unmatched>" with status 200, like no route at all."""
    ok = {"method": "GET", "model": "", "status": "200"}
    paths = ("/openapi.json", "/docs", "<unmatched>")
    before = app_client.get("/metrics").text
    for path in paths[:2]:
        assert app_client.get(path).status_code == 200
    after = app_client.get("/metrics").text
    counted = {
        p: value(after, "imgclass_requests_total", route=p, **ok)
        - value(before, "imgclass_requests_total", route=p, **ok)
        for p in paths
    }
    assert counted == {"/openapi.json": 1, "/docs": 1, "<unmatched>": 0}, counted
    assert app_client.get("/no/such/page").status_code == 404  # still <unmatched>
    missing = {**ok, "status": "404"}
    assert value(
        app_client.get("/metrics").text, "imgclass_requests_total", route=paths[2], **missing
    )
