"""Request ids reach the log lines written in the scheduler's worker threads: a decode failure
is logged under the id of the request whose image failed (also inside a shared batch), a
failed forward pass under the ids of the batch it served. Real bundle, real threads."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient

from app.batching import ModelScheduler
from app.bundle import load_bundle
from app.errors import InvalidImage
from app.imaging import ImageLimits
from app.log_format import RequestIdFilter, request_id_var
from app.main import create_app
from app.runtime import BatchPolicy, ModelOutput, OnnxModel
from tests.conftest import DATA, ROOT, make_settings, require


def digit() -> bytes:
    return require(DATA / "photos" / "foolbox" / "mnist_00_7.png").read_bytes()


def truncated() -> bytes:
    """A PNG cut in half: it sniffs and opens, then fails to decode (logged by app.imaging)."""
    data = digit()
    return data[: len(data) // 2]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def ids(self, logger: str, text: str) -> list[str]:
        return [
            r.request_id  # type: ignore[attr-defined]
            for r in self.records
            if r.name == logger and text in r.getMessage()
        ]


@pytest.fixture()
def records() -> Iterator[Records]:
    root = logging.getLogger("app")
    handler, level = Records(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return OnnxModel(load_bundle(ROOT / "models" / "digits"), ["CPUExecutionProvider"], 1)


class Failing:
    def run(self, batch: npt.NDArray[np.float32]) -> ModelOutput:
        raise RuntimeError(f"deliberate failure on a batch of {batch.shape[0]}")


def make(model: object, spec, max_batch: int = 8) -> ModelScheduler:  # type: ignore[no-untyped-def]
    # One worker that waits up to 2 s to fill a batch: requests submitted together share it.
    return ModelScheduler(
        "digits",
        model,  # type: ignore[arg-type]
        spec,
        ImageLimits(),
        policy=BatchPolicy(max_batch, 2000.0, "test"),
        pipelines=1,
        queue_limit=16,
        deadline_s=30.0,
    )


async def as_request(rid: str, sched: ModelScheduler, datas: list[bytes]) -> object:
    request_id_var.set(rid)  # gather runs each call as a task with its own context
    return await sched.submit(datas)


def test_decode_lines_carry_their_own_request_id_in_a_shared_batch(
    model: OnnxModel, records: Records
) -> None:
    sched = make(model, model.bundle.metadata.input, max_batch=3)

    async def main() -> list[object]:
        calls = [
            as_request("req-a", sched, [truncated()]),
            as_request("req-b", sched, [digit()]),
            as_request("req-c", sched, [truncated()]),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        a, b, c = asyncio.run(main())
    finally:
        sched.close()
    assert isinstance(a, InvalidImage) and isinstance(c, InvalidImage)
    assert not isinstance(b, BaseException)
    assert sorted(records.ids("app.imaging", "decode failed")) == ["req-a", "req-c"]
    assert request_id_var.get() == "-"  # nothing leaked into this thread


def test_a_failed_pass_is_logged_under_the_ids_of_its_batch(
    model: OnnxModel, records: Records
) -> None:
    sched = make(Failing(), model.bundle.metadata.input, max_batch=2)

    async def main() -> list[object]:
        calls = [as_request(rid, sched, [digit()]) for rid in ("req-1", "req-2")]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        out = asyncio.run(main())
    finally:
        sched.close()
    assert all(isinstance(e, RuntimeError) and "batch of 2" in str(e) for e in out), out
    (ids,) = records.ids("app.scheduler", "inference failed")
    assert sorted(ids.split(",")) == ["req-1", "req-2"]


def test_worker_log_line_carries_the_x_request_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(
        ROOT / "models",
        tmp_path,
        enabled_models=["digits"],
        allowed_hosts=["*"],
        log_format="json",
        log_level="INFO",
    )
    with TestClient(create_app(settings)) as c:
        c.post("/v1/models/digits/predict", content=digit())  # the scheduler exists already
        capsys.readouterr()
        headers = {"X-Request-ID": "broken-png-7"}
        r = c.post("/v1/models/digits/predict", content=truncated(), headers=headers)
        assert r.status_code == 422, r.text
        assert r.headers["x-request-id"] == "broken-png-7"
        err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    decode = [line for line in lines if line["logger"] == "app.imaging"]
    assert decode and "decode failed" in decode[0]["msg"], lines
    assert {line["request_id"] for line in decode} == {"broken-png-7"}
