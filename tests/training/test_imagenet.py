"""training/imagenet.py: ImageNet-1k class names and the WordNet bird classes."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_class_names_are_unique_and_readable() -> None:
    from training import imagenet

    names = imagenet.class_names()
    assert len(names) == len(set(names)) == 1000
    assert names[22] == "bald eagle" and names[285] == "Egyptian cat"
    assert {names[134], names[517]} == {"crane (bird)", "crane (machine)"}


def test_bird_classes_are_the_wordnet_hyponyms_of_bird() -> None:
    from training import imagenet

    assert len(imagenet.BIRD_INDICES) == 59
    data_noun = imagenet.WORDNET_DATA_NOUN
    if not data_noun.is_file():
        pytest.skip(f"{data_noun} absent (Debian package wordnet-base); the list is checked there")
    found = imagenet.wordnet_hyponym_indices(
        data_noun, imagenet.read_synsets(), imagenet.BIRD_SYNSET
    )
    assert found == imagenet.BIRD_INDICES


def test_wordnet_walk_on_a_tiny_hierarchy(tmp_path: Path) -> None:
    from training import imagenet

    # data.noun lines: offset lex_filenum ss_type w_cnt word lex_id p_cnt [ptr offset pos src]...
    lines = [
        "  1 licence header line",
        "00000001 05 n 01 bird 0 000 | x",
        "00000002 05 n 01 eagle 0 001 @ 00000001 n 0000 | x",
        "00000003 05 n 01 bald_eagle 0 001 @ 00000002 n 0000 | x",
        "00000004 05 n 01 cat 0 000 | x",
    ]
    path = tmp_path / "data.noun"
    path.write_text("\n".join(lines) + "\n")
    synsets = ["n00000004", "n00000003", "n00000001", "n00000002"]
    assert imagenet.wordnet_hyponym_indices(path, synsets, "n00000001") == (1, 2, 3)
