"""The binary tasks on emoji art (santa, bird): their labels, the settings their heads are
chosen from, and the decision rule that turns head scores into the task's decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from training.emoji.catalog import Picture


@dataclass(frozen=True)
class Task:
    name: str
    labels: tuple[str, str]  # (negative, positive), the bundle's labels.txt order
    label: Callable[[Picture], int | None]
    use_mass: bool  # add the ImageNet bird-mass logit as a feature
    with_photos: bool  # test on the labelled real photos too (never trained on)
    rule: Literal["max_f1", "precision"]
    target: float | None = None
    cs: tuple[float, ...] = (0.01, 0.03, 0.1)
    # Decide "mass >= 0.5 or head >= threshold": the ImageNet bird-mass rule (right on every
    # photo we have) stays, the head only adds what it finds on drawings.
    combine_mass: bool = False
    # How many augmented views to train with (0 = the pictures as drawn); chosen on validation.
    aug_options: tuple[int, ...] = (0, 1)
    # Hard negatives (e.g. other people for Santa) and the extra weights their pictures as drawn
    # may get in training (1.0 = none); the weight is chosen on validation like C.
    hard: Callable[[Picture], bool] | None = None
    hard_weights: tuple[float, ...] = (1.0,)
    # An emoji-identity softmax head (training.emoji.identity) instead of a logistic one: one
    # setting (every augmented view, `identity_l2`), no inner search; each fold's threshold is
    # the task's rule on the other styles' held-out scores (see loso.run_loso).
    identity: bool = False
    identity_l2: float = 1e-5
    identity_epochs: int = 10
    identity_seed: int = 0
    # WCCN shrinkage values to choose from (training.emoji.wccn); empty: no WCCN.
    identity_wccn: tuple[float, ...] = ()


TASKS = {
    "santa": Task(
        "santa",
        ("not_santa", "santa"),
        lambda p: int(p.is_santa),
        False,
        False,
        "max_f1",
        hard=lambda p: p.is_santa_hard_negative,
    ),
    "bird": Task(
        "bird",
        ("not_bird", "bird"),
        lambda p: p.bird_label,
        False,
        True,
        "precision",
        0.98,
        combine_mass=True,
        hard=lambda p: p.is_bird_hard_negative,
    ),
}


MASS_RULE = 0.5  # the photo-only bird bundle's threshold on the ImageNet bird mass


def decision_scores(
    task: Task, head_scores: npt.NDArray[np.float64], mass: npt.NDArray[np.float32] | None
) -> npt.NDArray[np.float64]:
    """Scores whose threshold gives the task's decision: for `combine_mass`, a picture whose
    ImageNet bird mass reaches MASS_RULE scores 1 (always positive), else its head score."""
    if not task.combine_mass:
        return head_scores
    if mass is None:
        raise ValueError(f"{task.name}: combining needs the ImageNet bird mass")
    return np.where(mass >= MASS_RULE, 1.0, head_scores)
