"""Open Inference Protocol v2 driven by the official Triton HTTP client (tritonclient[http])
against a real uvicorn server on loopback, on the shipped imagenet and digits bundles and on
models taught there from Fashion-MNIST test images (products backbone)."""

from __future__ import annotations

import base64
import gc
import gzip
import json
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.bundle import load_bundle
from app.errors import BadRequest, PayloadTooLarge
from app.imaging import ImageLimits, prepare
from app.oip import INLINE_JSON_BYTES, parse_infer_request
from tests.app.teach.conftest import BAG, SNEAKER, TROUSER, fm_test_split, png
from tests.conftest import DATA, ROOT, require
from tests.live_server import LiveServer, live_server

httpclient = pytest.importorskip("tritonclient.http", reason="pip install 'tritonclient[http]'")
from tritonclient.utils import InferenceServerException  # noqa: E402

MAX_BATCH = 4
MAX_REQUEST_BYTES = 2 * 1024 * 1024
OIP_MAX_JSON = 1024 * 1024
# Real ImageNet validation-style photos (foolbox 3.3.4); the true class is in the file name.
PHOTOS = ["imagenet_00_243.jpg", "imagenet_01_559.jpg", "imagenet_02_438.jpg"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("v2")
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["imagenet", "digits", "products", "santa"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_MAX_BATCH_IMAGES": str(MAX_BATCH),
        "IMGCLASS_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "IMGCLASS_OIP_MAX_JSON_BYTES": str(OIP_MAX_JSON),
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp, env, ready_path="/v2/health/ready") as s:
        yield s


@pytest.fixture(scope="module")
def client(server: LiveServer) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}", network_timeout=60)


def photo(name: str) -> bytes:
    return require(DATA / "photos" / "foolbox" / name).read_bytes()


def bytes_input(images: list[bytes], binary: bool) -> httpclient.InferInput:
    inp = httpclient.InferInput("image", [len(images)], "BYTES")
    if binary:
        inp.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    else:
        b64 = [base64.b64encode(b) for b in images]
        inp.set_data_from_numpy(np.array(b64, dtype=np.object_), binary_data=False)
    return inp


