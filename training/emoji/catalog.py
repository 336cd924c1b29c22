"""Emoji art as a labelled drawing data set: one record per picture, in seven styles.

Labels come from emoji-datasource's ``emoji.json`` (short name, subcategory, skin tones). OpenMoji
pictures are matched by code point; Fluent pictures (named by their CLDR name) are matched
through OpenMoji's CLDR annotations. Only standard Unicode emoji present in ``emoji.json`` are
kept, so every style draws the same kind of thing. Files come from ``scripts/fetch-data``.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Style name -> (package folder, licence). Order is the order of the leave-one-style-out folds.
STYLES: dict[str, tuple[str, str]] = {
    "noto": (
        "emoji-datasource-google",
        "Apache-2.0 (Google Noto Emoji, npm emoji-datasource-google 16.0.0)",
    ),
    "twemoji": (
        "emoji-datasource-twitter",
        "CC-BY 4.0 (Twitter Twemoji, npm emoji-datasource-twitter 16.0.0)",
    ),
    "openmoji-color": ("openmoji", "CC BY-SA 4.0 (OpenMoji 17.0.0, npm openmoji)"),
    "openmoji-black": ("openmoji", "CC BY-SA 4.0 (OpenMoji 17.0.0 line art, npm openmoji)"),
    "fluent-flat": ("fluentui-emoji", "MIT (Microsoft Fluent Emoji, npm fluentui-emoji 1.3.0)"),
    "fluent-modern": ("fluentui-emoji", "MIT (Microsoft Fluent Emoji, npm fluentui-emoji 1.3.0)"),
    "fluent-high-contrast": (
        "fluentui-emoji",
        "MIT (Microsoft Fluent Emoji, npm fluentui-emoji 1.3.0)",
    ),
}
LABELS_SOURCE = "npm emoji-datasource 16.0.0 emoji.json (MIT)"

SANTA = frozenset({"santa", "mrs_claus", "mx_claus"})
# Birds: emoji.json subcategory animal-bird. `feather` and `wing` are parts of a bird, not birds:
# they are neither positives nor negatives (left out of training and of every bird metric).
BIRD_SUBCATEGORY = "animal-bird"
BIRD_AMBIGUOUS = frozenset({"feather", "wing"})
# Santa's hard negatives: other people and fantasy figures (every skin tone), and the Christmas
# things drawn next to Santa.
SANTA_HARD_SUBCATEGORIES = frozenset(
    {"person", "person-fantasy", "person-role", "person-gesture", "person-activity"}
)
SANTA_HARD_NAMES = frozenset({"christmas_tree", "gift", "snowman", "snowman_without_snow", "bell"})
# Emoji clothing -> Fashion-MNIST's ten classes. Only unambiguous drawings are mapped (a blouse,
# a dress shoe, a high heel, socks or a kimono have no clear Fashion-MNIST class).
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CLOTHING_TO_FASHION = {
    "shirt": "T-shirt/top",
    "jeans": "Trouser",
    "dress": "Dress",
    "coat": "Coat",
    "lab_coat": "Coat",
    "sandal": "Sandal",
    "thong_sandal": "Sandal",
    "necktie": "Shirt",
    "athletic_shoe": "Sneaker",
    "handbag": "Bag",
    "purse": "Bag",
    "pouch": "Bag",
    "boot": "Ankle boot",
    "hiking_boot": "Ankle boot",
}

_TONES = {"1F3FB": 1, "1F3FC": 2, "1F3FD": 3, "1F3FE": 4, "1F3FF": 5}
_FLUENT_TONES = {
    "default": 0,
    "light": 1,
    "medium-light": 2,
    "medium": 3,
    "medium-dark": 4,
    "dark": 5,
}
# Fluent file names that differ from the CLDR name (checked by hand on fluentui-emoji 1.3.0).
_FLUENT_ALIASES = {
    "man-merpeople": "merman",
    "woman-merpeople": "mermaid",
    "person-merpeople": "merperson",
    "phoenix-bird": "phoenix",
    "man-with-bunny-ears": "men-with-bunny-ears",
    "woman-with-bunny-ears": "women-with-bunny-ears",
    "person-with-bunny-ears": "people-with-bunny-ears",
    "person-wrestling": "people-wrestling",
    "man-blonde-hair": "man-blond-hair",
    "woman-blonde-hair": "woman-blond-hair",
    "person-blonde-hair": "person-blond-hair",
    "man-deaf": "deaf-man",
    "woman-deaf": "deaf-woman",
    "person-deaf": "deaf-person",
    "knocked-out-face": "face-with-crossed-out-eyes",
    "pouting-face": "enraged-face",
    "keycap-asterisk": "keycap",
    "keycap-hashtag": "keycap",
    "horizontal-traffic": "horizontal-traffic-light",
    "vertical-traffic": "vertical-traffic-light",
    "red-triangle": "red-triangle-pointed-up",
}
_FLUENT_TONE_RE = re.compile(r"-(default|light|medium-light|medium|medium-dark|dark)$")


@dataclass(frozen=True)
class Picture:
    style: str
    path: Path
    key: str  # code points without skin-tone modifiers or FE0F, e.g. "1F385"
    short_name: str
    subcategory: str
    tone: int  # 0 = default (no modifier), 1..5 = Fitzpatrick light..dark

    @property
    def is_santa(self) -> bool:
        return self.short_name in SANTA

    @property
    def is_santa_hard_negative(self) -> bool:
        """Other people and fantasy figures, Christmas trees, gifts, snowmen, bells."""
        return not self.is_santa and (
            self.subcategory in SANTA_HARD_SUBCATEGORIES or self.short_name in SANTA_HARD_NAMES
        )

    @property
    def is_bird_hard_negative(self) -> bool:
        """Other animals (every `animal-*` subcategory but the birds)."""
        return self.bird_label == 0 and self.subcategory.startswith("animal-")

    @property
    def bird_label(self) -> int | None:
        """1 bird, 0 not a bird, None for the ambiguous parts (feather, wing)."""
        if self.short_name in BIRD_AMBIGUOUS:
            return None
        return int(self.subcategory == BIRD_SUBCATEGORY)

    @property
    def fashion_class(self) -> str | None:
        return CLOTHING_TO_FASHION.get(self.short_name)


def data_root() -> Path:
    """The training data root: $IMGCLASS_TRAINING_DATA_DIR, else $IMGCLASS_DATA, else ./data."""
    env = os.environ.get("IMGCLASS_TRAINING_DATA_DIR") or os.environ.get("IMGCLASS_DATA")
    return Path(env) if env else PROJECT_ROOT / "data"


def emoji_root(root: Path | None = None) -> Path:
    base = (root or data_root()) / "emoji"
    if not (base / "emoji-datasource" / "emoji.json").is_file():
        raise FileNotFoundError(f"emoji art not found in {base}; run scripts/fetch-data")
    return base


def split_key(codepoints: str) -> tuple[str, int]:
    """'1F385-1F3FB' -> ('1F385', 1); FE0F (presentation selector) is dropped."""
    parts = [p for p in codepoints.upper().split("-") if p and p != "FE0F"]
    tones = [_TONES[p] for p in parts if p in _TONES]
    base = "-".join(p for p in parts if p not in _TONES)
    return base, (tones[0] if tones else 0)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("\u2019", "").replace("'", "")).strip(
        "-"
    )


def _emoji_json(base: Path) -> list[dict[str, object]]:
    data = json.loads((base / "emoji-datasource" / "emoji.json").read_text(encoding="utf-8"))
    return list(data)


def _label_index(entries: Iterable[dict[str, object]]) -> dict[str, tuple[str, str]]:
    return {
        split_key(str(e["unified"]))[0]: (str(e["short_name"]), str(e["subcategory"]))
        for e in entries
    }


def _datasource_pictures(base: Path, style: str, entries: list[dict[str, object]]) -> list[Picture]:
    vendor = "google" if style == "noto" else "twitter"
    folder = base / STYLES[style][0] / "img" / vendor / "64"
    out = []
    for e in entries:
        variants: list[dict[str, object]] = [e]
        skin = e.get("skin_variations")
        if isinstance(skin, dict):
            variants += list(skin.values())
        key = split_key(str(e["unified"]))[0]
        for v in variants:
            path = folder / str(v["image"])
            if v.get(f"has_img_{vendor}") and path.is_file():
                tone = split_key(str(v["unified"]))[1]
                out.append(
                    Picture(style, path, key, str(e["short_name"]), str(e["subcategory"]), tone)
                )
    return out


def _openmoji_rows(base: Path) -> list[dict[str, str]]:
    with (base / "openmoji" / "data" / "openmoji.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _openmoji_pictures(
    base: Path, style: str, rows: list[dict[str, str]], labels: dict[str, tuple[str, str]]
) -> list[Picture]:
    folder = base / "openmoji" / ("color" if style == "openmoji-color" else "black") / "svg"
    out = []
    for row in rows:
        key, tone = split_key(row["hexcode"])
        path = folder / f"{row['hexcode']}.svg"
        if key in labels and path.is_file():
            out.append(Picture(style, path, key, *labels[key], tone))
    return out


def _fluent_pictures(
    base: Path, style: str, rows: list[dict[str, str]], labels: dict[str, tuple[str, str]]
) -> list[Picture]:
    folder = base / "fluentui-emoji" / "icons" / style.removeprefix("fluent-")
    by_slug: dict[str, str] = {}
    for row in rows:
        key, tone = split_key(row["hexcode"])
        if tone == 0 and key in labels:
            by_slug.setdefault(_slug(row["annotation"]), key)
    for key, (short, _) in labels.items():
        by_slug.setdefault(_slug(short), key)
    squashed = {s.replace("-", ""): k for s, k in by_slug.items()}
    out = []
    for path in sorted(folder.glob("*.svg")):
        stem = path.stem
        m = _FLUENT_TONE_RE.search(stem)
        tone = _FLUENT_TONES[m.group(1)] if m else 0
        name = stem[: m.start()] if m else stem
        name = _FLUENT_ALIASES.get(name, name)
        key = (
            by_slug.get(name)
            or squashed.get(name.replace("-", ""))
            or by_slug.get(name.removeprefix("person-"))
        )
        if key is not None:
            out.append(Picture(style, path, key, *labels[key], tone))
    return out


def load_catalog(root: Path | None = None, styles: Iterable[str] | None = None) -> list[Picture]:
    """Every labelled picture of the requested styles (default: all seven)."""
    base = emoji_root(root)
    wanted = list(styles) if styles is not None else list(STYLES)
    unknown = [s for s in wanted if s not in STYLES]
    if unknown:
        raise ValueError(f"unknown emoji styles {unknown}; known: {list(STYLES)}")
    entries = _emoji_json(base)
    labels = _label_index(entries)
    rows = _openmoji_rows(base) if any(not s.startswith(("noto", "tw")) for s in wanted) else []
    out: list[Picture] = []
    for style in wanted:
        if style in ("noto", "twemoji"):
            out += _datasource_pictures(base, style, entries)
        elif style.startswith("openmoji"):
            out += _openmoji_pictures(base, style, rows, labels)
        else:
            out += _fluent_pictures(base, style, rows, labels)
    # The bare skin-tone swatches (U+1F3FB..1F3FF) are modifiers, not pictures of anything.
    return [p for p in out if p.key]
