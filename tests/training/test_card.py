"""training/card.py: shared card sections and the scratch recipe's card, from data only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.bundle import load_bundle
from app.card import render_card
from app.metrics import evaluate_probs
from training.card import confusion_table, per_class_table, scratch_card_data
from training.config import ScratchConfig
from training.recipes import load_config

ROOT = Path(__file__).resolve().parents[2]


def _report(n: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    probs = rng.random((n, 10)).astype(np.float32)
    probs[np.arange(n), y] += 0.8  # mostly right
    return evaluate_probs(y, probs, tuple(str(i) for i in range(10)))


def test_tables_carry_the_reports_counts() -> None:
    r = _report(137, 0)
    t = per_class_table(r)
    assert t.caption is not None and "n=137" in t.caption
    assert sum(int(row[-1]) for row in t.rows) == 137
    c = confusion_table(r, [f"class-with-a-long-name-{i}" for i in range(10)])
    assert len(c.rows) == 10 and all(len(h) <= 11 for h in c.header[1:])
    assert sum(int(v) for row in c.rows for v in row[1:]) == 137


def test_scratch_card_is_rendered_from_run_data() -> None:
    cfg = load_config(ROOT / "training" / "configs" / "digits.yaml", ScratchConfig)
    bundle = load_bundle(ROOT / "models" / "digits", verify_hash=False)
    serving, keras_report = _report(321, 1), _report(321, 2)
    card = render_card(
        scratch_card_data(
            cfg,
            bundle,
            sizes={"train": 1000, "val": 100, "test": 321},
            dataset="MNIST",
            test_split="test",
            serving=serving,
            keras_report=keras_report,
            agreement=0.75,
            training={"train_seconds": 90.0, "epochs_run": 3, "best_epoch": 2, "hardware": "X"},
            params=123_457,
        )
    )
    assert "n = 321" in card and "Parameters: 123,457" in card
    assert (
        f"{100 * serving.accuracy:.2f}%" in card and f"{100 * keras_report.accuracy:.2f}%" in card
    )
    assert (
        "75.00% of 321 images" in card and "1.5 min (3 epochs, best epoch 2 restored) on X" in card
    )
    assert "Training: 1,000 images" in card and cfg.limitations[0] in card


def test_scratch_card_names_the_config_file_that_was_run() -> None:
    """cifar10-bird.yaml is named `cifar-bird`: the card said `--config
    training/configs/cifar-bird.yaml`, a file that does not exist."""
    path = Path("training/configs/cifar10-bird.yaml")
    cfg = load_config(ROOT / path, ScratchConfig)
    assert cfg.name == "cifar-bird"
    bundle = load_bundle(ROOT / "models" / "digits", verify_hash=False)
    r = _report(50, 3)
    kw = {
        "sizes": {"train": 10, "val": 10, "test": 50},
        "dataset": "CIFAR-10 (bird vs rest)",
        "test_split": "test",
        "serving": r,
        "keras_report": r,
        "agreement": 1.0,
        "training": {},
        "params": 1,
    }
    card = render_card(scratch_card_data(cfg, bundle, config_path=path, **kw))  # type: ignore[arg-type]
    assert "`python -m training train --config training/configs/cifar10-bird.yaml`" in card
    assert (ROOT / path).is_file()
    # An absolute path inside the working folder is shown relative to it; none known: a placeholder.
    card = render_card(scratch_card_data(cfg, bundle, config_path=Path.cwd() / path, **kw))  # type: ignore[arg-type]
    assert "--config training/configs/cifar10-bird.yaml`" in card
    card = render_card(scratch_card_data(cfg, bundle, **kw))  # type: ignore[arg-type]
    assert "--config <this config>`" in card and "cifar-bird.yaml" not in card