def v1_predictions(server: LiveServer, model: str, images: list[bytes], k: int) -> list[list[dict]]:  # type: ignore[type-arg]
    files = [("file", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate(images)]
    r = httpx.post(f"{server.base}/v1/models/{model}/predict?top_k={k}", files=files, timeout=60)
    assert r.status_code == 200, r.text
    return [res["predictions"] for res in r.json()["results"]]


def parse_classification(rows: np.ndarray) -> list[list[tuple[float, int, str]]]:
    out = []
    for row in rows:
        items = []
        for cell in row:
            text = cell.decode() if isinstance(cell, bytes) else str(cell)
            score, index, label = text.split(":", 2)
            items.append((float(score), int(index), label))
        out.append(items)
    return out


def test_health_and_metadata_through_tritonclient(
    client: httpclient.InferenceServerClient,
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("imagenet")
    assert client.is_model_ready("imagenet", model_version="1")
    assert not client.is_model_ready("imagenet", model_version="2")
    assert not client.is_model_ready("no-such-model")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "imgclass"
    assert {"binary_tensor_data", "classification"} <= set(server_meta["extensions"])
    meta = client.get_model_metadata("imagenet")
    assert meta["versions"] == ["1"]
    # One entry per input name: generic clients key inputs by name.
    [image] = meta["inputs"]
    assert (image["name"], image["datatype"], image["shape"]) == ("image", "BYTES", [-1])
    assert image["parameters"]["also_accepts"].startswith("FP32 [-1,224,224,3] NHWC")
    outputs = {o["name"]: o["shape"] for o in meta["outputs"]}
    assert outputs == {"probs": [-1, 1000], "embedding": [-1, 1280]}


def santa_pictures() -> list[bytes]:
    """A real photo and a drawn red-and-white figure (generated here), as /v1 and /v2 take them."""
    from io import BytesIO

    from PIL import Image, ImageDraw

    drawn = Image.new("RGB", (160, 160), "white")
    draw = ImageDraw.Draw(drawn)
    draw.ellipse((30, 50, 130, 150), fill=(200, 20, 30))  # coat
    draw.ellipse((55, 25, 105, 75), fill=(240, 200, 170))  # face
    draw.polygon([(50, 35), (110, 35), (80, 0)], fill=(200, 20, 30))  # hat
    draw.ellipse((55, 55, 105, 100), fill="white")  # beard
    buf = BytesIO()
    drawn.save(buf, "PNG")
    return [photo(PHOTOS[0]), buf.getvalue()]


def text(cell: bytes | str) -> str:  # tritonclient: BYTES as bytes (binary) or str (JSON)
    return cell.decode() if isinstance(cell, bytes) else cell


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_yes_no_model_answers_v1s_decision_and_threshold(
    client: httpclient.InferenceServerClient, server: LiveServer, binary: bool
) -> None:
    """`santa` decides at its calibrated threshold on /v1 (0.5286, not argmax's 0.5): /v2 says
    that threshold in the model's metadata and answers the same verdict as `decision`."""
    meta = client.get_model_metadata("santa")
    rule = {"positive_label": "santa", "threshold": 0.5286}
    assert meta["parameters"] == rule
    assert {"name": "decision", "datatype": "BYTES", "shape": [-1], "parameters": rule} in meta[
        "outputs"
    ]
    images = santa_pictures()
    files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(images)]
    v1 = httpx.post(f"{server.base}/v1/models/santa/predict", files=files, timeout=60).json()
    expected = [res["decision"]["label"] for res in v1["results"]]
    result = client.infer("santa", [bytes_input(images, binary)])  # no outputs: every one
    got = [text(b) for b in result.as_numpy("decision")]
    assert got == expected, v1
    out = result.get_output("decision")
    assert (out["datatype"], out["shape"]) == ("BYTES", [2])
    assert {k: out["parameters"][k] for k in rule} == rule
    probs = result.as_numpy("probs")
    assert got == ["santa" if p[1] >= 0.5286 else "not_santa" for p in probs]
    # Asked for by name, alone or beside others, in the order asked
    only = client.infer(
        "santa",
        [bytes_input(images, binary)],
        outputs=[httpclient.InferRequestedOutput("decision", binary_data=binary)],
    )
    assert [o["name"] for o in only.get_response()["outputs"]] == ["decision"]
    assert [text(b) for b in only.as_numpy("decision")] == expected
    probs_only = client.infer(
        "santa", [bytes_input(images, binary)], outputs=[httpclient.InferRequestedOutput("probs")]
    )
    assert [o["name"] for o in probs_only.get_response()["outputs"]] == ["probs"]
    with pytest.raises(InferenceServerException, match="Classification applies to 'probs' only"):
        client.infer(
            "santa",
            [bytes_input(images, binary)],
            outputs=[httpclient.InferRequestedOutput("decision", class_count=1)],
        )
    # A model with no threshold (imagenet) has neither
    assert "parameters" not in client.get_model_metadata("imagenet")
    with pytest.raises(InferenceServerException, match="no output 'decision'"):
        client.infer(
            "imagenet",
            [bytes_input(images[:1], binary)],
            outputs=[httpclient.InferRequestedOutput("decision")],
        )


@pytest.mark.parametrize(  # JSON: 1.5 s, full runs only
    "binary", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["binary", "json"]
)
def test_real_photos_same_top5_as_v1(
    client: httpclient.InferenceServerClient, server: LiveServer, binary: bool
) -> None:
    """All 20 foolbox ImageNet photos, in batches of MAX_BATCH: the classification extension
    gives exactly /v1's top-5 (indices, labels, scores)."""
    names = sorted(p.name for p in (DATA / "photos" / "foolbox").glob("imagenet_*.jpg"))
    assert len(names) == 20, "expected the 20 foolbox ImageNet photos; run scripts/fetch-data"
    for start in range(0, len(names), MAX_BATCH):
        images = [photo(n) for n in names[start : start + MAX_BATCH]]
        outputs = [httpclient.InferRequestedOutput("probs", binary_data=binary, class_count=5)]
        result = client.infer("imagenet", [bytes_input(images, binary)], outputs=outputs)
        top5 = parse_classification(result.as_numpy("probs"))
        expected = v1_predictions(server, "imagenet", images, 5)
        assert [[i for _, i, _ in row] for row in top5] == [
            [p["index"] for p in row] for row in expected
        ]
        for row, exp in zip(top5, expected, strict=True):
            assert [label for _, _, label in row] == [p["label"] for p in exp]
            np.testing.assert_allclose([s for s, _, _ in row], [p["score"] for p in exp], atol=1e-5)
    # The first photos' true classes (in their file names) are the shipped model's top-1.
    first = parse_classification(
        client.infer(
            "imagenet",
            [bytes_input([photo(p) for p in PHOTOS], binary)],
            outputs=[httpclient.InferRequestedOutput("probs", binary_data=binary, class_count=1)],
        ).as_numpy("probs")
    )
    assert [row[0][1] for row in first] == [int(p.split("_")[2].split(".")[0]) for p in PHOTOS]


def test_full_outputs_binary(client: httpclient.InferenceServerClient, server: LiveServer) -> None:
    images = [photo(PHOTOS[0]), photo(PHOTOS[1])]
    result = client.infer("imagenet", [bytes_input(images, True)])  # no outputs: all, binary
    probs = result.as_numpy("probs")
    emb = result.as_numpy("embedding")
    assert probs.shape == (2, 1000) and probs.dtype == np.float32
    assert emb.shape == (2, 1280)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    expected = v1_predictions(server, "imagenet", images, 1)
    assert [int(np.argmax(p)) for p in probs] == [row[0]["index"] for row in expected]
    # Version form of the route gives the same answer.
    again = client.infer("imagenet", [bytes_input(images, True)], model_version="1")
    np.testing.assert_allclose(again.as_numpy("probs"), probs, atol=1e-6)


def test_fp32_tensor_matches_encoded_image(client: httpclient.InferenceServerClient) -> None:
    """An FP32 NHWC tensor prepared by the ingestion policy scores like the encoded file."""
    png = photo("mnist_00_7.png")
    spec = load_bundle(ROOT / "models" / "digits", verify_hash=False).metadata.input
    tensor = prepare(png, spec, ImageLimits()).array[None]
    fp32 = httpclient.InferInput("image", list(tensor.shape), "FP32")
    fp32.set_data_from_numpy(tensor, binary_data=True)
    from_tensor = client.infer("digits", [fp32]).as_numpy("probs")
    as_json = httpclient.InferInput("image", list(tensor.shape), "FP32")
    as_json.set_data_from_numpy(tensor, binary_data=False)
    from_json = client.infer(
        "digits", [as_json], outputs=[httpclient.InferRequestedOutput("probs", binary_data=False)]
    ).as_numpy("probs")
    from_file = client.infer("digits", [bytes_input([png], True)]).as_numpy("probs")
    np.testing.assert_allclose(from_tensor, from_file, atol=1e-6)
    np.testing.assert_allclose(from_json, from_file, atol=1e-6)


def test_gzip_request_body(client: httpclient.InferenceServerClient) -> None:
    images = [photo(PHOTOS[2])]
    plain = client.infer("imagenet", [bytes_input(images, True)]).as_numpy("probs")
    packed = client.infer(
        "imagenet", [bytes_input(images, True)], request_compression_algorithm="gzip"
    ).as_numpy("probs")
    np.testing.assert_allclose(packed, plain, atol=1e-6)


def test_stacked_and_repeated_content_codings(server: LiveServer) -> None:
    """Fuzz round 4: `gzip, gzip` was refused as "not accepted (gzip, deflate)", and a second
    Content-Encoding line was ignored (the body then read as broken JSON). Codings are one
    list across lines (RFC 9110 5.3), undone in reverse; x-gzip is gzip."""
    doc = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(photo(PHOTOS[2])).decode()],
                }
            ]
        }
    ).encode()
    plain = _post(server, doc)
    assert plain.status_code == 200, plain.text
    twice = gzip.compress(gzip.compress(doc))
    for headers in (
        [("Content-Encoding", "gzip, gzip")],
        [("Content-Encoding", "gzip"), ("Content-Encoding", "x-gzip")],
    ):
        r = httpx.post(
            f"{server.base}/v2/models/imagenet/infer", content=twice, headers=headers, timeout=30
        )
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["outputs"] == plain.json()["outputs"]
    truncated = _post(server, gzip.compress(doc)[:-9], {"Content-Encoding": "gzip"})
    assert truncated.status_code == 400 and "truncated" in truncated.json()["error"]


