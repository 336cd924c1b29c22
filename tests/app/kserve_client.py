"""Drives a running imgclass server with the KServe SDK's REST client (kserve 0.21.0).

Run by tests/app/test_v2_kserve.py inside `.venv-kserve` (scripts/install all), which the
project's own environment cannot hold (the SDK pins protobuf and psutil lower). Usage:
`python kserve_client.py BASE_URL MODEL PHOTO...`; prints one JSON object on stdout. A
BASE_URL of `grpc://HOST:PORT` drives the gRPC binding with the SDK's InferenceGRPCClient.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest


def image_input(photos: list[bytes], binary: bool) -> InferInput:
    inp = InferInput(name="image", shape=[len(photos)], datatype="BYTES")
    # JSON carries each file as base64 text (BYTES elements are strings there); the binary-data
    # extension carries the raw bytes.
    data = photos if binary else [base64.b64encode(p) for p in photos]
    inp.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return inp


def top5(probs: Any) -> list[list[int]]:
    return [[int(i) for i in np.argsort(-row, kind="stable")[:5]] for row in np.asarray(probs)]


async def main(base: str, model: str, paths: list[str]) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    photos = [open(p, "rb").read() for p in paths]  # noqa: SIM115 - short script
    out: dict[str, Any] = {
        "live": await client.is_server_live(base),
        "ready": await client.is_server_ready(base),
        "model_ready": await client.is_model_ready(base, model),
    }
    for mode in ("json", "binary"):
        rows: list[list[int]] = []
        for start in range(0, len(photos), 4):
            req = InferRequest(
                model_name=model,
                infer_inputs=[image_input(photos[start : start + 4], mode == "binary")],
                request_id=f"kserve-{mode}-{start}",
            )
            res = await client.infer(base, req, model_name=model)
            outputs = {o.name: o for o in res.outputs}
            rows += top5(outputs["probs"].as_numpy())
            out.setdefault("outputs", sorted(outputs))
            out.setdefault("request_id", res.id)
        out[mode] = rows
    try:
        await client.infer(
            base,
            InferRequest(model_name="no-such-model", infer_inputs=[image_input(photos[:1], True)]),
            model_name="no-such-model",
        )
        out["unknown_model"] = "answered"
    except Exception as exc:  # the SDK raises on any non-2xx; its message carries the body
        out["unknown_model"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    return out


async def main_grpc(url: str, model: str, paths: list[str]) -> dict[str, Any]:
    client = InferenceGRPCClient(url=url, timeout=60)
    photos = [open(p, "rb").read() for p in paths]  # noqa: SIM115 - short script
    out: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready(model),
    }
    rows: list[list[int]] = []
    for start in range(0, len(photos), 4):
        req = InferRequest(
            model_name=model,
            infer_inputs=[image_input(photos[start : start + 4], True)],
            request_id=f"kserve-grpc-{start}",
        )
        res = await client.infer(req)
        outputs = {o.name: o for o in res.outputs}
        rows += top5(outputs["probs"].as_numpy())
        out.setdefault("outputs", sorted(outputs))
        out.setdefault("request_id", res.id)
    out["grpc"] = rows
    try:
        await client.infer(
            InferRequest(model_name="no-such-model", infer_inputs=[image_input(photos[:1], True)])
        )
        out["unknown_model"] = "answered"
    except Exception as exc:  # grpc.aio.AioRpcError
        out["unknown_model"] = f"{type(exc).__name__}: {exc}"
    await client.close()
    return out


if __name__ == "__main__":
    base, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    run = (
        main_grpc(base.removeprefix("grpc://"), model, paths)
        if base.startswith("grpc://")
        else main(base, model, paths)
    )
    print(json.dumps(asyncio.run(run)))
