"""ImageNet-1k class names, the bird class set, and the labelled real photos used to evaluate
the pretrained `imagenet` and `bird` bundles.

Class ids and names come from timm's ``imagenet_synsets.txt`` (1000 WordNet ids in class-index
order) and ``imagenet_synset_to_lemma.txt`` (fetched into data/imagenet by scripts/fetch-data).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data import DataNotFound, data_root

NUM_CLASSES = 1000
BIRD_SYNSET = "n01503061"  # WordNet 3.0 noun "bird: warm-blooded egg-laying vertebrates ..."
# The ImageNet-1k classes whose synset is a (transitive) hyponym of bird in WordNet 3.0:
# 59 classes, indices 7-24 (cock, hen, ostrich, finches, ... vulture, great grey owl),
# 80-100 (black grouse ... black swan) and 127-146 (white stork ... albatross). Checked with
# `wordnet_hyponym_indices` against Debian's wordnet-base data.noun; the test re-checks it
# whenever that file is present. Non-birds that merely look alike (e.g. 'kite' 21 IS the
# bird; the toy kite is not an ImageNet class) need no special casing.
BIRD_INDICES: tuple[int, ...] = (*range(7, 25), *range(80, 101), *range(127, 147))
# Domestic cat breeds: tabby, tiger cat, Persian, Siamese, Egyptian cat.
CAT_INDICES: tuple[int, ...] = tuple(range(281, 286))
# Class names that several synsets share as their first lemma, made unique by meaning.
_DISAMBIGUATION = {
    "n02012849": "crane (bird)",
    "n03126707": "crane (machine)",
    "n03710721": "maillot (tank suit)",
}
WORDNET_DATA_NOUN = Path("/usr/share/wordnet/data.noun")  # Debian package wordnet-base

_PHOTO_RE = re.compile(r"^(?P<set>[a-zA-Z0-9]+)_(?P<n>\d+)_(?P<label>\d+)\.(?:jpg|png)$")
# CIFAR-10 class index of "bird".
CIFAR10_BIRD = 2


def imagenet_dir() -> Path:
    return data_root() / "imagenet"


def read_synsets(folder: Path | None = None) -> list[str]:
    path = (folder or imagenet_dir()) / "imagenet_synsets.txt"
    if not path.is_file():
        raise DataNotFound(f"{path} not found; run scripts/fetch-data (it takes it from timm)")
    synsets = [
        line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if len(synsets) != NUM_CLASSES or len(set(synsets)) != NUM_CLASSES:
        raise ValueError(f"{path}: expected {NUM_CLASSES} distinct synsets, found {len(synsets)}")
    return synsets


def class_names(folder: Path | None = None) -> tuple[str, ...]:
    """1000 unique human-readable names in class-index order (first WordNet lemma)."""
    folder = folder or imagenet_dir()
    synsets = read_synsets(folder)
    path = folder / "imagenet_synset_to_lemma.txt"
    if not path.is_file():
        raise DataNotFound(f"{path} not found; run scripts/fetch-data")
    lemmas: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, text = line.partition("\t")
        lemmas[wnid] = text
    names = [_DISAMBIGUATION.get(s) or lemmas[s].split(",")[0].strip() for s in synsets]
    counts = Counter(names)
    # Anything still ambiguous (a future lemma file) gets its synset id rather than failing.
    names = [f"{n} ({s})" if counts[n] > 1 else n for n, s in zip(names, synsets, strict=True)]
    if len(set(names)) != NUM_CLASSES:
        raise ValueError("ImageNet class names are not unique")
    return tuple(names)


def _wordnet_hypernyms(data_noun: Path) -> dict[str, list[str]]:
    """offset -> hypernym offsets (@ and @i pointers) from a WordNet 3.0 data.noun file."""
    parents: dict[str, list[str]] = {}
    with data_noun.open(encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):  # licence header
                continue
            fields = line.split()
            n_words = int(fields[3], 16)
            i = 4 + 2 * n_words
            n_ptrs = int(fields[i])
            i += 1
            ups = []
            for _ in range(n_ptrs):
                symbol, offset, pos = fields[i], fields[i + 1], fields[i + 2]
                i += 4
                if symbol in ("@", "@i") and pos == "n":
                    ups.append(offset)
            parents[fields[0]] = ups
    return parents


def wordnet_hyponym_indices(data_noun: Path, synsets: Sequence[str], root: str) -> tuple[int, ...]:
    """Indices of the classes whose synset is `root` or lies below it in WordNet."""
    parents = _wordnet_hypernyms(data_noun)
    target = root.lstrip("n")

    def below(offset: str) -> bool:
        stack, seen = [offset], set()
        while stack:
            node = stack.pop()
            if node == target:
                return True
            for p in parents.get(node, []):
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return False

    return tuple(i for i, s in enumerate(synsets) if below(s.lstrip("n")))


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    group: str  # e.g. "foolbox/imagenet", "skimage"
    imagenet_label: int | None  # ground-truth ImageNet class where known
    is_bird: bool


def _foolbox(photos: Path, prefix: str) -> list[tuple[Path, int]]:
    out = []
    for p in sorted((photos / "foolbox").glob(f"{prefix}_*")):
        m = _PHOTO_RE.match(p.name)
        if m and m["set"] == prefix:
            out.append((p, int(m["label"])))
    return out


def imagenet_photos(photos: Path | None = None) -> list[LabelledPhoto]:
    """The 20 ImageNet validation-style photos that foolbox ships (label index in the name)."""
    photos = photos or data_root() / "photos"
    items = _foolbox(photos, "imagenet")
    if len(items) != 20:
        raise DataNotFound(
            f"expected 20 foolbox imagenet photos in {photos}; run scripts/fetch-data"
        )
    return [LabelledPhoto(p, "foolbox/imagenet", y, y in BIRD_INDICES) for p, y in items]


# Photos with no bird in them, by eye (checked once; none of these sets has a bird class).
_NO_BIRD_GROUPS = ("skimage", "sklearn", "matplotlib", "imgaug")


def bird_photos(photos: Path | None = None) -> list[LabelledPhoto]:
    """Every real photograph under data/photos with a known bird / not-bird label (73 files):
    foolbox ImageNet (20, 3 birds), CIFAR-10 test images (20, none is class 2 'bird'),
    CIFAR-100 (20; CIFAR-100 has no bird class), scikit-image (8), scikit-learn (2),
    matplotlib (2, one is clip art) and imgaug's quokka. MNIST digits are not photographs."""
    photos = photos or data_root() / "photos"
    out = imagenet_photos(photos)
    for p, y in _foolbox(photos, "cifar10"):
        out.append(LabelledPhoto(p, "foolbox/cifar10", None, y == CIFAR10_BIRD))
    for p, _ in _foolbox(photos, "cifar100"):
        out.append(LabelledPhoto(p, "foolbox/cifar100", None, False))
    for group in _NO_BIRD_GROUPS:
        for p in sorted((photos / group).glob("*")):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                out.append(LabelledPhoto(p, group, None, False))
    return out
