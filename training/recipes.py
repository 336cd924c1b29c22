"""The recipe registry: recipe name -> config class + runner; configs are parsed here, once.

A recipe is a config class (TensorFlow-free, in training/config.py or its own module) and a
runner ``run(cfg, options) -> RunReport`` named as "module:function" and imported only when a
run starts (runners import TensorFlow). `load_config` validates a YAML against the union of
all registered config classes, told apart by their `recipe` field (absent = "scratch").
To add a recipe, see docs/architecture.md ("How to add a recipe").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from app.bundle import BundleError, Metrics
from training.config import PretrainedConfig, RecipeBase, ScratchConfig, TransferConfig

DEFAULT_RECIPE = "scratch"
C = TypeVar("C", bound=RecipeBase)


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file and each wrong key."""


class CommandError(RuntimeError):
    """A run that cannot go on for a reason the person running it should read (the command
    line prints it as one `error:` line): e.g. an export that is not faithful to Keras."""


@dataclass(frozen=True)
class RunOptions:
    """What the command line may override; None = the config's own value."""

    data_dir: Path | None = None
    out_dir: Path | None = None
    runs_dir: Path = Path("runs")
    epochs: int | None = None
    export: bool = True
    # The YAML that was run, as given: cards and provenance name it (never `<name>.yaml`).
    config_path: Path | None = None


@dataclass(frozen=True)
class RunReport:
    """What a run produced; every metric names its data set, split and sample size."""

    recipe: str
    name: str
    run_dir: Path | None
    bundles: list[Path] = field(default_factory=list)
    metrics: list[Metrics] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # extra lines for the command line

    def lines(self) -> list[str]:
        out = [f"{self.name} ({self.recipe} recipe)"]
        if self.run_dir is not None:
            out.append(f"run directory: {self.run_dir}")
        for m in self.metrics:
            figures = ", ".join(
                f"{k} {v:.4%}"
                for k, v in (("accuracy", m.accuracy), ("top-5", m.top5_accuracy), ("F1", m.f1))
                if v is not None
            )
            out.append(
                f"{m.dataset}, {m.split} split, n={m.n_samples:,} ({m.evaluated_with}): {figures}"
            )
        out += self.notes
        out += [f"bundle: {b}" for b in self.bundles]
        return out


Runner = Callable[[Any, RunOptions], RunReport]


@dataclass(frozen=True)
class Recipe:
    name: str
    config: type[RecipeBase]
    runner: str  # "module:function"
    summary: str
    # the command line's overrides its runner honours ("data_dir", "epochs", "no_export"); any
    # other is refused (round 28: --no-export and --epochs were ignored in silence, and a
    # transfer run with --no-export replaced models/santa)
    takes: frozenset[str] = frozenset()

    def load_runner(self) -> Runner:
        module, _, func = self.runner.partition(":")
        fn: Runner = getattr(importlib.import_module(module), func)
        return fn


_RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe; its config class must declare ``recipe: Literal["<name>"]``."""
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} registered twice")
    declared = recipe.config.model_fields["recipe"].default
    if declared != recipe.name:
        raise ValueError(
            f"{recipe.config.__name__}.recipe defaults to {declared!r}, not {recipe.name!r}"
        )
    _RECIPES[recipe.name] = recipe
    return recipe


def recipes() -> dict[str, Recipe]:
    return dict(_RECIPES)


def get(name: str) -> Recipe:
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; registered: {', '.join(sorted(_RECIPES))}")
    return _RECIPES[name]


def _recipe_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("recipe", DEFAULT_RECIPE))
    return str(getattr(value, "recipe", DEFAULT_RECIPE))


def config_adapter() -> TypeAdapter[Any]:
    """A validator for the union of every registered config (rebuilt: recipes can be added)."""
    members = tuple(Annotated[r.config, Tag(r.name)] for r in _RECIPES.values())
    union = Annotated[Union[members], Discriminator(_recipe_of)]  # noqa: UP007
    return TypeAdapter(union)


def parse_config(raw: Any, source: str = "config") -> RecipeBase:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a YAML mapping (key: value lines)")
    recipe = _recipe_of(raw)
    if recipe not in _RECIPES:
        raise ConfigError(
            f"{source}: unknown recipe {recipe!r}; registered: {', '.join(sorted(_RECIPES))}"
        )
    cfg: RecipeBase = config_adapter().validate_python(raw)
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping (PyYAML keeps the last
    one silently, so an edit further up a config would be ignored without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: Path, expect: type[C] | None = None) -> C:
    """Read and validate one YAML config (any recipe; `expect` insists on one config class).

    Every failure is a ConfigError whose message names the file and what to change."""
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the config is not UTF-8 text") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{at}: {problem}") from exc
    try:
        cfg = parse_config(raw, str(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_config_errors(exc)}") from exc
    if expect is not None and not isinstance(cfg, expect):
        raise ConfigError(f"{path}: a {cfg.recipe!r} config; this needs {expect.__name__}")
    return cfg  # type: ignore[return-value]


def _config_errors(exc: ValidationError) -> str:
    """pydantic's errors as `key.path: message` on one line (the union tag left out)."""
    parts = []
    for e in exc.errors(include_url=False):
        loc = [str(x) for x in e["loc"][1:]]  # [0] is the recipe tag of the union member
        value = e.get("input")
        shown = "" if e["type"] == "missing" or isinstance(value, dict) else f" (got {value!r:.60})"
        parts.append(f"{'.'.join(loc) or '(top level)'}: {e['msg']}{shown}")
    return "; ".join(parts)


