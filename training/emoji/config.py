"""Config of the `emoji_head` recipe (TensorFlow-free): a binary head on the imagenet bundle's
embedding, trained and evaluated leave-one-style-out on emoji art (training/emoji/)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from training.config import RecipeBase, Section


class CardNote(Section):
    """A card section kept with the config (e.g. a route measured elsewhere, not shipped), so
    a rebuild renders it instead of it being typed into the card by hand."""

    title: str
    paragraphs: list[str] = Field(min_length=1)


class EmojiHeadConfig(RecipeBase):
    recipe: Literal["emoji_head"] = "emoji_head"
    # Which emoji are positive, labels, threshold rule (training.emoji.loso.TASKS).
    task: Literal["santa", "bird"]
    # The bundle whose graph and `embedding` output the head is composed onto.
    backbone_bundle: Path = Path("models/imagenet")
    # Augmented views of every training picture (cached; "aug<seed>").
    views: list[str] = Field(default_factory=lambda: ["aug0"])
    # The regularisation values the inner leave-one-style-out chooses from (None: the task's).
    cs: list[float] | None = Field(default=None, min_length=1)
    # Weights for the task's hard negatives (as drawn) that the inner LOSO chooses from.
    hard_weights: list[float] | None = Field(default=None, min_length=1)
    # Extra card sections, rendered after the evaluation sections.
    card_notes: list[CardNote] = Field(default_factory=list)
