"""The shipped Prometheus files (deploy/prometheus/): the config and rules pass `promtool
check`, the alert rules pass their unit tests (`promtool test rules`), and the Compose
monitoring profile mounts them. A real Prometheus loads them against a real server in
tests/app/test_prometheus.py."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
MISSING = "no promtool: run scripts/setup-system (Debian package 'prometheus')"


def promtool(*args: str, cwd: Path = DEPLOY) -> str:
    if not Path(PROMTOOL).is_file():
        if os.environ.get("CI"):
            pytest.fail(MISSING)
        pytest.skip(MISSING)
    run = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_config_and_rules_are_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "1 rule files found" in out, out
    assert "SUCCESS: 10 rules found" in promtool("check", "rules", "imgclass-rules.yml")


def test_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "imgclass-rules.test.yml")


def test_every_alert_has_a_firing_test_and_a_silent_one() -> None:
    """An alert without a case where it fires, or without the healthy case where it stays
    silent, is not tested."""
    rules = yaml.safe_load((DEPLOY / "imgclass-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((DEPLOY / "imgclass-rules.test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    silent = {c["alertname"] for c in tests[0]["alert_rule_test"] if not c["exp_alerts"]}
    assert alerts == fires, sorted(alerts ^ fires)
    assert alerts == silent, sorted(alerts ^ silent)


def test_compose_monitoring_profile_mounts_the_shipped_files() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prom = compose["services"]["prometheus"]
    assert prom["profiles"] == ["monitoring"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert all(str(p).startswith("${IMGCLASS_BIND:-127.0.0.1}:") for p in prom["ports"])
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["api:8000"]  # the Compose service
