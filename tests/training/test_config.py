"""Configs: every shipped config validates and round-trips YAML -> config -> YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from training.config import ScratchConfig
from training.recipes import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str, tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / f"{name}.yaml")
    text = cfg.to_yaml()
    copy = tmp_path / "resolved.yaml"
    copy.write_text(text)
    again = load_config(copy)
    assert again == cfg
    assert again.to_yaml() == text
    # The resolved copy spells out every default, so a run records all of its settings.
    resolved = yaml.safe_load(text)
    assert {"recipe", "seed", "input", "export", "limitations", "references"} <= set(resolved)
    if isinstance(cfg, ScratchConfig):
        assert {"data", "model", "augment", "train"} <= set(resolved)


def test_digits_never_flip_and_products_do() -> None:
    assert not load_config(CONFIGS / "digits.yaml", ScratchConfig).augment.flip_horizontal
    assert load_config(CONFIGS / "products.yaml", ScratchConfig).augment.flip_horizontal


def test_config_rejects_typos_and_missing_seed() -> None:
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    raw["train"]["epoch"] = 3
    with pytest.raises(ValidationError, match="epoch"):
        ScratchConfig.model_validate(raw)
    raw = yaml.safe_load((CONFIGS / "digits.yaml").read_text())
    del raw["seed"]
    with pytest.raises(ValidationError, match="seed"):
        ScratchConfig.model_validate(raw)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("name: digits", "name: ../escape"), "name: Value error, name must be lowercase"),
        (("name: digits", "name: Digits"), "name: Value error, name must be lowercase"),
        (("name: digits", "name: digits\nexport: {version: 1 beta}"), "export.version:"),
    ],
    ids=["path", "uppercase", "version-with-a-space"],
)
def test_name_and_version_follow_the_bundle_contract(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    """They were accepted, so a run trained to the end and then died with a pydantic traceback
    when the bundle was written; `name: ../escape` also put the run folder outside runs/."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text((CONFIGS / "digits.yaml").read_text().replace(*edit))
    with pytest.raises(ConfigError, match="bundle contract") as err:
        load_config(cfg)
    assert message in str(err.value)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys: an edit above it was silently ignored."""
    text = (CONFIGS / "digits.yaml").read_text()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text.replace("seed: 20240612", "seed: 20240612\nmodel: {architecture: mlp}"))
    with pytest.raises(ConfigError, match=r"line \d+, column 1: key 'model' is given twice"):
        load_config(cfg)
    # the same key in two different sections is fine (epochs under train and nowhere else)
    assert load_config(CONFIGS / "digits.yaml").name == "digits"


def test_a_relative_transfer_cache_dir_is_under_the_runs_dir(tmp_path: Path) -> None:
    """cache_dir was taken from the working folder: `--runs-dir /tmp/runs` still wrote the
    embedding cache into ./runs/cache. The shipped example keeps runs/cache/embeddings."""
    from training.config import TransferConfig

    cfg = load_config(Path("training/configs/santa.yaml"), TransferConfig)
    assert cfg.cache_path(Path("runs")) == Path("runs/cache/embeddings")
    assert cfg.cache_path(tmp_path / "runs") == tmp_path / "runs" / "cache" / "embeddings"
    shared = cfg.model_copy(update={"cache_dir": tmp_path / "shared"})
    assert shared.cache_path(tmp_path / "runs") == tmp_path / "shared"
