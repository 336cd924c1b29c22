"""The recipe registry: every shipped config parses once into its recipe's config class."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import ValidationError

from training import recipes
from training.config import PretrainedConfig, RecipeBase, ScratchConfig, TransferConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "training" / "configs"
EXPECTED = {
    "santa": TransferConfig,
    "imagenet": PretrainedConfig,
    "bird": PretrainedConfig,
    "products": ScratchConfig,
    "digits": ScratchConfig,
    "folder-example": ScratchConfig,
}


def test_every_shipped_config_parses_into_its_recipe() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = recipes.load_config(path)
        assert cfg.recipe in recipes.recipes(), path
        if path.stem in EXPECTED:
            assert type(cfg) is EXPECTED[path.stem], path


def test_absent_recipe_means_scratch_and_unknown_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    assert "recipe" not in raw
    assert isinstance(recipes.parse_config(raw), ScratchConfig)
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        recipes.parse_config({**raw, "recipe": "nope"})
    with pytest.raises(ValidationError, match="resize_candidates"):  # a transfer key in scratch
        recipes.parse_config({**raw, "resize_candidates": ["stretch"]})
    with pytest.raises(ValueError, match="needs TransferConfig"):
        recipes.load_config(CONFIGS / "digits.yaml", TransferConfig)
    with pytest.raises(ValueError, match="mapping"):
        recipes.parse_config(["not", "a", "mapping"])


class _EchoConfig(RecipeBase):
    recipe: Literal["echo"] = "echo"
    words: list[str]


def echo_run(cfg: _EchoConfig, options: recipes.RunOptions) -> recipes.RunReport:
    return recipes.RunReport(cfg.recipe, cfg.name, None, notes=list(cfg.words))


def _echo_config(word: str) -> RecipeBase:
    return recipes.parse_config(
        {
            "recipe": "echo",
            "name": "e",
            "seed": 1,
            "words": [word],
            "input": {"height": 8, "width": 8, "channels": 1, "color": "gray"},
        }
    )


def test_a_new_recipe_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes, "_RECIPES", dict(recipes._RECIPES))
    recipes.register(recipes.Recipe("echo", _EchoConfig, f"{__name__}:echo_run", "test"))
    cfg = _echo_config("hello")
    assert isinstance(cfg, _EchoConfig)
    assert recipes.run(cfg).lines() == ["e (echo recipe)", "hello"]
    with pytest.raises(ValueError, match="twice"):
        recipes.register(recipes.Recipe("echo", _EchoConfig, "x:y", "again"))
    with pytest.raises(ValueError, match="defaults to 'echo'"):
        recipes.register(recipes.Recipe("other", _EchoConfig, "x:y", "mismatch"))


def test_a_flag_a_recipe_does_not_honour_is_refused_before_it_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Round 28: --no-export and --epochs were ignored in silence by every recipe but scratch
    (a transfer run with --no-export replaced models/santa); emoji_top raised a traceback."""
    monkeypatch.setattr(recipes, "_RECIPES", dict(recipes._RECIPES))
    recipes.register(
        recipes.Recipe("echo", _EchoConfig, f"{__name__}:echo_run", "t", frozenset({"epochs"}))
    )
    cfg = _echo_config("hi")
    assert recipes.run(cfg, recipes.RunOptions(epochs=2)).lines() == ["e (echo recipe)", "hi"]
    for options, flag in (
        (recipes.RunOptions(export=False), "--no-export"),
        (recipes.RunOptions(data_dir=Path("x")), "--data-dir"),
    ):
        with pytest.raises(recipes.ConfigError, match=f"does not take {flag}"):
            recipes.run(cfg, options)
    shipped = {name: r.takes for name, r in recipes.recipes().items() if name != "echo"}
    assert shipped == {
        "scratch": {"data_dir", "epochs", "no_export"},
        "transfer": {"data_dir"},
        "pretrained": {"data_dir"},
        "emoji_head": set(),
        "emoji_top": {"no_export"},
    }


def test_cli_refuses_an_unused_flag_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "training", "train", "--config", str(CONFIGS / "santa.yaml"),
         "--no-export", "--epochs", "1", "--runs-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [x for x in out.stderr.splitlines() if x.startswith("error:")]
    assert lines == [
        "error: recipe 'transfer' does not take --epochs or --no-export: its settings are in "
        "the config file (copy it and edit the copy); --out-dir and --runs-dir choose where "
        "it writes"
    ]
    assert "Traceback" not in out.stderr and not list(tmp_path.iterdir())


def test_cli_lists_recipes_and_parsing_needs_no_tensorflow() -> None:
    code = (
        "import sys; from training.recipes import load_config;"
        "[load_config(p) for p in __import__('pathlib').Path('training/configs').glob('*.yaml')];"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')];"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run(
        [sys.executable, "-m", "training", "recipes"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and {"scratch", "transfer", "pretrained"} <= {
        line.split()[0] for line in out.stdout.splitlines()
    }


SHARED_CORE = {"app.bundle", "app.bundle_write", "app.metrics", "app.card"}
# `app` itself: its __init__ sets onnxruntime's telemetry opt-out (training/__init__.py).
ALLOWED_FROM_APP = SHARED_CORE | {"app", "app.imaging", "app.runtime", "app.errors"}


def test_training_imports_only_the_shared_core() -> None:
    """docs/architecture.md: what training/ may import from app/, and that the shared core
    loads neither TensorFlow nor FastAPI."""
    import ast

    used: dict[str, set[str]] = {}
    for path in (ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name == "app" or name.startswith("app."):
                    used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    outside = {m: sorted(p) for m, p in used.items() if m not in ALLOWED_FROM_APP}
    assert not outside, f"training/ imports app modules outside the shared core: {outside}"
    code = (
        f"import sys; import {', '.join(sorted(SHARED_CORE))};"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'tensorflow', 'keras', 'fastapi', 'starlette'});"
        "sys.exit(f'imported {bad}' if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
