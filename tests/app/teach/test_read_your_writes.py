"""Read-your-writes across processes: a taught version published or deleted by one process is
served (or gone) in every other process's next request, through the change stamp
(app/teach/stamp.py), not the poll (IMGCLASS_MODEL_POLL_SECONDS is an hour here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from app.errors import ModelNotFound
from app.registry import ModelRegistry
from app.teach.stamp import read_stamp, stamp_path
from tests.app.teach.conftest import BAG, SNEAKER, follower_registry, make_catalog, wait_job
from tests.conftest import ROOT
from tests.live_server import live_server


class CountingRegistry(ModelRegistry):
    """A real registry that counts its taught-folder scans."""

    scans = 0

    def _refresh_taught(self, force: bool) -> bool:
        self.scans += 1
        return super()._refresh_taught(force)


def _counting(data: Path) -> CountingRegistry:
    reg: CountingRegistry = follower_registry(data, CountingRegistry)
    return reg


def _teach(c, catalog: str, model: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    r = c.post(f"/v1/catalogs/{catalog}/train", json={"model": model})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.headers["location"])
    assert job["status"] == "succeeded", job
    return job  # type: ignore[no-any-return]


def test_get_scans_only_when_the_stamp_moves(teach_client, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    data = c.app.state.settings.data_dir
    make_catalog(c, "f", {"sneaker": fm_pngs[SNEAKER][:5], "bag": fm_pngs[BAG][:5]})
    _teach(c, "f", "rw")
    other = _counting(data)  # a second process's registry; it never polls
    assert other.get("rw").version == "1"
    before = other.scans
    for _ in range(500):
        assert other.get("rw").version == "1"
        assert other.get("products").name == "products"
    assert other.scans == before  # unchanged stamp: no scan

    _teach(c, "f", "rw")  # version 2, written by the app's own registry
    assert other.get("rw").version == "2"  # at once, no refresh() call
    assert other.scans == before + 1
    assert other.versions("rw") == ["1", "2"]
    assert other.scans == before + 1  # one scan per change, not per call

    assert c.delete("/v1/models/rw@2").status_code == 200
    assert other.get("rw").version == "1"
    assert c.delete("/v1/models/rw").status_code == 200
    with pytest.raises(ModelNotFound):
        other.get("rw")
    assert "rw" not in [m.name for m in other.loaded()]


def test_a_bundle_copied_in_by_hand_is_found_on_a_miss(teach_client, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    c = teach_client
    data = c.app.state.settings.data_dir
    make_catalog(c, "f", {"sneaker": fm_pngs[SNEAKER][:5], "bag": fm_pngs[BAG][:5]})
    _teach(c, "f", "orig")
    other = _counting(data)
    stamp = read_stamp(stamp_path(data / "models"))
    # Copied by hand (no stamp bump): a new name, metadata renamed to match its folder.
    shutil.copytree(data / "models" / "orig", data / "models" / "copied")
    meta_path = data / "models" / "copied" / "1" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["name"] = "copied"
    meta_path.write_text(json.dumps(meta))
    assert read_stamp(stamp_path(data / "models")) == stamp
    before = other.scans
    assert other.get("orig").version == "1"
    assert other.scans == before  # the stamp did not move: no scan
    assert other.get("copied").version == "1"  # the miss scanned once and found it
    assert other.scans == before + 1
    # A name that does not exist: at most one scan per MISS_RESCAN_S, not one per request.
    for _ in range(50):
        with pytest.raises(ModelNotFound):
            other.get("nowhere")
    assert other.scans <= before + 3


def _env(data: Path) -> dict[str, str]:
    return {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_DATA_DIR": str(data),
        "IMGCLASS_ENABLED_MODELS": '["products"]',
        "IMGCLASS_MODEL_POLL_SECONDS": "3600",  # the poll cannot explain what B sees
        "IMGCLASS_WARMUP_RUNS": "0",
        "IMGCLASS_ACCESS_LOG": "false",
    }


@pytest.mark.slow
def test_two_servers_read_your_writes(tmp_path, fm_pngs) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "shared"
    bag = fm_pngs[BAG][55]  # not in the catalog
    with ExitStack() as stack:
        a = stack.enter_context(live_server(tmp_path, _env(data)))
        b = stack.enter_context(live_server(tmp_path, _env(data)))
        ca = stack.enter_context(httpx.Client(base_url=a.base, timeout=30))
        cb = stack.enter_context(httpx.Client(base_url=b.base, timeout=30))
        make_catalog(ca, "two", {"sneaker": fm_pngs[SNEAKER][:10], "bag": fm_pngs[BAG][:10]})  # type: ignore[arg-type]
        assert cb.post("/v1/models/rw/predict", content=bag).status_code == 404

        _teach(ca, "two", "rw")  # the job is waited for on A only
        r = cb.post("/v1/models/rw/predict", content=bag)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == "1"
        assert body["results"][0]["predictions"][0]["label"] == "bag"

        _teach(ca, "two", "rw")
        r = cb.post("/v1/models/rw/predict", content=bag)
        assert r.status_code == 200 and r.json()["version"] == "2", r.text
        assert cb.get("/v1/models/rw").json()["versions"] == ["1", "2"]

        assert ca.delete("/v1/models/rw").status_code == 200
        r = cb.post("/v1/models/rw/predict", content=bag)
        assert r.status_code == 404, r.text
        assert "rw" not in [m["name"] for m in cb.get("/v1/models").json()["models"]]


def test_concurrent_bumps_from_processes_are_all_counted(tmp_path: Path) -> None:
    code = "import sys; from pathlib import Path; from app.teach.stamp import bump\n" + (
        "for _ in range(200): bump(Path(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT) for _ in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0] * 4
    stamp = read_stamp(stamp_path(tmp_path))
    assert stamp is not None and stamp[1] == 800  # the size counts every bump: none lost
