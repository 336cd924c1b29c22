"""The INT8 bundle's metadata and card, derived from a QuantReport (training/quantize.py):
every figure comes from the report, rendered by app/card.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import onnxruntime as ort  # its version is recorded in the provenance

from app.bundle import Bundle, BundleMetadata, Metrics
from app.card import CardData, Section, Table, pct, render_card

if TYPE_CHECKING:
    from training.quantize import QuantReport


def _agreement_metric(fp32: Bundle, r: QuantReport) -> Metrics:
    return Metrics(
        dataset=f"real photos under data/photos: {_images(r)}",
        split="fp32-agreement",
        n_samples=r.n_photos,
        accuracy=r.agreement_cross,
        notes=f"top-1 agreement with the fp32 bundle '{fp32.name}', each image scored by an INT8 "
        f"model calibrated on the other half of the source photos (2-fold); the shipped model "
        f"(calibrated on all {r.n_photos}) agrees on {r.agreement_shipped:.3f}",
        extra={
            "agreement_shipped_in_sample": r.agreement_shipped,
            # Undefined (NaN) when fp32 is confident on no photo: metadata holds no NaN.
            **({"agreement_fp32_confident": r.agreement_confident} if r.n_confident else {}),
            "n_fp32_confident": float(r.n_confident),
            "fp32_ms_batch1": round(r.fp32_ms[1], 2),
            "int8_ms_batch1": round(r.int8_ms[1], 2),
            "fp32_ms_batch8": round(r.fp32_ms[8], 2),
            "int8_ms_batch8": round(r.int8_ms[8], 2),
        },
    )


def _images(r: QuantReport) -> str:
    if r.views <= 1:
        return f"n={r.n_photos} photos"
    return (
        f"n={r.n_photos} images = {r.n_sources} photos x {r.views} views (itself, mirror, "
        "4 corner crops at 75%, centre crop at 60%)"
    )


def int8_metadata(
    fp32: Bundle, name: str, r: QuantReport, eval_metrics: Sequence[Metrics]
) -> BundleMetadata:
    meta = fp32.metadata
    prov = meta.provenance.model_copy(
        update={
            "notes": f"static INT8 (QDQ, per-channel QInt8 weights, QUInt8 activations, first conv "
            f"and classifier in float, 99.999th-percentile calibration on {_images(r)}) of "
            f"bundle '{fp32.name}' "
            f"(sha256 {meta.artifact.sha256[:12]}); onnxruntime {ort.__version__}"
        }
    )
    return meta.model_copy(
        update={
            "name": name,
            "description": f"{meta.description} Static INT8 version: "
            f"{r.speedup(1):.1f}x faster at batch 1, {r.fp32_bytes / r.int8_bytes:.1f}x smaller.",
            "metrics": [*eval_metrics, _agreement_metric(fp32, r)],
            "provenance": prov,
        }
    )


def int8_card(fp32: Bundle, meta: BundleMetadata, r: QuantReport) -> str:
    """The INT8 bundle's card, rendered by app/card.py from the report."""
    agreement = Section(
        f"Agreement with fp32 (n={r.n_photos} images from {r.n_sources} real photos)",
        paragraphs=(
            f"Static INT8 version of [`{fp32.name}`](../{fp32.name}/README.md): same input, "
            "outputs and labels. QDQ format, per-channel QInt8 weights, QUInt8 activations, "
            "the first convolution and the classifier kept in float, percentile calibration on "
            f"{_images(r)} (training/quantize.py).",
        ),
        bullets=(
            f"top-1 agreement {pct(r.agreement_cross, 1)} with each image scored by a model "
            "calibrated on the other half of the source photos (2-fold cross-calibration)",
            *(f"{m}: fp32 {a:.3f}, INT8 {b:.3f}" for m, a, b in r.kept),
            f"the shipped model, calibrated on all of them, agrees on "
            f"{pct(r.agreement_shipped, 1)} of those same photos (in-sample)",
            f"{pct(r.agreement_confident if r.n_confident else None, 1)} on the "
            f"n={r.n_confident} photos where fp32's top-1 probability is >= 0.5",
        ),
    )
    speed = Section(
        "Speed (onnxruntime CPU, median, this build machine)",
        tables=(
            Table(
                ("batch", "fp32 ms", "int8 ms", "speed-up"),
                tuple(
                    (str(b), f"{r.fp32_ms[b]:.1f}", f"{r.int8_ms[b]:.1f}", f"{r.speedup(b):.2f}x")
                    for b in sorted(r.fp32_ms)
                ),
            ),
        ),
        paragraphs=(f"Size: {r.fp32_bytes / 1e6:.1f} MB -> {r.int8_bytes / 1e6:.1f} MB.",),
    )
    return render_card(
        CardData(
            meta,
            labels=fp32.labels,
            sections=(agreement, speed),
            limitations=(
                "Probabilities differ from fp32 by a few percent; the ranking near ties can change.",
                "Speed-ups depend on the CPU's integer instructions (VNNI/AVX-512 help most); "
                "measure on yours with bench/imagenet.py.",
                "The embedding is quantized too: cosine similarities shift slightly against fp32 "
                "catalogs; do not mix embeddings of the two in one catalog.",
            ),
            reproduce=f"python -m training quantize --bundle {fp32.path} --name {meta.name}",
        )
    )