FLAGS = {"data_dir": "--data-dir", "epochs": "--epochs", "no_export": "--no-export"}


def unused_options(recipe: Recipe, options: RunOptions) -> list[str]:
    """The command-line flags given that `recipe` would not honour."""
    given = {
        "data_dir": options.data_dir is not None,
        "epochs": options.epochs is not None,
        "no_export": not options.export,
    }
    return [FLAGS[k] for k, on in given.items() if on and k not in recipe.takes]


def run(cfg: RecipeBase, options: RunOptions | None = None) -> RunReport:
    """Run the config's recipe; a flag the recipe does not honour is refused before it starts."""
    recipe, options = get(cfg.recipe), options or RunOptions()
    unused = unused_options(recipe, options)
    if unused:
        raise ConfigError(
            f"recipe {recipe.name!r} does not take {' or '.join(unused)}: its settings are "
            "in the config file (copy it and edit the copy); --out-dir and --runs-dir choose "
            "where it writes"
        )
    check_outputs(cfg, options.out_dir, options.runs_dir, export=options.export)
    return recipe.load_runner()(cfg, options)


def check_outputs(cfg: RecipeBase, out_dir: Path | None, runs_dir: Path, export: bool) -> None:
    """Refuse, before any training, outputs that could not be written (round 44: a file at
    <out-dir>/<name>, an out-dir under a file or in /proc, an unwritable runs dir were
    tracebacks, some only after the whole fit)."""
    from app.bundle_write import check_target, unwritable

    if export:
        try:
            check_target((out_dir or cfg.export.out_dir) / cfg.name)
        except BundleError as exc:
            raise ConfigError(str(exc)) from None
    why = unwritable(runs_dir)
    if why:
        raise ConfigError(
            f"{runs_dir}: runs cannot be written there ({why}); choose another --runs-dir"
        )


register(
    Recipe(
        "scratch",
        ScratchConfig,
        "training.train:run",
        "a CNN trained from random weights (IDX, CIFAR-10 or an image folder)",
        frozenset({"data_dir", "epochs", "no_export"}),
    )
)
register(
    Recipe(
        "transfer",
        TransferConfig,
        "training.transfer:run",
        "frozen pretrained backbone + softmax head trained on an image folder",
        frozenset({"data_dir"}),
    )
)
register(
    Recipe(
        "pretrained",
        PretrainedConfig,
        "training.pretrained:run",
        "the pretrained ImageNet network with a fixed head (imagenet, bird); no training",
        frozenset({"data_dir"}),  # the photos it is measured on: DIR/photos
    )
)
# training/emoji/config.py is TensorFlow-free, like the configs above.
from training.emoji.config import EmojiHeadConfig  # noqa: E402

register(
    Recipe(
        "emoji_head",
        EmojiHeadConfig,
        "training.emoji.build:run",
        "binary head on the imagenet embedding, leave-one-style-out on emoji art (santa, bird)",
    )
)
from training.emoji.config import EmojiTopConfig  # noqa: E402

register(
    Recipe(
        "emoji_top",
        EmojiTopConfig,
        "training.emoji.top_recipe:run",
        "imagenet graph's last block + head conv fine-tuned with a Santa head, leave-one-style-out on emoji art",
        frozenset({"no_export"}),
    )
)