def _infer_error(
    client: httpclient.InferenceServerClient, *args, **kwargs
) -> InferenceServerException:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as info:
        client.infer(*args, **kwargs)
    return info.value


def test_errors_through_tritonclient(client: httpclient.InferenceServerClient) -> None:
    jpeg = photo(PHOTOS[0])
    err = _infer_error(client, "no-such-model", [bytes_input([jpeg], True)])
    assert err.status() == "404" and "no-such-model" in err.message()
    err = _infer_error(client, "imagenet", [bytes_input([jpeg], True)], model_version="9")
    assert err.status() == "404"
    err = _infer_error(client, "imagenet", [bytes_input([b"<html>not an image</html>"], True)])
    assert err.status() == "415" and "HTML" in err.message()
    err = _infer_error(client, "imagenet", [bytes_input([jpeg[: len(jpeg) // 3]], True)])
    assert err.status() == "422"
    err = _infer_error(client, "imagenet", [bytes_input([jpeg] * (MAX_BATCH + 1), True)])
    assert err.status() == "413"
    wrong = httpclient.InferInput("image", [1, 28, 28, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 28, 28, 1), np.float32))
    err = _infer_error(client, "imagenet", [wrong])
    assert err.status() == "400" and "224" in err.message()
    ints = httpclient.InferInput("image", [1, 224, 224, 3], "INT32")
    ints.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.int32))
    err = _infer_error(client, "imagenet", [ints])
    assert err.status() == "400" and "INT32" in err.message()
    other = httpclient.InferInput("pixels", [1], "BYTES")
    other.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    err = _infer_error(client, "imagenet", [other])
    assert err.status() == "400" and "'image'" in err.message()
    nan = np.full((1, 28, 28, 1), np.nan, np.float32)
    bad = httpclient.InferInput("image", [1, 28, 28, 1], "FP32")
    bad.set_data_from_numpy(nan)
    err = _infer_error(client, "digits", [bad])
    assert err.status() == "400" and "NaN" in err.message()
    out = httpclient.InferRequestedOutput("logits")
    err = _infer_error(client, "imagenet", [bytes_input([jpeg], True)], outputs=[out])
    assert err.status() == "400" and "logits" in err.message()


def _post(
    server: LiveServer, body: bytes, headers: Mapping[str, str | bytes] | None = None
) -> httpx.Response:
    return httpx.post(
        f"{server.base}/v2/models/imagenet/infer", content=body, headers=headers or {}, timeout=30
    )


def _tensor(datatype: str, shape: list[int], data: list[object]) -> bytes:
    doc = {"inputs": [{"name": "image", "datatype": datatype, "shape": shape, "data": data}]}
    return json.dumps(doc).encode()


_both_head = json.dumps(
    {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [1],
                "data": ["not a list of images"],
                "parameters": {"binary_data_size": 8},
            }
        ]
    }
).encode()


