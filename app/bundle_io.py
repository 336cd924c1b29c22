"""Checking an ONNX graph's inputs and outputs against a bundle's metadata (part of the bundle
contract; app.bundle re-exports everything here, import it from there)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.bundle import BackboneRef, BundleMetadata


class BundleError(Exception):
    """A bundle that cannot be served; the message says what disagrees."""


@dataclass(frozen=True)
class TensorInfo:
    """Name and shape of a graph tensor as a runtime reports it (dims may be None/str for dynamic)."""

    name: str
    shape: tuple[int | str | None, ...]


def check_io(
    meta: BundleMetadata, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]
) -> None:
    """Check a graph's inputs/outputs against the metadata; raise BundleError on any mismatch."""
    spec = meta.input
    if meta.backbone is not None:
        _check_head_io(meta, meta.backbone, inputs, outputs)
        return
    if len(inputs) != 1:
        names = [t.name for t in inputs]
        raise BundleError(
            f"{meta.name}: graph has {len(inputs)} inputs {names}, expected exactly 1"
        )
    inp = inputs[0]
    if inp.name != spec.name:
        raise BundleError(f"{meta.name}: graph input is {inp.name!r}, metadata says {spec.name!r}")
    expected_in = (None, spec.height, spec.width, spec.channels)
    _check_shape(meta.name, inp, expected_in)
    _check_batch_dynamic(meta.name, inp)
    by_name = {t.name: t for t in outputs}
    probs = by_name.get(meta.outputs.probs.name)
    if probs is None:
        raise BundleError(f"{meta.name}: graph has no output {meta.outputs.probs.name!r}")
    _check_shape(meta.name, probs, (None, meta.num_classes))
    emb_spec = meta.outputs.embedding
    if emb_spec is not None:
        emb = by_name.get(emb_spec.name)
        if emb is None:
            raise BundleError(f"{meta.name}: graph has no output {emb_spec.name!r}")
        _check_shape(meta.name, emb, (None, emb_spec.dim))


def _check_head_io(
    meta: BundleMetadata,
    backbone: BackboneRef,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
) -> None:
    emb = meta.outputs.embedding
    if emb is None or emb.dim != backbone.dim:
        raise BundleError(f"{meta.name}: a taught bundle serves its backbone's embedding")
    if len(inputs) != 1 or inputs[0].name != emb.name:
        names = [t.name for t in inputs]
        raise BundleError(f"{meta.name}: head graph inputs are {names}, expected [{emb.name!r}]")
    _check_shape(meta.name, inputs[0], (None, backbone.dim))
    probs = next((t for t in outputs if t.name == meta.outputs.probs.name), None)
    if probs is None:
        raise BundleError(f"{meta.name}: graph has no output {meta.outputs.probs.name!r}")
    _check_shape(meta.name, probs, (None, meta.num_classes))


def _check_batch_dynamic(bundle: str, tensor: TensorInfo) -> None:
    # Requests are batched (several files, the scheduler): a graph fixed at batch 1 fails on
    # the second image, so it is refused at load rather than on some later request.
    if tensor.shape and isinstance(tensor.shape[0], int):
        raise BundleError(
            f"{bundle}: tensor {tensor.name!r} has a fixed batch size {tensor.shape[0]}; "
            "export it with a dynamic first dimension (None)"
        )


def _check_shape(bundle: str, tensor: TensorInfo, expected: tuple[int | None, ...]) -> None:
    shape = tensor.shape
    ok = len(shape) == len(expected) and all(
        want is None or got == want for got, want in zip(shape, expected, strict=True)
    )
    if not ok:
        shown = tuple("N" if w is None else w for w in expected)
        raise BundleError(f"{bundle}: tensor {tensor.name!r} has shape {shape}, expected {shown}")
