"""Settings of the distillation loss, without torch: the CLI reads its defaults for --help."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DistillConfig"]


@dataclass(frozen=True)
class DistillConfig:
    """Every weight of the distillation loss; defaults are the seed document's recipe.

    regression_min_score: the box term only uses priors where the teacher's face
    probability exceeds this (its boxes elsewhere are meaningless). The landmark term
    uses the priors matched to a ground-truth face, where the teacher's landmarks are
    meaningful even when the data has none (WIDER train).
    """

    task_weight: float = 0.3
    kd_weight: float = 0.7
    feature_weight: float = 0.1
    attention_weight: float = 0.05
    box_weight: float = 0.0
    landmark_weight: float = 0.0
    temperature_range: float = 4.0
    temperature_min: float = 2.0
    regression_min_score: float = 0.5