def test_raw_protocol_errors_have_the_error_shape(server: LiveServer) -> None:
    def fp32(value: str) -> bytes:
        head = '{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [%s]}]}'
        return (head % value).encode()

    cases: list[tuple[bytes, dict[str, str | bytes], int]] = [
        (b"{not json", {}, 400),
        # Numbers no float32 holds (the 400-digit integer was an OverflowError and a 500).
        (fp32("9" * 400), {}, 400),
        (fp32("1e39"), {}, 400),
        (fp32("NaN"), {}, 400),
        (fp32("-Infinity"), {}, 400),
        # '²' passes str.isdigit() and int() refuses it (a 500 once).
        (b'{"inputs": []}', {"Inference-Header-Content-Length": b"\xb2"}, 400),
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "1" * 30}, 400),
        (b"[]", {}, 400),
        (json.dumps({"inputs": []}).encode(), {}, 400),
        # An unpaired surrogate escape is JSON syntax but no text any answer can carry.
        (
            b'{"inputs": [{"name": "\\ud800", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            {},
            400,
        ),
        (b'{"id": "\xed\xb0\x80", "inputs": []}', {}, 400),
        (
            json.dumps(
                {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}
            ).encode(),
            {},
            400,
        ),
        # Header length past the end of the body.
        (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, 400),
        # Binary size claims more bytes than sent.
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "datatype": "BYTES",
                            "shape": [1],
                            "parameters": {"binary_data_size": 100},
                        }
                    ]
                }
            ).encode(),
            {"Inference-Header-Content-Length": "0"},
            400,
        ),
        # data and binary_data_size together: the data was dropped unsaid (round 19)
        (
            _both_head + struct.pack("<I", 4) + b"abcd",
            {"Inference-Header-Content-Length": str(len(_both_head))},
            400,
        ),
        (b"x" * (MAX_REQUEST_BYTES + 1), {}, 413),
        # A JSON part over its own cap (within the body cap).
        (b" " * (OIP_MAX_JSON + 1) + b"{}", {}, 413),
        # A gzip bomb: small on the wire, over the body cap once inflated.
        (gzip.compress(b" " * (MAX_REQUEST_BYTES + 10)), {"Content-Encoding": "gzip"}, 413),
        (b"{}", {"Content-Encoding": "br"}, 415),
        # Shapes no array can have, or of no elements, slipped past the size limit (0
        # elements) into numpy's reshape: a 500 each.
        *((_tensor("FP32", shape, []), {}, 400) for shape in ([0, 10**30], [1, 0, 2**62, 2**62])),
        (_tensor("FP32", [1] * 70, [0.5]), {}, 400),
        (_tensor("BYTES", [0], []), {}, 400),
        (_tensor("FP32", [], [0.5]), {}, 400),
        (
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "datatype": "FP32",
                            "shape": [0, 10**30],
                            "parameters": {"binary_data_size": 0},
                        }
                    ]
                }
            ).encode(),
            {"Inference-Header-Content-Length": "0"},
            400,
        ),
    ]
    for body, headers, status in cases:
        if headers.get("Inference-Header-Content-Length") == "0":
            headers = {"Inference-Header-Content-Length": str(len(body))}
        r = _post(server, body, headers)
        assert r.status_code == status, (body[:60], r.text)
        doc = r.json()
        assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"]
    # A request that is right in every other way: its id is echoed in the answer.
    b64 = base64.b64encode(photo(PHOTOS[0])).decode()
    good = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    assert _post(server, json.dumps(good).encode(), {}).status_code == 200
    lone_id = json.dumps({"id": "LONE", **good}).replace("LONE", "\\udc00").encode()
    r = _post(server, lone_id, {})
    assert r.status_code == 400 and "surrogate" in r.json()["error"], r.text
    r = httpx.get(f"{server.base}/v2/models/imagenet/nothing-here", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_errors_refused_before_the_v2_routes_have_the_error_shape(server: LiveServer) -> None:
    # Refused by routing (method) or by the guards in front of every route (Host allow-list,
    # cross-site browser POST): problem+json elsewhere, the protocol's shape under /v2, so
    # tritonclient reports the server's message instead of failing to decode the body.
    url = f"{server.base}/v2/models/imagenet/infer"
    cases = [
        httpx.request("PATCH", url, timeout=10),
        # GET/PUT/DELETE reach the catch-all route: it said "No route GET ..." with a 404.
        httpx.get(url, timeout=10),
        httpx.get(f"{server.base}/v2/health/ready", headers={"Host": "rebind.example"}),
        httpx.post(url, content=b"{}", headers={"Origin": "https://other.example"}, timeout=10),
    ]
    assert [r.status_code for r in cases] == [405, 405, 400, 403]
    assert cases[1].headers["allow"] == "POST"
    # a GET route's 405 lists HEAD, which is answered (round 26: it said only GET)
    r = httpx.post(f"{server.base}/v2/health/live", timeout=10)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert httpx.head(f"{server.base}/v2/health/live", timeout=10).status_code == 200
    for r in cases:
        assert r.headers["content-type"] == "application/json", r.text
        doc = r.json()
        assert list(doc) == ["error"] and isinstance(doc["error"], str) and doc["error"]
    assert httpx.patch(f"{server.base}/v1/models", timeout=10).headers["content-type"] == (
        "application/problem+json"
    )


@pytest.mark.slow  # a second server start (~6 s here)
def test_reads_need_the_key_when_configured(tmp_path: Path) -> None:
    env = {
        "IMGCLASS_MODELS_DIR": str(ROOT / "models"),
        "IMGCLASS_ENABLED_MODELS": '["digits"]',
        "IMGCLASS_LOAD_IN_BACKGROUND": "false",
        "IMGCLASS_API_KEY": "k" * 32,
        "IMGCLASS_API_KEY_FOR_READS": "true",
        "IMGCLASS_LOG_LEVEL": "WARNING",
    }
    with live_server(tmp_path, env, ready_path="/v2/health/ready") as s:
        anon = httpclient.InferenceServerClient(url=f"127.0.0.1:{s.port}")
        assert anon.is_server_live()  # probes stay open
        with pytest.raises(InferenceServerException) as info:
            anon.get_model_metadata("digits")
        assert info.value.status() == "401"
        keyed = anon.get_model_metadata("digits", headers={"X-API-Key": "k" * 32})
        assert keyed["name"] == "digits"


def _teach(server: LiveServer, catalog: str, model: str) -> str:
    r = httpx.post(f"{server.base}/v1/catalogs/{catalog}/train", json={"model": model}, timeout=30)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    job = httpx.get(server.base + r.headers["location"], timeout=10).json()
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
        job = httpx.get(server.base + r.headers["location"], timeout=10).json()
    assert job["status"] == "succeeded", job
    version: str = job["result"]["version"]
    return version


@pytest.mark.slow  # 4 s: teaches a model and a second version through a live server
def test_every_taught_version_through_tritonclient(
    client: httpclient.InferenceServerClient, server: LiveServer
) -> None:
    # /versions/{v} is the protocol's way to name a version: it must reach a taught model's
    # older versions, as name@v does on /v1 (it answered 404 "served: '2'" before).
    x, y = fm_test_split()
    pngs = {c: [png(x[i]) for i in np.flatnonzero(y == c)[:16]] for c in (SNEAKER, BAG, TROUSER)}
    base = server.base
    assert httpx.post(f"{base}/v1/catalogs", json={"name": "v2t", "model": "products"}).is_success

    def add(cls: int, label: str) -> None:
        for start in range(0, 12, MAX_BATCH):
            chunk = pngs[cls][start : start + MAX_BATCH]
            files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(chunk)]
            r = httpx.post(f"{base}/v1/catalogs/v2t/items", files=files, data={"label": label})
            assert r.status_code == 201, r.text

    add(SNEAKER, "sneaker")
    add(BAG, "bag")
    assert _teach(server, "v2t", "v2taught") == "1"
    add(TROUSER, "trouser")
    assert _teach(server, "v2t", "v2taught") == "2"

    assert client.get_model_metadata("v2taught")["versions"] == ["1", "2"]
    held_out = [pngs[SNEAKER][-1], pngs[BAG][-1], pngs[TROUSER][-1]]
    for version, n_classes in (("1", 2), ("2", 3)):
        assert client.is_model_ready("v2taught", model_version=version)
        meta = client.get_model_metadata("v2taught", model_version=version)
        assert meta["outputs"][0]["shape"] == [-1, n_classes]
        res = client.infer("v2taught", [bytes_input(held_out, True)], model_version=version)
        assert res.get_response()["model_version"] == version
        probs = res.as_numpy("probs")
        assert probs is not None and probs.shape == (3, n_classes)
        files = [("file", (f"{i}.png", b, "image/png")) for i, b in enumerate(held_out)]
        r = httpx.post(f"{base}/v1/models/v2taught@{version}/predict?top_k=3", files=files)
        assert r.status_code == 200, r.text
        for row, result in zip(probs, r.json()["results"], strict=True):
            for pred in result["predictions"]:
                assert abs(row[pred["index"]] - pred["score"]) < 1e-6
    assert not client.is_model_ready("v2taught", model_version="3")
    r = httpx.get(f"{base}/v2/models/v2taught/versions/3", timeout=10)
    assert r.status_code == 404 and "served: '1', '2'" in r.json()["error"], r.text

    # Both versions at once: each keeps its own queue (one queue named for both made every
    # request close the other version's: 47 of 240 such requests got 503 "shutting down").
    def alternate(version: str, out: list[str]) -> None:
        own = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.port}")
        for _ in range(25):
            try:
                own.infer("v2taught", [bytes_input(held_out[:1], True)], model_version=version)
                out.append("ok")
            except InferenceServerException as exc:
                out.append(exc.message())

    results: list[str] = []
    threads = [threading.Thread(target=alternate, args=(v, results)) for v in "1212"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == ["ok"] * 100, [r for r in results if r != "ok"][:3]


def test_an_output_requested_twice_is_400(server: LiveServer) -> None:
    """Each requested output entry was computed and sent: 10,000 copies of a 1,000-class
    classification in a 1 MB request took 28 s of CPU and 2 GB on a live worker."""
    b64 = base64.b64encode(photo(PHOTOS[0])).decode()
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}
    wanted = {"name": "probs", "parameters": {"classification": 1000}}
    r = _post(server, json.dumps({"inputs": [image], "outputs": [wanted] * 100}).encode(), {})
    assert r.status_code == 400, r.text[:300]
    assert "more than once" in r.json()["error"]
    # 10,000 copies hold 20,000 JSON objects: refused before parsing.
    r = _post(server, json.dumps({"inputs": [image], "outputs": [wanted] * 10_000}).encode(), {})
    assert r.status_code == 400 and "JSON objects" in r.json()["error"], r.text[:300]
    one = json.dumps({"inputs": [image], "outputs": [wanted, {"name": "embedding"}]}).encode()
    r = _post(server, one, {})
    assert r.status_code == 200, r.text[:300]
    assert [o["name"] for o in r.json()["outputs"]] == ["probs", "embedding"]


