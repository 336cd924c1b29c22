"""Reading a bundle's files without trusting them (part of the bundle contract, app.bundle):
size-capped UTF-8 text, the rules of labels.txt, JSON objects without a repeated key, a file's
sha256, and whether a path stays inside the models folder once symlinks are resolved. No schema
here: app.bundle checks the metadata against it."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Final

from app.bundle_io import BundleError
from app.errors import ConfigurationError

# The largest shipped labels.txt (ImageNet, 1,000 classes) is 10.5 KB; 21k-class sets ~300 KB.
MAX_LABELS_BYTES = 4 << 20
MAX_LABEL_CHARS = 256


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes (the artifact hash), read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_text(path: Path, what: str, limit: int, encoding: str = "utf-8") -> str:
    """A small UTF-8 file's text, or BundleError naming the file and what is wrong with it."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise BundleError(f"{path}: {what} is larger than {limit:,} bytes")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise BundleError(
            f"{path}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from exc


def read_labels(path: Path) -> tuple[str, ...]:
    """labels.txt as one label per line, or BundleError naming the line that breaks a rule."""
    # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first label;
    # trailing empty lines are tolerated, empty labels in between are not.
    lines = read_text(path, "labels file", MAX_LABELS_BYTES, "utf-8-sig").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    labels = tuple(line.strip() for line in lines)
    for i, lab in enumerate(labels, 1):
        if not lab:
            raise BundleError(f"{path}: line {i} is an empty label")
        if len(lab) > MAX_LABEL_CHARS:
            raise BundleError(f"{path}: line {i} is longer than {MAX_LABEL_CHARS} characters")
        if not printable_label(lab):
            raise BundleError(f"{path}: line {i} holds a control or unprintable character")
    dup = sorted(lab for lab, n in Counter(labels).items() if n > 1)
    if dup:
        raise BundleError(f"{path}: duplicate labels {', '.join(map(repr, dup[:5]))}")
    return labels


# Invisible format characters that belong in words and emoji: zero-width non-joiner and joiner
# (Persian and Indic words, emoji sequences) and the tag characters of subdivision flags. Other
# format characters (bidi overrides, zero-width spaces, BOM) stay refused: they disguise text.
_JOINING: Final = frozenset({0x200C, 0x200D, *range(0xE0020, 0xE0080)})


def printable_label(label: str) -> bool:
    """Whether `label` has only printable characters, joiners and emoji tags counted as such
    (str.isprintable refused the black cat emoji and Persian "cats", fuzz round 21)."""
    return all(ch.isprintable() or ord(ch) in _JOINING for ch in label)


def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A json `object_pairs_hook`: a key given twice is a BundleError, not the last value."""
    counts = Counter(k for k, _ in pairs)
    if len(counts) != len(pairs):
        key = max(counts, key=counts.__getitem__)
        raise BundleError(f"metadata gives the key {key!r} more than once")
    return dict(pairs)


def inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, lies under `root` (a resolved folder)."""
    return path.resolve().is_relative_to(root)


def check_enabled(models_dir: Path, enabled: list[str]) -> None:
    """Before start-up: every name in IMGCLASS_ENABLED_MODELS is a bundle folder of
    `models_dir` (a folder, not a link, holding metadata.json), else ConfigurationError
    naming the ones that are not and what is there. A typo served nothing, and /readyz said
    503 with no word why; a file, an empty folder and a link passed a first form (round 25)."""
    if not enabled or not models_dir.is_dir():
        return  # no list: every bundle; no folder: the registry says so
    there = sorted(
        p.name
        for p in models_dir.iterdir()
        if not p.name.startswith(".")
        and p.is_dir()
        and not p.is_symlink()  # the loader refuses links out of the folder
        and (p / "metadata.json").is_file()
    )
    missing = [name for name in enabled if name not in there]
    if missing:
        raise ConfigurationError(
            f"IMGCLASS_ENABLED_MODELS names {', '.join(map(repr, missing))}, not a bundle "
            f"folder (with metadata.json) in {models_dir} (there: {', '.join(there) or 'none'}; "
            "taught models are not listed: they are served with their backbone)"
        )
