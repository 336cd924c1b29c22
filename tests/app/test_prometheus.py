"""A real Prometheus server (Debian `prometheus`, scripts/setup-system installs it) scrapes a
real imgclass started with `python -m app` and two workers (multiprocess metrics) on
loopback, and answers PromQL over its HTTP API."""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import DATA, ROOT, free_port, require
from tests.live_server import LiveServer, live_server, running_process

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DEPLOY = ROOT / "deploy" / "prometheus"
QUERY_TIMEOUT_S = 40
pytestmark = pytest.mark.slow
MISSING = "no prometheus binary: run scripts/setup-system (Debian package 'prometheus')"


def require_prometheus() -> None:
    """Skip where the binary is absent locally; in CI (which installs it) that is a failure."""
    if Path(PROMETHEUS).is_file():
        return
    if os.environ.get("CI"):
        pytest.fail(MISSING)
    pytest.skip(MISSING)


@pytest.fixture(scope="module")
def imgclass(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    require_prometheus()
    tmp = tmp_path_factory.mktemp("prom-app")
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": "2",
        "IMGCLASS_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "multiproc"),
    }
    with live_server(tmp, env, entry="app") as server:
        yield server


@pytest.fixture(scope="module")
def prometheus(imgclass: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("prometheus")
    # The shipped deploy/prometheus/prometheus.yml with its alert rules, aimed at this server
    # and sped up: what `docker compose --profile monitoring` runs.
    shipped = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    shipped["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    shipped["rule_files"] = [str(DEPLOY / f) for f in shipped["rule_files"]]
    [job] = shipped["scrape_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{imgclass.port}"]}]
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(shipped))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running_process(cmd, f"{base}/-/ready", tmp / "prometheus.log", 30):
        yield base


def query_until(base: str, promql: str, want: float) -> float:
    """Poll an instant query until it returns `want` (scrapes are 1 s apart) or time runs out."""
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    got = float("nan")
    while time.monotonic() < deadline:
        r = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
        body = r.json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        if result:
            got = float(result[0]["value"][1])
            if got == want:
                return got
        time.sleep(0.5)
    return got


def predict_pids(server: LiveServer) -> set[str]:
    """Worker pids whose metric files count a /v1 prediction."""
    folder = server.log.parent / "multiproc"
    pids = set()
    for db in folder.glob("counter_*.db"):
        for key, value, *_ in MmapedDict(str(db), read_mode=True).read_all_values():
            if "imgclass_requests" in key and "/v1/models/{name}/predict" in key and value > 0:
                pids.add(db.stem.split("_")[-1])
    return pids


def test_prometheus_scrapes_metrics_from_all_workers(imgclass: LiveServer, prometheus: str) -> None:
    png = require(DATA / "photos" / "foolbox" / "mnist_00_7.png").read_bytes()
    n_v1, n_v2 = 0, 4
    # A new connection each time; go on until both workers have served predictions, so the
    # totals below can only be right if the workers' metrics are aggregated.
    while n_v1 < 6 or len(predict_pids(imgclass)) < 2:
        r = httpx.post(f"{imgclass.base}/v1/models/digits/predict", content=png, timeout=30)
        assert r.status_code == 200, r.text
        n_v1 += 1
        assert n_v1 < 60, "one worker took every request"
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": [base64.b64encode(png).decode()],
            }
        ]
    }
    for _ in range(n_v2):
        r = httpx.post(f"{imgclass.base}/v2/models/digits/infer", json=body, timeout=30)
        assert r.status_code == 200, r.text
    assert query_until(prometheus, 'up{job="imgclass"}', 1) == 1
    v1 = 'sum(imgclass_requests_total{route="/v1/models/{name}/predict",model="digits",status="200"})'
    assert query_until(prometheus, v1, n_v1) == n_v1
    v2 = 'sum(imgclass_requests_total{route="/v2/models/{name}/infer",model="digits",status="200"})'
    assert query_until(prometheus, v2, n_v2) == n_v2
    assert (
        query_until(
            prometheus, 'sum(imgclass_inference_seconds_count{model="digits"}) >= bool 4', 1
        )
        == 1
    )
    assert query_until(prometheus, 'count(imgclass_model_info{model="digits"})', 1) == 1
    # Every scrape, whichever worker answers it, sees the requests of both workers.
    for _ in range(4):
        text = httpx.get(f"{imgclass.base}/metrics", timeout=5).text
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith("imgclass_requests_total{")
            and 'route="/v1/models/{name}/predict"' in ln
            and 'status="200"' in ln
        )
        assert float(line.rsplit(" ", 1)[1]) == n_v1


def test_the_shipped_alert_rules_load_and_name_real_metrics(
    imgclass: LiveServer, prometheus: str
) -> None:
    """Every rule of deploy/prometheus/imgclass-rules.yml is loaded and evaluates without error
    against the real server, none fires on a healthy one, and every metric a rule names is one
    the server exports (a renamed metric would leave its alert silently dead)."""
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    while True:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "0001").startswith("2") for r in rules):
            break  # every rule evaluated at least once (never-run rules say 0001-01-01)
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
    assert len(rules) == 10
    for rule in rules:
        assert rule["health"] == "ok", rule
        assert rule["state"] == "inactive", rule
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in httpx.get(f"{imgclass.base}/metrics", timeout=5).text.splitlines()
        if line and not line.startswith("#")
    }
    named = {n for r in rules for n in re.findall(r"\bimgclass_[a-z_]+", r["query"])}
    assert named and named <= exported, sorted(named - exported)