def test_a_flood_of_json_objects_is_refused_before_parsing(server: LiveServer) -> None:
    """1 MB of `{},` would be 350,000 dicts built with the GIL held (8 MB: 0.23 s, +200 MB)."""
    body = b'{"inputs": [' + b"{}," * (OIP_MAX_JSON // 3 - 20) + b"{}]}"
    r = _post(server, body, {"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "JSON objects; at most 256 are accepted" in r.json()["error"], r.text


def test_a_large_json_part_parses_the_same_with_the_collector_paused() -> None:
    """Over INLINE_JSON_BYTES the JSON part is parsed in one lock with the cyclic collector
    off; the values come out the same and the collector is back on afterwards."""
    values = np.random.default_rng(0).random((6, 28, 28, 1), dtype=np.float32)
    doc = {
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [6, 28, 28, 1], "data": values.tolist()}
        ]
    }
    body = json.dumps(doc).encode()
    assert len(body) > INLINE_JSON_BYTES
    req = parse_infer_request(
        body, None, max_json_bytes=len(body), max_elements=values.size, max_files=32
    )
    assert req.inputs[0].array is not None
    np.testing.assert_array_equal(req.inputs[0].array, values)
    assert gc.isenabled()
    with pytest.raises(BadRequest, match="not valid JSON"):
        parse_infer_request(
            body[:-1], None, max_json_bytes=len(body), max_elements=values.size, max_files=32
        )
    assert gc.isenabled()


def test_json_nested_past_the_parsers_limit_is_a_plain_400() -> None:
    """10,000 nested arrays: Python's parser gives up with RecursionError, whose message
    ("maximum recursion depth exceeded while decoding ...") was sent to the client."""
    body = b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(BadRequest) as info:
        parse_infer_request(body, None, max_json_bytes=len(body), max_elements=10, max_files=32)
    assert "deeper than the server parses" in str(info.value.detail)
    assert "recursion" not in str(info.value.detail)


@pytest.mark.parametrize(
    ("datatype", "leaf", "said"),
    [
        ("BYTES", 5, "holds a number where it needs base64 strings"),
        ("BYTES", None, "holds null where it needs base64 strings"),
        ("FP32", True, "holds a boolean where it needs numbers"),
        ("FP32", "1.5", "holds a string where it needs numbers"),
        ("FP32", {"v": 1}, "holds an object where it needs numbers"),
    ],
)
def test_a_wrong_json_element_type_is_named(datatype: str, leaf: object, said: str) -> None:
    """It said "holds a int where it needs values", whatever the input wanted."""
    body = json.dumps(
        {"inputs": [{"name": "image", "datatype": datatype, "shape": [1], "data": [leaf]}]}
    ).encode()
    with pytest.raises(BadRequest) as info:
        parse_infer_request(body, None, max_json_bytes=len(body), max_elements=10, max_files=32)
    assert said in info.value.detail


def test_an_outputs_binary_data_overrides_the_requests_binary_data_output(
    server: LiveServer,
) -> None:
    """The binary tensor data extension: `binary_data_output` applies "unless overridden by
    binary_data on a specific output". An output that asked for JSON (`binary_data: false`)
    came back as binary data whenever the request said `binary_data_output: true`."""
    b64 = base64.b64encode(photo(PHOTOS[0])).decode()
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}
    doc = {
        "inputs": [image],
        "parameters": {"binary_data_output": True},
        "outputs": [
            {"name": "probs", "parameters": {"classification": 2, "binary_data": False}},
            {"name": "embedding"},  # no binary_data of its own: the request's default
        ],
    }
    r = _post(server, json.dumps(doc).encode())
    assert r.status_code == 200, r.text[:300]
    size = int(r.headers["Inference-Header-Content-Length"])
    probs, embedding = json.loads(r.content[:size])["outputs"]
    assert probs["shape"] == [1, 2] and len(probs["data"]) == 2, probs
    assert "parameters" not in probs
    assert embedding["parameters"]["binary_data_size"] == len(r.content) - size
    # And the other way round: binary for one output of a JSON request.
    doc["parameters"] = {"binary_data_output": False}
    doc["outputs"] = [{"name": "probs", "parameters": {"binary_data": True}}, {"name": "embedding"}]
    r = _post(server, json.dumps(doc).encode())
    size = int(r.headers["Inference-Header-Content-Length"])
    probs, embedding = json.loads(r.content[:size])["outputs"]
    assert probs["parameters"]["binary_data_size"] == 4000 and "data" in embedding


