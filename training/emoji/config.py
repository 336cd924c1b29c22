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
    # `logistic`: a binary logistic head (santa v1, bird v1). `identity`: a softmax over every
    # emoji, the task's score its emoji's summed probability (training.emoji.identity, bird v3, v4).
    head: Literal["logistic", "identity"] = "logistic"
    identity_l2: float = Field(default=1e-5, gt=0)  # the identity head's L2 (fixed, one setting)
    identity_epochs: int = Field(default=10, ge=1, le=100)
    # WCCN shrinkage values the identity head's folds choose from (training.emoji.wccn: the
    # features whitened against their within-emoji covariance); empty: none (bird v3, v4).
    identity_wccn: list[float] = Field(default_factory=list)
    # Extra card sections, rendered after the evaluation sections.
    card_notes: list[CardNote] = Field(default_factory=list)


class EmojiTopConfig(RecipeBase):
    """Config of the `emoji_top` recipe (training.emoji.top_recipe): the imagenet graph's last
    block and head conv fine-tuned with a Santa and a bird head on emoji art,
    leave-one-style-out folds, then one model on every style (training.emoji.top_ship; its
    settings are fixed in code). `task` says which head the bundle serves (its `name`)."""

    recipe: Literal["emoji_top"] = "emoji_top"
    task: Literal["santa", "bird"] = "santa"
    # The bundle whose graph is cut and fine-tuned (only models/imagenet's graph is supported).
    backbone_bundle: Path = Path("models/imagenet")
    # Every fold model taken at this epoch, as the served model is (None: each fold's epoch is
    # chosen on its validation style and the served model gets the folds' median).
    fixed_epoch: int | None = Field(default=5, ge=0, le=5)
    # One seed: one fine-tuned top (santa v2). Several: one member per seed, each trained and
    # evaluated alike in its own run directory (<run dir>/seed-<s>), served as the mean of
    # their logits on one shared trunk (santa v3). The first must be `seed`.
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, max_length=8)
    # Run directory under the runs dir; reused, so every step resumes where it stopped.
    run_name: str = Field(default="santa-top", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    # Extra card sections, rendered after the evaluation sections (and v1's notes).
    card_notes: list[CardNote] = Field(default_factory=list)
