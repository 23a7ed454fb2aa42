"""Settings of the distillation loss and its phase presets, without torch: the CLI reads
them for --help."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["PRESETS", "SEED_3PHASE", "ULTRA_FROZEN", "ULTRA_RELU", "DistillConfig", "EpochSettings", "Phase", "settings_at"]

WEIGHTS = ("task_weight", "kd_weight", "feature_weight", "attention_weight", "box_weight", "landmark_weight")


@dataclass(frozen=True)
class Phase:
    """Epochs from the previous phase's `end` (or 0) up to, not including, `end`.

    freeze_backbone: the student's MobileNetV1 `body` gets no gradients and keeps its BN
    statistics. terms_off: DistillConfig weights set to 0 during the phase.
    """

    end: int
    freeze_backbone: bool = False
    terms_off: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.terms_off) - set(WEIGHTS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {', '.join(unknown)}; expected some of: {', '.join(WEIGHTS)}")


# The seed's "three-phase schedule of 100/200/100 epochs". The seed gives only the epoch
# counts; what each phase does is our reading of it:
# 1. epochs 0-99: the full distillation loss (the task term stays: it is the only signal
#    for the box and landmark heads) with the backbone, initialised from the teacher, frozen;
# 2. epochs 100-299: everything trainable, the seed's weights;
# 3. epochs 300-399: fine-tuning on task + KL only (feature alignment, attention transfer off).
SEED_3PHASE: tuple[Phase, ...] = (
    Phase(100, freeze_backbone=True),
    Phase(300),
    Phase(400, terms_off=("feature_weight", "attention_weight")),
)
# V2 Ultra's recipe: the student's backbone is the teacher's (RetinaFace-mnet0.25, trained
# on all of WIDER FACE), frozen throughout, so one backbone pass serves both networks and
# only the pyramid, context and heads on top of it learn (docs/design.md).
# Run with `--switch relu_backbone`: the shared backbone keeps the teacher's LeakyReLU.
ULTRA_FROZEN: tuple[Phase, ...] = (Phase(10, freeze_backbone=True),)
# Then the ReLU backbone that full INT8 runs fastest: from the frozen phase's weights
# (`--init-weights`), everything trainable, the teacher running its own backbone.
ULTRA_RELU: tuple[Phase, ...] = (Phase(6),)
PRESETS: dict[str, tuple[Phase, ...]] = {"seed-3phase": SEED_3PHASE, "ultra-frozen": ULTRA_FROZEN, "ultra-relu": ULTRA_RELU}


@dataclass(frozen=True)
class DistillConfig:
    """Every weight of the distillation loss; defaults are the seed document's recipe.

    kd_per: how the KL term is normalised ("prior": mean over priors, the seed's;
    "face": per expected teacher face prior, see distill.kd_kl_loss).
    regression_min_score: the box term only uses priors where the teacher's face
    probability exceeds this (its boxes elsewhere are meaningless). The landmark term
    uses the priors matched to a ground-truth face, where the teacher's landmarks are
    meaningful even when the data has none (WIDER train).
    phases: empty for one phase with these weights throughout; otherwise the run lasts
    exactly `phases[-1].end` epochs and `settings_at` gives each epoch's weights.
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
    kd_per: str = "prior"  # or "face": see distill.kd_kl_loss
    phases: tuple[Phase, ...] = ()

    def __post_init__(self) -> None:
        if not (self.temperature_min > 0 or self.temperature_range > 0):
            raise ValueError("the distillation temperature must stay above 0: give temperature_min or temperature_range above 0")
        ends = [p.end for p in self.phases]
        if any(b <= a for a, b in zip([0, *ends], ends)):
            raise ValueError(f"phase ends must be positive and increasing, got {ends}")


class EpochSettings(NamedTuple):
    loss: DistillConfig  # the weights of this epoch
    freeze_backbone: bool


def settings_at(epoch: int, config: DistillConfig) -> EpochSettings:
    """Loss weights and backbone freezing for `epoch` (counted from 0) under `config.phases`."""
    if not config.phases:
        return EpochSettings(config, False)
    for phase in config.phases:
        if 0 <= epoch < phase.end:
            return EpochSettings(dataclasses.replace(config, **dict.fromkeys(phase.terms_off, 0.0)), phase.freeze_backbone)
    raise ValueError(f"epoch {epoch} is outside the phase table (epochs 0-{config.phases[-1].end - 1})")
