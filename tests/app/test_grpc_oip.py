"""The Open Inference Protocol over gRPC (app/grpc_oip.py) driven by the official Triton gRPC
client (tritonclient.grpc) against a real `python -m app` with two workers sharing the port, on
the shipped imagenet and digits bundles: the same answers as /v1 and /v2 over HTTP, errors as
gRPC status codes with the HTTP binding's details, and the API key as call metadata."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from app.bundle import load_bundle
from app.grpc_oip import GRPC_CALLS, GRPC_PER_PEER, GRPC_WAITING
from app.imaging import ImageLimits, prepare
from tests.conftest import DATA, ROOT, free_port, require
from tests.live_server import LiveServer, live_server

pytestmark = pytest.mark.slow  # a gRPC server per module (round 29: the fast subset in 2 min)

grpcclient = pytest.importorskip("tritonclient.grpc", reason="pip install tritonclient grpcio")
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4
MAX_REQUEST_BYTES = 2 * 1024 * 1024
KEY = "grpc-test-key"
AUTH = {"x-api-key": KEY}
PHOTOS = ["imagenet_00_243.jpg", "imagenet_01_559.jpg", "imagenet_02_438.jpg"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, int]]:
    tmp = tmp_path_factory.mktemp("grpc")
    port = free_port()
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["imagenet", "digits", "santa"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_WORKERS": "2",
        "IMGCLASS_GRPC_PORT": str(port),
        "IMGCLASS_GRPC_MAX_MESSAGE_BYTES": str(MAX_REQUEST_BYTES),
        "IMGCLASS_MAX_BATCH_IMAGES": str(MAX_BATCH),
        "IMGCLASS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "IMGCLASS_API_KEY": KEY,
        "IMGCLASS_API_KEY_FOR_READS": "true",
        "IMGCLASS_LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),  # read by the round-16 test
        "IMGCLASS_BODY_TIMEOUT_S": "3",  # a gRPC message must arrive within it (round 17)
    }
    with live_server(tmp, env, entry="app", ready_path="/healthz") as s:
        wait_ready(port)
        yield s, port


def wait_ready(port: int) -> None:
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}")
    for _ in range(600):
        try:
            if client.is_server_ready():
                return
        except InferenceServerException:
            pass
        time.sleep(0.1)
    raise AssertionError("the gRPC binding never became ready")


@pytest.fixture(scope="module")
def client(server: tuple[LiveServer, int]) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(url=f"127.0.0.1:{server[1]}")


def photo(name: str) -> bytes:
    return require(DATA / "photos" / "foolbox" / name).read_bytes()


def files_input(images: list[bytes]) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("image", [len(images)], "BYTES")
    inp.set_data_from_numpy(np.array(images, dtype=np.object_))
    return inp


def v1_top(server: LiveServer, model: str, images: list[bytes], k: int) -> list[list[dict]]:  # type: ignore[type-arg]
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    r = httpx.post(
        f"{server.base}/v1/models/{model}/predict?top_k={k}", files=files, headers=AUTH, timeout=60
    )
    assert r.status_code == 200, r.text
    return [res["predictions"] for res in r.json()["results"]]


def status_of(call: object) -> tuple[str, str]:
    """(gRPC status name, message) of a failing tritonclient call."""
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return str(info.value.status()), str(info.value.message())


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("imagenet", headers=AUTH)
    meta = client.get_server_metadata(headers=AUTH)
    assert meta.name == "imgclass" and "classification" in meta.extensions
    model = client.get_model_metadata("imagenet", headers=AUTH)
    assert model.name == "imagenet" and list(model.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [("image", "BYTES", [-1])]
    assert [(t.name, list(t.shape)) for t in model.outputs] == [
        ("probs", [-1, 1000]),
        ("embedding", [-1, 1280]),
    ]
    code, msg = status_of(lambda: client.get_model_metadata("nope", headers=AUTH))
    assert code == "StatusCode.NOT_FOUND" and "nope" in msg
    # as Triton answers (round 43: a polling loop raised over gRPC only): not ready, no error
    assert not client.is_model_ready("nope", headers=AUTH)
    assert not client.is_model_ready("imagenet", "999", headers=AUTH)


def test_a_yes_no_model_answers_v1s_decision_with_its_threshold(
    client: grpcclient.InferenceServerClient, server: tuple[LiveServer, int]
) -> None:
    """`santa` decides at its calibrated threshold (0.5286) on /v1: over gRPC, model metadata
    lists the `decision` output (the protocol's message has no parameters) and the answer
    carries /v1's verdicts, with the threshold and positive label as the output's parameters."""
    model = client.get_model_metadata("santa", headers=AUTH)
    assert ("decision", "BYTES", [-1]) in [
        (t.name, t.datatype, list(t.shape)) for t in model.outputs
    ]
    images = [photo(p) for p in PHOTOS]
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    base = server[0].base
    v1 = httpx.post(f"{base}/v1/models/santa/predict", files=files, headers=AUTH, timeout=60)
    expected = [res["decision"]["label"] for res in v1.json()["results"]]
    result = client.infer("santa", [files_input(images)], headers=AUTH)
    assert [b.decode() for b in result.as_numpy("decision")] == expected
    out = result.get_output("decision")
    assert (out.datatype, list(out.shape)) == ("BYTES", [len(images)])
    assert out.parameters["threshold"].double_param == 0.5286
    assert out.parameters["positive_label"].string_param == "santa"
    probs = result.as_numpy("probs")
    assert expected == ["santa" if p[1] >= 0.5286 else "not_santa" for p in probs]
    asked = [grpcclient.InferRequestedOutput("decision")]
    only = client.infer("santa", [files_input(images)], outputs=asked, headers=AUTH)
    assert [o.name for o in only.get_response().outputs] == ["decision"]


def test_standard_health_service_on_the_wire(server: tuple[LiveServer, int]) -> None:
    """grpc.health.v1.Health/Check as a probe sends it, encoded by hand (field 1: the service
    name; the answer's field 1: 1 SERVING, 2 NOT_SERVING), so the wire format is checked
    independently of the server's message classes."""

    def encoded(service: str) -> bytes:
        name = service.encode()
        return b"\x0a" + bytes([len(name)]) + name if name else b""

    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")

        def status(service: str, **kw: object) -> grpc.StatusCode | bytes:
            try:
                return bytes(check(encoded(service), timeout=10, **kw))
            except grpc.RpcError as exc:
                return exc.code()

        auth = tuple(AUTH.items())
        assert status("") == b"\x08\x01"  # the server: no key needed, like /readyz
        assert status("inference.GRPCInferenceService") == b"\x08\x01"
        assert status("imagenet", metadata=auth) == b"\x08\x01"
        assert status("imagenet") == grpc.StatusCode.UNAUTHENTICATED  # reads need the key
        assert status("nope", metadata=auth) == grpc.StatusCode.NOT_FOUND
        try:
            check(b"\xff\xff\xff", timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        else:
            raise AssertionError("a message that is not protobuf was answered")
        # Watch: tests/app/test_grpc_health.py


def test_real_photos_same_top5_as_v1_on_both_workers(
    client: grpcclient.InferenceServerClient, server: tuple[LiveServer, int]
) -> None:
    """The classification extension gives /v1's top-5 exactly; new channels land on both
    workers (SO_REUSEPORT), and each answers the same."""
    images = [photo(p) for p in PHOTOS]
    expected = v1_top(server[0], "imagenet", images, 5)
    outputs = [grpcclient.InferRequestedOutput("probs", class_count=5)]
    for _ in range(6):  # fresh connections: the kernel spreads them over the workers
        fresh = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server[1]}")
        result = fresh.infer("imagenet", [files_input(images)], outputs=outputs, headers=AUTH)
        rows = [[c.decode().split(":", 2) for c in row] for row in result.as_numpy("probs")]
        assert [[int(i) for _, i, _ in row] for row in rows] == [
            [p["index"] for p in row] for row in expected
        ]
        for row, exp in zip(rows, expected, strict=True):
            assert [lab for _, _, lab in row] == [p["label"] for p in exp]
            np.testing.assert_allclose(
                [float(s) for s, _, _ in row], [p["score"] for p in exp], atol=1e-5
            )
        fresh.close()
    # true classes of the file names are the top-1
    assert [int(r[0][1]) for r in rows] == [int(p.split("_")[2].split(".")[0]) for p in PHOTOS]
    full = client.infer("imagenet", [files_input(images[:2])], headers=AUTH, model_version="1")
    probs, emb = full.as_numpy("probs"), full.as_numpy("embedding")
    assert probs.shape == (2, 1000) and probs.dtype == np.float32 and emb.shape == (2, 1280)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_fp32_tensor_and_contents_match_the_encoded_file(
    client: grpcclient.InferenceServerClient, server: tuple[LiveServer, int]
) -> None:
    png = photo("mnist_00_7.png")
    spec = load_bundle(ROOT / "models" / "digits", verify_hash=False).metadata.input
    tensor = prepare(png, spec, ImageLimits()).array[None]
    fp32 = grpcclient.InferInput("image", list(tensor.shape), "FP32")
    fp32.set_data_from_numpy(tensor)
    from_tensor = client.infer("digits", [fp32], headers=AUTH).as_numpy("probs")
    from_file = client.infer("digits", [files_input([png])], headers=AUTH).as_numpy("probs")
    np.testing.assert_allclose(from_tensor, from_file, atol=1e-6)
    # typed `contents` instead of raw_input_contents (other OIP clients send these)
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        req = pb.ModelInferRequest(model_name="digits")
        t = req.inputs.add(name="image", datatype="BYTES", shape=[1])
        t.contents.bytes_contents.append(png)
        got = stub.ModelInfer(req, metadata=tuple(AUTH.items()))
        probs = np.frombuffer(got.raw_output_contents[0], dtype="<f4").reshape(1, -1)
        np.testing.assert_allclose(probs, from_file, atol=1e-6)
        req = pb.ModelInferRequest(model_name="digits")
        t = req.inputs.add(name="image", datatype="FP32", shape=list(tensor.shape))
        t.contents.fp32_contents.extend(tensor.ravel().tolist())
        got = stub.ModelInfer(req, metadata=tuple(AUTH.items()))
        probs = np.frombuffer(got.raw_output_contents[0], dtype="<f4").reshape(1, -1)
        np.testing.assert_allclose(probs, from_file, atol=1e-6)


def test_errors_are_status_codes_with_the_http_bindings_details(
    client: grpcclient.InferenceServerClient, server: tuple[LiveServer, int]
) -> None:
    png = photo("mnist_00_7.png")
    client.infer("digits", [files_input([png])], headers=AUTH)  # counted below, whatever ran first

    def infer(model: str, inputs: list[grpcclient.InferInput], **kw: object) -> object:
        return lambda: client.infer(model, inputs, headers=kw.pop("headers", AUTH), **kw)

    code, msg = status_of(infer("nope", [files_input([png])]))
    assert code == "StatusCode.NOT_FOUND" and "nope" in msg
    code, msg = status_of(infer("digits", [files_input([b"not an image"])]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "image" in msg.lower()
    code, msg = status_of(infer("digits", [files_input([png] * (MAX_BATCH + 1))]))
    assert code == "StatusCode.RESOURCE_EXHAUSTED" and str(MAX_BATCH) in msg
    ints = grpcclient.InferInput("image", [1, 2], "INT32")
    ints.set_data_from_numpy(np.zeros((1, 2), np.int32))
    code, msg = status_of(infer("digits", [ints]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "BYTES" in msg and "FP32" in msg
    wrong = grpcclient.InferInput("pixels", [1], "BYTES")
    wrong.set_data_from_numpy(np.array([png], dtype=np.object_))
    code, msg = status_of(infer("digits", [wrong]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "'image'" in msg
    nan = grpcclient.InferInput("image", [1, 28, 28, 1], "FP32")
    nan.set_data_from_numpy(np.full((1, 28, 28, 1), np.nan, np.float32))
    code, msg = status_of(infer("digits", [nan]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "NaN" in msg
    code, msg = status_of(infer("digits", [files_input([png])], headers={}))
    assert code == "StatusCode.UNAUTHENTICATED" and "x-api-key" in msg
    code, _ = status_of(infer("digits", [files_input([png])], headers={"x-api-key": "wrong"}))
    assert code == "StatusCode.UNAUTHENTICATED"
    code, msg = status_of(
        infer("digits", [files_input([png])], outputs=[grpcclient.InferRequestedOutput("logits")])
    )
    assert code == "StatusCode.INVALID_ARGUMENT" and "logits" in msg
    # a message over the gRPC message limit is refused by gRPC itself, before any parsing
    big = files_input([b"\xff" * (MAX_REQUEST_BYTES + (2 << 20))])
    code, _ = status_of(infer("digits", [big]))
    assert code == "StatusCode.RESOURCE_EXHAUSTED"
    # raw contents for some inputs only, and an input with no data at all
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="image", datatype="BYTES", shape=[1])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, metadata=tuple(AUTH.items()))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents" in str(info.value.details())
        req.raw_input_contents.extend([b"", b""])
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(req, metadata=tuple(AUTH.items()))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # a 2 MB version string: the error names it, shortened (gRPC caps trailers at 16 KiB)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelMetadata(
                pb.ModelMetadataRequest(name="digits", version="9" * 2_000_000),
                metadata=tuple(AUTH.items()),
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(str(info.value.details())) <= 2048
        # Triton's own extensions are not served
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=tuple(AUTH.items()))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # the server is still well: no worker died, nothing logged a traceback
    assert client.is_server_ready()
    assert "Traceback" not in server[0].log_text()
    # calls are counted in /metrics like HTTP requests, an unknown model without its name
    text = httpx.get(f"{server[0].base}/metrics", headers=AUTH, timeout=30).text
    assert 'method="POST",model="digits",route="grpc ModelInfer",status="200"' in text
    assert 'method="POST",model="",route="grpc ModelInfer",status="404"' in text
    # a served model's refusals count under its name, as over HTTP (round 31: they were all
    # model="", so the overload alert, per model, never saw gRPC's 503s)
    assert 'method="POST",model="digits",route="grpc ModelInfer",status="401"' in text
    assert 'method="POST",model="digits",route="grpc ModelInfer",status="400"' in text
    assert 'model="nope"' not in text


def test_a_key_sent_twice_is_no_key(server: tuple[LiveServer, int]) -> None:
    """gRPC mapped a repeated x-api-key to its last value, HTTP to its first: a key header
    sent more than once now presents no key on either door (round 19)."""
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelReadyRequest(name="digits")
        assert stub.ModelReady(request, metadata=(("x-api-key", KEY),), timeout=10).ready
        for twice in ([KEY, KEY], ["wrong", KEY], [KEY, "wrong"]):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelReady(request, metadata=[("x-api-key", k) for k in twice], timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "once" in str(info.value.details())
        # round 21: spaces around the key are not part of it, as HTTP reads them
        assert stub.ModelReady(request, metadata=(("x-api-key", f" {KEY} "),), timeout=10).ready
        bearer = [("authorization", f"Bearer {KEY}")] * 2
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelReady(request, metadata=bearer, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_round_16_client_names_never_become_metric_series(server: tuple[LiveServer, int]) -> None:
    """A call without the key, or one the client cancelled, stored its model name as a label
    (18,000 cancelled calls made 5,997 series); only a served model's name is one now."""
    made_up = [f"madeup{i:04d}" for i in range(20)]
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for name in made_up[:10]:  # without the key
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for name in made_up[10:]:  # cancelled at once
            future = stub.ModelInfer.future(
                pb.ModelInferRequest(model_name=name), metadata=tuple(AUTH.items())
            )
            future.cancel()
    time.sleep(0.5)
    files = list((server[0].log.parent / "metrics").glob("*.db"))
    assert files, "the metrics folder was not used"
    stored = b"".join(f.read_bytes() for f in files)
    assert not [n for n in made_up if n.encode() in stored]
    assert b"digits" in stored  # served models' names are labels


def test_a_grpc_port_in_use_stops_start_up_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {
            **os.environ,
            "IMGCLASS_DATA_DIR": str(tmp_path / "data"),
            "IMGCLASS_PORT": str(free_port()),
            "IMGCLASS_GRPC_PORT": str(port),
            "IMGCLASS_GRPC_MAX_MESSAGE_BYTES": str(MAX_REQUEST_BYTES),
        }
        run = subprocess.run(
            [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60
        )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        f"imgclass: not started: cannot listen on 127.0.0.1:{port} (IMGCLASS_GRPC_PORT): "
        "Address already in use"
    )


def test_round_15_findings(server: tuple[LiveServer, int]) -> None:
    """Fuzz round 15 on the gRPC binding: each of these was answered otherwise."""
    png = photo("mnist_00_7.png")
    meta = tuple(AUTH.items())
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def refused(req: object, code: grpc.StatusCode, said: str) -> None:
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(req, metadata=meta)
            assert info.value.code() == code, info.value.details()
            assert said in str(info.value.details()), info.value.details()

        def files_request(n: int = 1) -> pb.ModelInferRequest:
            req = pb.ModelInferRequest(model_name="digits")
            t = req.inputs.add(name="image", datatype="BYTES", shape=[n])
            t.contents.bytes_contents.extend([png] * n)
            return req

        # an output asked 400 times: a 15 KB request, a 338 MB answer
        req = files_request()
        for _ in range(3):
            out = req.outputs.add(name="probs")
            out.parameters["classification"].int64_param = 5
        refused(req, grpc.StatusCode.INVALID_ARGUMENT, "more than once")
        # 4 million empty BYTES elements: expanded before the image count refused them
        req = pb.ModelInferRequest(model_name="digits")
        t = req.inputs.add(name="image", datatype="BYTES", shape=[1_000_000])
        t.contents.bytes_contents.extend([b""] * 1_000_000)
        refused(req, grpc.StatusCode.RESOURCE_EXHAUSTED, f"({MAX_BATCH})")
        req = pb.ModelInferRequest(model_name="digits")
        req.inputs.add(name="image", datatype="BYTES", shape=[200_000])
        req.raw_input_contents.append(b"\x00\x00\x00\x00" * 200_000)
        refused(req, grpc.StatusCode.RESOURCE_EXHAUSTED, f"the limit is {MAX_BATCH}.")
        # a classification parameter of another type was ignored (probabilities came back)
        req = files_request()
        req.outputs.add(name="probs").parameters["classification"].string_param = "5"
        refused(req, grpc.StatusCode.INVALID_ARGUMENT, "got string_param '5'")
        req = files_request()  # round 24: "must be an int64_param >= 0 ... got int64_param"
        req.outputs.add(name="probs").parameters["classification"].int64_param = -1
        refused(req, grpc.StatusCode.INVALID_ARGUMENT, "got int64_param -1")
        # round 24: no input at all read "takes one input named 'image'; got ."
        refused(
            pb.ModelInferRequest(model_name="digits"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "got no input.",
        )
        # raw_input_contents and contents both: the contents were dropped in silence
        req = files_request()
        req.raw_input_contents.append(len(png).to_bytes(4, "little") + png)
        refused(req, grpc.StatusCode.INVALID_ARGUMENT, "both raw_input_contents and contents")
        # a message that is not protobuf: grpcio's own INTERNAL "Exception deserializing"
        raw_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for junk in (b"\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0b" * 1000):
            with pytest.raises(grpc.RpcError) as info:
                raw_infer(junk, metadata=meta)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not valid protobuf" in str(info.value.details())
        # ModelReady answered without the key that reads need, listing the models
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelReady(pb.ModelReadyRequest(name="zz"))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # a client's short deadline is named as such
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(files_request(MAX_BATCH), metadata=meta, timeout=0.001)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "request_deadline_s" not in str(info.value.details())
        # and a good call still works
        assert stub.ModelInfer(files_request(), metadata=meta).outputs


@contextmanager
def held_calls(
    port: int, method: str, n: int, host: str = "127.0.0.1"
) -> Iterator[tuple[grpc.Channel, list[Any]]]:
    """`n` calls of `method` on one new connection (so one server process) whose request
    stream never yields its message, and that channel; let go on exit."""
    stop = threading.Event()

    def never() -> Iterator[bytes]:
        stop.wait()
        return
        yield b""

    channel = grpc.insecure_channel(
        f"{host}:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )
    call = channel.stream_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        yield channel, [call.future(never()) for _ in range(n)]
    finally:
        stop.set()
        channel.close()


@pytest.mark.slow
def test_round_17_calls_that_never_send_a_message_cannot_starve_the_health_service(
    server: tuple[LiveServer, int],
) -> None:
    """48 calls that sent headers and never their message held every gRPC thread of a process
    for good: health probes got RESOURCE_EXHAUSTED for as long as the client liked. The
    protocol's calls now take one of 8 places (56 more wait for one within the request
    deadline, round 43; more are refused at once), threads are kept for the health service,
    and a message must arrive within IMGCLASS_BODY_TIMEOUT_S."""
    t0 = time.monotonic()
    n = GRPC_PER_PEER + GRPC_WAITING + 6  # one address holds at most GRPC_PER_PEER (round 44)
    with held_calls(server[1], "/inference.GRPCInferenceService/ModelInfer", n) as (
        held_channel,
        held,
    ):
        time.sleep(1.0)
        refused = [f for f in held if f.done()]
        assert len(refused) == 6 and all(  # its address's share taken, and the queue full
            f.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[union-attr]
            for f in refused
        )
        check = held_channel.unary_unary("/grpc.health.v1.Health/Check")
        for _ in range(6):  # the health service answers meanwhile, on the same process
            assert bytes(check(b"", timeout=2)) == b"\x08\x01"
        for f in held:  # the rest are cancelled once their message is overdue, or wait no more
            code = f.exception(timeout=20).code()  # type: ignore[union-attr]
            assert code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert time.monotonic() - t0 < 10 + 3 + 5  # the deadline, a message's time, slack


def test_round_18_health_checks_without_a_message_take_only_their_own_places(
    server: tuple[LiveServer, int],
) -> None:
    """Health checks that never sent their message took no place and held every thread (0 of
    57 probes and 0 of 57 ServerLive answered). They take one of the health service's places
    now (24, at most 8 from one address), and their few-byte message must come within 2 s."""
    t0 = time.monotonic()
    with held_calls(server[1], "/grpc.health.v1.Health/Check", 20) as (channel, held):
        time.sleep(0.5)
        refused = [f for f in held if f.done()]
        assert len(refused) >= 12, len(refused)  # one address holds at most 8 (round 20)
        detail = str(refused[0].exception().details())  # type: ignore[union-attr]
        assert "health checks" in detail
        live = pb_grpc.GRPCInferenceServiceStub(channel).ServerLive  # the same process
        assert live(pb.ServerLiveRequest(), timeout=2).live
        for f in held:
            assert f.exception(timeout=6).code() in (  # type: ignore[union-attr]
                grpc.StatusCode.CANCELLED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
        assert time.monotonic() - t0 < 2 + 4


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.slow  # a server of its own
@pytest.mark.skipif(not _ipv6_loopback(), reason="needs ::1 (an IPv6 loopback)")
def _dual_stack_env(port: int) -> dict[str, str]:
    """One worker serving `digits` on `::` (IPv4 and IPv6: two addresses to call from)."""
    return {
        "IMGCLASS_HOST": "::",
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_WORKERS": "1",
        "IMGCLASS_GRPC_PORT": str(port),
        "IMGCLASS_ALLOW_UNAUTHENTICATED_WRITES": "true",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }


def test_round_18_one_address_cannot_hold_the_health_service(tmp_path: Path) -> None:
    """A client flooding the health service with checks that never send their message kept
    every other prober's checks RESOURCE_EXHAUSTED (1 of 56 answered). One address now holds
    at most 8 of its 24 places: checks from another address are answered throughout. The
    server listens on `::` (IPv4 and IPv6), which the gRPC binding could not bind before."""
    port = free_port()
    env = _dual_stack_env(port)
    with live_server(tmp_path, env, entry="app", ready_path="/healthz"):
        wait_ready(port)
        with held_calls(port, "/grpc.health.v1.Health/Check", 20) as (_, held):
            time.sleep(0.5)
            refused = [f for f in held if f.done()]
            assert len(refused) == 12, len(refused)
            assert "from your address" in str(refused[0].exception().details())  # type: ignore[union-attr]
            with grpc.insecure_channel(f"[::1]:{port}") as other:
                check = other.unary_unary("/grpc.health.v1.Health/Check")
                for _ in range(10):  # the other address's probes, while the two are held
                    assert bytes(check(b"", timeout=2)) == b"\x08\x01"


def test_one_address_cannot_hold_every_inference_place(tmp_path: Path) -> None:
    """Round 44: 24 calls from one client that sent only the start of their message held all
    8 places of a process until the body timeout; every other client's call waited 10 s and
    was refused. One address now holds at most GRPC_PER_PEER (6): calls from another are
    answered at once meanwhile."""
    port = free_port()
    env = _dual_stack_env(port)
    req = pb.ModelInferRequest(model_name="digits")
    t = req.inputs.add(name="image", datatype="BYTES", shape=[1])
    t.contents.bytes_contents.append(photo("mnist_00_7.png"))
    with live_server(tmp_path, env, entry="app", ready_path="/healthz"):
        wait_ready(port)
        with held_calls(port, "/inference.GRPCInferenceService/ModelInfer", 24):
            time.sleep(0.5)
            with grpc.insecure_channel(f"[::1]:{port}") as other:
                stub = pb_grpc.GRPCInferenceServiceStub(other)
                for _ in range(5):
                    t0 = time.monotonic()
                    assert stub.ModelInfer(req, timeout=5).model_name == "digits"
                    assert time.monotonic() - t0 < 2


def test_counts_of_tensors_and_dimensions_are_refused_before_they_are_read(
    server: tuple[LiveServer, int],
) -> None:
    """Round 44: 24,000 requested outputs took 22 s of CPU (a quadratic duplicate check, after
    the client's deadline), 8 million shape dimensions +330 MB a call, 300,000 inputs +150 MB."""
    meta = tuple(AUTH.items())
    with grpc.insecure_channel(f"127.0.0.1:{server[1]}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        many_outputs = pb.ModelInferRequest(model_name="digits")
        for i in range(24_000):
            many_outputs.outputs.add(name=str(i))
        many_inputs = pb.ModelInferRequest(model_name="digits")
        for _ in range(300):
            many_inputs.inputs.add(name="image", datatype="BYTES", shape=[1])
        many_dims = pb.ModelInferRequest(model_name="digits")
        many_dims.inputs.add(name="image", datatype="BYTES", shape=[1] * 1_000_000)
        for req, said in (
            (many_outputs, "24,000 outputs; at most 16"),
            (many_inputs, "300 inputs; at most 16"),
            (many_dims, "shape has 1,000,000 dimensions"),
        ):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(req, metadata=meta, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
            assert said in str(info.value.details()), info.value.details()
            assert time.monotonic() - t0 < 2


def _refused_start(tmp_path: Path, port: int) -> str:
    """`python -m app` with gRPC on `port`: it must stop at start-up (exit 2); its one line."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "IMGCLASS_DATA_DIR": str(tmp_path / "data"),
        "IMGCLASS_PORT": str(free_port()),
        "IMGCLASS_GRPC_PORT": str(port),
    }
    run = subprocess.run(
        [sys.executable, "-m", "app"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2, run.stderr[-2000:]
    return run.stderr.strip()


def test_a_second_imgclass_cannot_join_a_running_ones_grpc_port(
    server: tuple[LiveServer, int], tmp_path: Path
) -> None:
    """Round 24: workers bind the gRPC port with SO_REUSEPORT, so a second imgclass given the
    same port started and took a share of the first one's connections (2 of 12 clients got
    its NOT_FOUND). The parent now checks that nobody holds the port."""
    port = server[1]
    assert _refused_start(tmp_path, port) == (
        f"imgclass: not started: cannot listen on 127.0.0.1:{port} (IMGCLASS_GRPC_PORT): "
        "Address already in use"
    )


def test_a_port_claimed_by_an_imgclass_still_starting_is_refused(tmp_path: Path) -> None:
    """Round 25: the check above sees the port only once the first server's workers listen,
    seconds after it started; two servers started within 2 s both took the port. The parent
    claims the port first (an abstract Unix socket named for it): here the test holds that
    claim, as a first server still starting would."""
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as claim:
        claim.bind(f"\0imgclass-grpc-port-{port}")
        said = _refused_start(tmp_path, port)
    assert said == (
        f"imgclass: not started: cannot listen on 127.0.0.1:{port} (IMGCLASS_GRPC_PORT): "
        "another imgclass on this machine has claimed it (starting, serving or stopping)"
    )


def test_a_bracketed_ipv6_host_is_checked_as_http_binds_it() -> None:
    """Round 22: IMGCLASS_HOST=[::1] with gRPC on was refused ("Name or service not known",
    blaming the gRPC port): HTTP strips the brackets, the gRPC check did not."""
    from app.grpc_ports import check_grpc_port

    if not _ipv6_loopback():
        pytest.skip("needs ::1 (an IPv6 loopback)")
    check_grpc_port("[::1]", free_port())
    check_grpc_port("::1", free_port())


@pytest.mark.slow  # waits for the handshake limit
def test_a_connection_that_never_speaks_is_closed_by_the_grpc_port(
    server: tuple[LiveServer, int],
) -> None:
    """Round 22: a connection to the gRPC port that sent nothing (no HTTP/2 preface, no TLS
    hello) was held 120 s, gRPC's default; the server's handshake limit is 10 s now."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server[1])) as idle:
        idle.settimeout(30)
        try:
            while idle.recv(4096):
                pass
        except (ConnectionResetError, TimeoutError):
            pass
    assert time.monotonic() - t0 < 20


def test_an_answered_call_error_lets_go_of_its_frames() -> None:
    """Round 24: a call refused after its work ran on the event loop kept its frames (its
    message, decoded images) in a cycle through the loop's Future until a full collection:
    300 refused 5 MB messages left a 1-worker server at 663-846 MiB at rest, from 225. The
    error's tracebacks are dropped once its status is set (360-377 MiB in the same run)."""
    from types import SimpleNamespace

    from app.errors import InvalidRequest
    from app.grpc_oip import OipServicer

    class Aborted(Exception):
        pass

    class Context:
        def abort(self, code: grpc.StatusCode, detail: str) -> None:
            raise Aborted(detail)

        def time_remaining(self) -> float:
            return 10.0

    servicer = OipServicer.__new__(OipServicer)
    servicer.settings = SimpleNamespace(api_key_for_reads=False)  # type: ignore[assignment]
    servicer.registry = SimpleNamespace(names=lambda: [])  # type: ignore[assignment]
    cause = ValueError("what the decoder said")
    error = InvalidRequest("not an image")

    def work() -> None:
        try:
            raise cause
        except ValueError:
            raise error from cause

    with pytest.raises(Aborted, match="not an image"):
        servicer._call(Context(), "ModelInfer", work)  # type: ignore[arg-type]
    assert error.__traceback__ is None and cause.__traceback__ is None


def test_calls_beyond_those_running_wait_for_a_place_as_triton_queues_them(
    server: tuple[LiveServer, int],
) -> None:
    """Round 43: 8 of 16 `async_infer` calls from one tritonclient failed UNAVAILABLE (the
    ninth call in a process was refused at once; tritonclient retries nothing). They wait
    for a place now: 3 x (places of both workers) calls at once all answer."""
    client = grpcclient.InferenceServerClient(url=f"127.0.0.1:{server[1]}")
    png = photo("mnist_00_7.png")
    done: list[Any] = []
    lock = threading.Condition()

    def answered(result: Any, error: Any) -> None:
        with lock:
            done.append(error or result)
            lock.notify()

    n = 3 * 2 * GRPC_CALLS
    for _ in range(n):
        client.async_infer("digits", [files_input([png])], answered, headers=AUTH)
    with lock:
        assert lock.wait_for(lambda: len(done) == n, timeout=60)
    errors = [d for d in done if isinstance(d, InferenceServerException)]
    assert not errors, errors[:2]
    assert {int(np.argmax(d.as_numpy("probs")[0])) for d in done} == {7}
