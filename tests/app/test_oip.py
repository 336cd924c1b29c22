"""app.oip: the Open Inference Protocol's JSON tensors, flattened row-major whatever their
nesting, with the same refusals on the fast path (regular nesting) as on the walk."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.errors import BadRequest
from app.oip import parse_infer_request

LIMITS = {"max_json_bytes": 1 << 24, "max_elements": 1 << 22, "max_files": 8}


def _reference(node: Any) -> list[Any]:
    """Row-major leaves, by plain recursion."""
    if isinstance(node, list):
        return [leaf for child in node for leaf in _reference(child)]
    return [node]


def _fp32(data: Any, shape: list[int]) -> Any:
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": shape, "data": data}]}
    return parse_infer_request(json.dumps(body).encode(), None, **LIMITS)


numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))
nested = st.recursive(numbers, lambda inner: st.lists(inner, max_size=4), max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(nested)
def test_any_nesting_flattens_row_major(data: Any) -> None:
    leaves = _reference(data)
    assume(leaves)  # a shape holds one element or more
    parsed = _fp32(data, [len(leaves)]).inputs[0].array
    assert parsed is not None
    np.testing.assert_array_equal(parsed, np.asarray(leaves, dtype=np.float32))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1.0, True], "a boolean"),  # a bool is not a number here, though Python says int
        ([[1.0], [True]], "a boolean"),
        ([[1.0], [None]], "null"),
        ([[1.0], ["2"]], "a string"),
        ([[1.0], [{"a": 1}]], "an object"),
        ([1.0, [2.0, "x"]], "a string"),
    ],
)
def test_a_wrong_leaf_is_named_at_any_depth(data: Any, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        _fp32(data, [2])


def test_lists_of_empty_lists_hold_no_elements() -> None:
    """Round 32: a refusal at the first depth with more non-empty lists than the shape has
    elements refused [[[]], [[]], [1.0]] for shape [1]: a list of empty lists holds none."""
    parsed = _fp32([[[]], [[]], [1.0]], [1]).inputs[0].array
    assert parsed is not None and parsed.tolist() == [1.0]


@pytest.mark.parametrize(
    "data", [[1.0, 2.0, 3.0], [[1.0, 2.0], [3.0]], [[[1.0]], [[2.0]], [[3.0]]]]
)
def test_more_elements_than_the_shape_says_is_refused(data: Any) -> None:
    with pytest.raises(BadRequest, match="more elements than its shape"):
        _fp32(data, [2])


def test_a_large_regular_tensor_is_read_exactly() -> None:
    """Nested as deep as its shape (what tritonclient sends) or flat: the same array."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 64, 64, 3), dtype=np.float32)
    nested_in = _fp32(x.tolist(), list(x.shape)).inputs[0].array
    flat_in = _fp32(x.ravel().tolist(), list(x.shape)).inputs[0].array
    assert nested_in is not None and flat_in is not None
    np.testing.assert_array_equal(nested_in, x)
    np.testing.assert_array_equal(flat_in, x)


def test_base64_bytes_elements_keep_their_order() -> None:
    body = {
        "inputs": [
            {
                "name": "image",
                "datatype": "BYTES",
                "shape": [3],
                "data": [["YQ=="], ["Yg==", "Yw=="]],
            }
        ]
    }
    parsed = parse_infer_request(json.dumps(body).encode(), None, **LIMITS)
    assert parsed.inputs[0].items == [b"a", b"b", b"c"]


def _infer(shape: str, size: str | None = None, k: str = "0") -> Any:
    """An infer request whose integers are written as given (json.dumps would write them its
    own way): BYTES data inline, or binary with `binary_data_size`."""
    data = '"data": ["YWI="]' if size is None else f'"parameters": {{"binary_data_size": {size}}}'
    header = (
        f'{{"inputs": [{{"name": "image", "datatype": "BYTES", "shape": [{shape}], {data}}}], '
        f'"outputs": [{{"name": "probs", "parameters": {{"classification": {k}}}}}]}}'
    ).encode()
    if size is None:
        return parse_infer_request(header, None, **LIMITS)
    return parse_infer_request(header + b"\x02\x00\x00\x00ab", len(header), **LIMITS)


REFUSED = [  # (shape, binary_data_size, classification, the field the 400 names)
    ("1.5", None, "0", "shape"),
    ("true", None, "0", "shape"),
    ("1e400", None, "0", "shape"),
    ("NaN", None, "0", "shape"),
    ("-Infinity", None, "0", "shape"),
    ("1", "6.5", "0", "binary_data_size"),
    ("1", "1e400", "0", "binary_data_size"),
    ("1", None, "2.5", "classification"),
    ("1", None, "Infinity", "classification"),
]


def test_a_whole_number_written_as_a_float_is_an_integer_and_a_fraction_is_not() -> None:
    """JSON Schema (and the document's InferenceRequest) count 2.0 an integer; Python's
    json.dumps writes a float shape so. `shape: [1.0]` was a 400 (round 42). A fraction, a
    boolean, NaN and numbers beyond float64 are still refused, naming the field."""
    plain = _infer("1", k="2")
    for req in (_infer("1.0", k="2.0"), _infer("1e0", k="2E0")):
        assert req.inputs[0].shape == plain.inputs[0].shape == (1,)
        assert type(req.inputs[0].shape[0]) is int
        assert req.outputs is not None and plain.outputs is not None
        assert req.outputs[0].classification == plain.outputs[0].classification == 2
    binary = _infer("1.0", size="6.0")
    assert binary.inputs[0].items == [b"ab"]
    for shape, size, k, named in REFUSED:
        with pytest.raises(BadRequest, match=named):
            _infer(shape, size, k)


def _files_body(**extra: Any) -> dict[str, Any]:
    image = {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["aGk="], **extra}
    return {"inputs": [image]}


def test_a_tensor_naming_a_shared_memory_region_is_refused_saying_so() -> None:
    """Round 43: an output asked for in a region was answered in the body (200), and an input
    in one was said to have "neither data nor parameters.binary_data_size"."""
    region = {"shared_memory_region": "r0", "shared_memory_byte_size": 4000}
    body = _files_body(parameters=region)
    del body["inputs"][0]["data"]
    with pytest.raises(BadRequest, match=r"inputs\[0\] names a shared memory region.*serves no"):
        parse_infer_request(json.dumps(body).encode(), None, **LIMITS)
    body = _files_body() | {"outputs": [{"name": "probs", "parameters": region}]}
    with pytest.raises(BadRequest, match=r"outputs\[0\] names a shared memory region"):
        parse_infer_request(json.dumps(body).encode(), None, **LIMITS)


def test_the_grpc_binding_refuses_shared_memory_alike() -> None:
    from tritonclient.grpc import service_pb2 as pb

    from app.grpc_codec import parse_request

    request = pb.ModelInferRequest(model_name="digits")
    tensor = request.inputs.add(name="image", datatype="BYTES", shape=[1])
    tensor.parameters["shared_memory_region"].string_param = "r0"
    with pytest.raises(BadRequest, match="input 'image' names a shared memory region"):
        parse_request(request, 1000, 8)
    del tensor.parameters["shared_memory_region"]
    tensor.contents.bytes_contents.append(b"hi")
    request.outputs.add(name="probs").parameters["shared_memory_byte_size"].int64_param = 40
    with pytest.raises(BadRequest, match="output 'probs' names a shared memory region"):
        parse_request(request, 1000, 8)
