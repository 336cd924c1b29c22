"""training.emoji.card: rewriting one section of a bundle's card, and the bundle around it."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.bundle import load_bundle
from tests.conftest import ROOT
from training.emoji.card import replace_section, rewrite_bundle

TITLE = "## Input policy: something"


def test_a_section_is_appended_replaced_at_the_end_or_replaced_in_the_middle() -> None:
    card = "# Card\n\n## Model\n\ntext\n"
    first = replace_section(card, TITLE, f"{TITLE}\n\nv1\n")
    assert first == f"# Card\n\n## Model\n\ntext\n\n{TITLE}\n\nv1\n"
    assert replace_section(first, TITLE, f"{TITLE}\n\nv2\n") == first.replace("v1", "v2")
    later = first + "\n## Licences\n\nMIT\n"
    again = replace_section(later, TITLE, f"{TITLE}\n\nv2\n")
    assert again == later.replace("v1", "v2")  # the sections after it stay
    assert replace_section("", TITLE, "x\n") == "\n\nx\n"


def test_rewrite_keeps_the_model_labels_and_side_files(tmp_path: Path) -> None:
    src = load_bundle(ROOT / "models" / "digits")
    folder = tmp_path / "digits"
    shutil.copytree(src.path, folder)
    (folder / "loso-heads.npz").write_bytes(b"fold models")
    bundle = load_bundle(folder)
    meta = bundle.metadata.model_copy(update={"description": "rewritten"})
    rewrite_bundle(bundle, meta, TITLE, f"{TITLE}\n\nmeasured\n")
    out = load_bundle(folder)
    assert out.metadata.description == "rewritten" and out.labels == src.labels
    assert out.model_path.read_bytes() == src.model_path.read_bytes()
    assert (folder / "loso-heads.npz").read_bytes() == b"fold models"
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith((src.path / "README.md").read_text(encoding="utf-8").rstrip())
    assert card.endswith(f"\n\n{TITLE}\n\nmeasured\n")
