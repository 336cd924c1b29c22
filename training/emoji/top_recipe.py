"""The `emoji_top` recipe: ``python -m training train --config training/configs/santa-emoji-top.yaml``
runs training.emoji.top_ship end to end (cut cache, the 7 leave-one-style-out fold models, the
model on every style, figures, ship rule, bundle) and reports the run's figures.

The run directory (``<runs dir>/<run_name>``) is reused, not stamped: each step skips what is
already there, so an interrupted run resumes; a directory holds one procedure (top_ship refuses
a fold of another epoch).
"""

from __future__ import annotations

import json
import os

from training.emoji.catalog import STYLES
from training.emoji.config import EmojiTopConfig
from training.recipes import RunOptions, RunReport


def run(cfg: EmojiTopConfig, options: RunOptions) -> RunReport:
    from app.bundle import load_bundle
    from training.emoji.embed import BACKBONE

    if options.epochs is not None:
        raise ValueError("emoji_top: the epochs are the recipe's (fixed_epoch), not --epochs")
    if options.data_dir is not None:
        raise ValueError("emoji_top: the emoji art comes from scripts/fetch-data, not --data-dir")
    if cfg.backbone_bundle.resolve() != BACKBONE.resolve():
        raise ValueError(f"emoji_top: only {BACKBONE} can be cut and fine-tuned")
    if load_bundle(cfg.backbone_bundle).metadata.input != cfg.input:
        raise ValueError(f"{cfg.name}: `input` must equal {cfg.backbone_bundle}'s input spec")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from training.emoji.top_cache import fill_cache
    from training.emoji.top_finetune import load_data
    from training.emoji.top_ship import SETTINGS, check_fixed, run_final, run_folds

    # top_ship fixes these in code (settings chosen before any fold ran): refuse, never ignore.
    fixed = {"name": "santa", "seed": SETTINGS["seed"], "export.version": "2"}
    given = {"name": cfg.name, "seed": cfg.seed, "export.version": cfg.export.version}
    for key, want in fixed.items():
        if given[key] != want:
            raise ValueError(f"emoji_top: {key} must be {want!r} (top_ship), not {given[key]!r}")

    run_dir = options.runs_dir / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    check_fixed(run_dir, cfg.fixed_epoch)
    fill_cache()
    d = load_data()
    run_folds(d, run_dir, list(STYLES), cfg.fixed_epoch)
    run_final(d, run_dir)
    del d
    if not options.export:
        return RunReport(recipe=cfg.recipe, name=cfg.name, run_dir=run_dir)
    from training.emoji.top_bundle import write

    bundle = write(run_dir, options.out_dir or cfg.export.out_dir, card_notes=cfg.card_notes)
    decision = json.loads((run_dir / "summary.json").read_text())["decision"]
    if bundle is None:
        return RunReport(cfg.recipe, cfg.name, run_dir, notes=[f"not written: {decision}"])
    written = load_bundle(bundle).metadata
    return RunReport(cfg.recipe, cfg.name, run_dir, [bundle], list(written.metrics), [decision])
