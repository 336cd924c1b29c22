"""The multiprocess metric files of a process with no file descriptor free (app.metric_files):
updates wait in order and are applied once a descriptor is free, a file that must grow then
grows, and a scrape says 503. A real process under a lowered open-file limit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

# Run in a fresh interpreter: prometheus-client picks its multiprocess mode on import.
SCRIPT = r"""
import json, os, resource, sys
from app import telemetry
from app.errors import StorageUnavailable

def starve():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        pass
    return held

def scrape():
    text = telemetry.exposition(telemetry.StateCollector(list, list, lambda: 0)).decode()
    return {l.rsplit(" ", 1)[0]: float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
            if l.startswith("imgclass_requests_total{")}

telemetry.observe_request("/first", "GET", "", 200, 0.001)  # the counter file: open
held = starve()
errors, scraped = [], None
for i in range(400):  # 400 new series: the counter and histogram files must be opened or grown
    try:
        telemetry.observe_request(f"/r{i}", "GET", "", 503, 0.002)
    except Exception as exc:
        errors.append(repr(exc))
try:
    scrape()
except StorageUnavailable as exc:
    scraped = exc.status
except Exception as exc:
    scraped = repr(exc)
for fd in held:
    os.close(fd)
telemetry.observe_request("/after", "GET", "", 200, 0.001)
counts = scrape()
print(json.dumps({"errors": errors[:3], "n_errors": len(errors), "scraped": scraped,
                  "series": len(counts), "total": sum(counts.values())}))
"""


def test_metric_updates_without_a_file_descriptor_wait_and_are_applied_once_one_is_free(
    tmp_path: Path,
) -> None:
    """Round 40: out of descriptors, each request raised (a traceback per request) from
    opening a metric file; a file that had to grow then failed every later new series for
    good; /metrics answered 200 without a single request metric."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n_errors"] == 0, result["errors"]
    assert result["scraped"] == 503  # not an empty 200, not a 500
    assert result["series"] == 402 and result["total"] == 402  # nothing lost, nothing twice
    assert "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if "no file descriptor free" in line]
    assert len(warnings) <= 1, done.stderr[-2000:]


def test_the_safe_growth_replaces_only_the_library_method_it_was_written_against() -> None:
    """`_GrowingSafely` rewrites prometheus-client's private layout code: another version's
    (a different source) keeps the library's own class, so an upgrade cannot break every
    metric update. The installed version is the one checked (else this fails: check the new
    `MmapedDict._init_value`, then update `_REWRITTEN`)."""
    from prometheus_client import mmap_dict, values

    from app import metric_files, telemetry

    assert telemetry.update is metric_files.update
    assert values.MmapedDict is metric_files._GrowingSafely  # installed by app.telemetry
    values.MmapedDict = mmap_dict.MmapedDict  # type: ignore[attr-defined]
    try:
        assert metric_files.install("0" * 64) is False
        assert values.MmapedDict is mmap_dict.MmapedDict  # type: ignore[attr-defined]
        assert metric_files.install() is True
    finally:
        values.MmapedDict = metric_files._GrowingSafely  # type: ignore[attr-defined]
