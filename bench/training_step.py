"""Training step time of a config under precision/XLA variants; prints a markdown table
(docs/reproducibility.md quotes it).

    .venv/bin/python bench/training_step.py [--config training/configs/products.yaml]
                                            [--steps 80] [--warmup 20]

Each variant runs in a fresh process (the precision policy is global): the config's model
and its real training pipeline (augmentation included), `--warmup` steps to build and trace,
then `--steps` timed steps. The last column scales the time to the config's full run
(steps per epoch x epochs); validation and export are not included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = [  # (precision, XLA)
    ("mixed_bfloat16", False),
    ("mixed_bfloat16", True),
    ("float32", False),
    ("float32", True),
]


def _one(config: Path, precision: str, xla: bool, steps: int, warmup: int) -> dict[str, float]:
    """Runs in the child process: time `steps` training steps."""
    import keras

    from training.config import ScratchConfig
    from training.datasets import make_datasets
    from training.recipes import load_config
    from training.train import build_model, compile_model

    cfg = load_config(config, ScratchConfig)
    keras.utils.set_random_seed(cfg.seed)
    data = make_datasets(cfg, None)
    keras.mixed_precision.set_global_policy(precision)
    model = build_model(cfg, data.arrays.num_classes)
    compile_model(model, cfg, data.steps_per_epoch)
    model.jit_compile = xla
    train = data.train.repeat()
    model.fit(train, steps_per_epoch=warmup, epochs=1, verbose=0)
    t0 = time.perf_counter()
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    per_step = (time.perf_counter() - t0) / steps
    return {
        "ms_per_step": per_step * 1e3,
        "full_run_min": per_step * data.steps_per_epoch * cfg.train.epochs / 60,
        "steps_per_epoch": data.steps_per_epoch,
        "epochs": cfg.train.epochs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "training/configs/products.yaml")
    ap.add_argument("--steps", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--child", nargs=2, metavar=("PRECISION", "XLA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        precision, xla = args.child[0], args.child[1] == "1"
        print(json.dumps(_one(args.config, precision, xla, args.steps, args.warmup)))
        return 0

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    print(f"config {args.config.name}: {args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"load average before: {os.getloadavg()[0]:.2f}; CPUs: {os.cpu_count()}\n")
    print("| precision | XLA | ms/step | full run (train steps only) |")
    print("|---|---|---|---|")
    for precision, xla in VARIANTS:
        cmd = [sys.executable, __file__, "--config", str(args.config), "--steps", str(args.steps)]
        cmd += ["--warmup", str(args.warmup), "--child", precision, "1" if xla else "0"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"| {precision} | {'on' if xla else 'off'} | failed: {out.stderr[-200:]!r} | |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"| {precision} | {'on' if xla else 'off'} | {r['ms_per_step']:.1f} "
            f"| {r['full_run_min']:.1f} min ({r['steps_per_epoch']} steps x {r['epochs']}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
