"""The `emoji_top` recipe: ``python -m training train --config training/configs/santa-emoji-top.yaml``
(or bird-emoji-top.yaml) runs training.emoji.top_ship end to end (cut cache, the 7 leave-one-style-out fold models, the
model on every style, figures, ship rule, bundle) and reports the run's figures; with several
`seeds`, once per seed (the members), then one bundle serving the mean of their logits.

The run directory (``<runs dir>/<run_name>``) is reused, not stamped: each step skips what is
already there, so an interrupted run resumes; a directory holds one procedure (top_ship refuses
a fold of another epoch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.emoji.catalog import STYLES
from training.emoji.config import EmojiTopConfig
from training.recipes import RunOptions, RunReport


def member_dirs(run_dir: Path, seeds: list[int]) -> list[Path]:
    """One seed: the run directory itself (santa v2's layout); several: one per seed in it."""
    return [run_dir] if len(seeds) == 1 else [run_dir / f"seed-{s}" for s in seeds]


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
    from training.emoji.top_ship import SETTINGS, check_fixed, run_final, run_folds, with_seed

    # top_ship fixes these in code (settings chosen before any fold ran): refuse, never ignore.
    fixed = {"name": cfg.task, "seed": SETTINGS["seed"]}
    given = {"name": cfg.name, "seed": cfg.seed}
    for key, want in fixed.items():
        if given[key] != want:
            raise ValueError(f"emoji_top: {key} must be {want!r} (top_ship), not {given[key]!r}")
    if cfg.seeds[0] != cfg.seed or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"emoji_top: seeds must be distinct and start with seed {cfg.seed}")
    if len(cfg.seeds) > 1 and cfg.fixed_epoch is None:
        raise ValueError("emoji_top: members (several seeds) need a fixed_epoch")

    run_dir = options.runs_dir / cfg.run_name
    members = member_dirs(run_dir, cfg.seeds)
    for m in members:
        m.mkdir(parents=True, exist_ok=True)
        check_fixed(m, cfg.fixed_epoch)
    (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    fill_cache()
    d = load_data()
    for seed, m in zip(cfg.seeds, members, strict=True):
        run_folds(d, m, list(STYLES), cfg.fixed_epoch, with_seed(seed))
        run_final(d, m, with_seed(seed))
    del d
    if not options.export:
        return RunReport(recipe=cfg.recipe, name=cfg.name, run_dir=run_dir)
    from app.card import Reference
    from training.emoji.top_bundle import write

    bundle = write(
        members,
        options.out_dir or cfg.export.out_dir,
        card_notes=cfg.card_notes,
        version=cfg.export.version,
        summary_dir=run_dir,
        task=cfg.task,
        references=[Reference(**r.model_dump()) for r in cfg.references],
        config_path=options.config_path,
    )
    decision = json.loads((run_dir / "summary.json").read_text())["decision"]
    if bundle is None:
        return RunReport(cfg.recipe, cfg.name, run_dir, notes=[f"not written: {decision}"])
    written = load_bundle(bundle).metadata
    return RunReport(cfg.recipe, cfg.name, run_dir, [bundle], list(written.metrics), [decision])