@pytest.mark.parametrize(
    ("doc", "said"),
    [
        # bool("false") is True: binary data went to a client that asked for JSON.
        ({"parameters": {"binary_data_output": "false"}}, "binary_data_output must be true"),
        ({"parameters": {"binary_data_output": 0}}, "binary_data_output must be true"),
        ({"outputs": [{"name": "probs", "parameters": {"binary_data": "no"}}]}, "binary_data"),
        # The protocol's id is a string echoed back; a number was dropped without a word.
        ({"id": 7}, "id must be a string"),
        # round 24: 0, "", [] and false were read as no parameters; 5 and "x" were refused
        ({"parameters": 0}, "parameters must be a JSON object"),
        ({"parameters": []}, "parameters must be a JSON object"),
        ({"parameters": False}, "parameters must be a JSON object"),
        ({"outputs": [{"name": "probs", "parameters": ""}]}, "parameters must be a JSON object"),
    ],
)
def test_parameters_of_the_wrong_type_are_400(doc: dict[str, object], said: str) -> None:
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["AAAA"]}
    body = json.dumps({"inputs": [image], **doc}).encode()
    with pytest.raises(BadRequest) as info:
        parse_infer_request(body, None, max_json_bytes=len(body), max_elements=10, max_files=32)
    assert said in info.value.detail


def test_a_bytes_input_is_capped_at_the_batch_limit_before_its_elements_are_split() -> None:
    """Round 24: 4.8 million empty BYTES elements (29 MB, under the body limit) were all split
    out, 1.3 s on the event loop, before the batch limit refused them. Each BYTES element is
    an image file, so the count is checked against the batch limit first, as gRPC does."""
    count = 100_000
    binary = struct.pack("<I", 0) * count
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [count],
                    "parameters": {"binary_data_size": len(binary)},
                }
            ]
        }
    ).encode()
    with pytest.raises(PayloadTooLarge) as info:
        parse_infer_request(
            head + binary, len(head), max_json_bytes=len(head), max_elements=10**7, max_files=32
        )
    assert "100,000 BYTES elements" in info.value.detail and "limit is 32" in info.value.detail
    assert info.value.extra["limit_images"] == 32


def test_an_empty_outputs_list_asks_for_every_output(server: LiveServer) -> None:
    """Round 24: `"outputs": []` answered 200 with no outputs over HTTP while gRPC (whose
    message cannot tell an empty list from none) answered every output."""
    b64 = base64.b64encode(photo(PHOTOS[0])).decode()
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}
    r = _post(server, json.dumps({"inputs": [image], "outputs": []}).encode())
    assert r.status_code == 200, r.text[:300]
    every = _post(server, json.dumps({"inputs": [image]}).encode())
    names = sorted(o["name"] for o in r.json()["outputs"])
    assert names == sorted(o["name"] for o in every.json()["outputs"]) and len(names) >= 2


def test_a_repeated_header_length_is_refused(server: LiveServer) -> None:
    """Round 24: with two Inference-Header-Content-Length headers the first was used in
    silence; a length sent twice is refused, as a key sent twice is."""
    b64 = base64.b64encode(photo(PHOTOS[0])).decode()
    body = json.dumps(
        {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [b64]}]}
    ).encode()
    for headers in (
        [("Inference-Header-Content-Length", str(len(body)))] * 2,
        [("Inference-Header-Content-Length", f"{len(body)}, {len(body)}")],  # a proxy's join
    ):
        r = httpx.post(f"{server.base}/v2/models/imagenet/infer", content=body, headers=headers)
        assert r.status_code == 400 and "send it once" in r.json()["error"], r.text


def test_statistics_without_a_model_says_the_extension_is_not_served(server: LiveServer) -> None:
    """Round 24: tritonclient's get_inference_statistics() asks GET /v2/models/stats, which
    said only "No model named 'stats'"."""
    r = httpx.get(f"{server.base}/v2/models/stats")
    assert r.status_code == 404 and "statistics extension" in r.json()["error"], r.text


def test_a_trailing_slash_names_the_route_without_it(server: LiveServer) -> None:
    """Round 25: POST /v2/models/imagenet/infer/ said only "No route ... in the v2 protocol",
    where /v1 paths name the path without the slash."""
    r = httpx.post(f"{server.base}/v2/models/imagenet/infer/", content=b"{}")
    assert r.status_code == 404 and "did you mean /v2/models/imagenet/infer?" in r.json()["error"]
    r = httpx.get(f"{server.base}/v2/nothing/")
    assert r.status_code == 404 and "did you mean" not in r.json()["error"]


def test_a_bytes_input_is_one_image_per_element(server: LiveServer) -> None:
    """Shape [N] or [N, 1], as the answer and docs/operations.md say: [1, 1, 1] was taken."""
    x, _ = fm_test_split()
    image = base64.b64encode(png(x[0])).decode()
    for shape, status in (([1], 200), ([1, 1], 200), ([1, 1, 1], 400), ([1, 1, 1, 1], 400)):
        tensor = {"name": "image", "datatype": "BYTES", "shape": shape, "data": [image]}
        r = httpx.post(f"{server.base}/v2/models/products/infer", json={"inputs": [tensor]})
        assert r.status_code == status, (shape, r.text)
        if status == 400:
            assert "shape [N] or [N, 1]" in r.json()["error"]
