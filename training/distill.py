"""Knowledge distillation of a student detector from a frozen teacher (e.g. V1 -> V2 Ultra).

total = task_weight * MultiBoxLoss
      + kd_weight * T^2 * KL(teacher || student) on the class logits at temperature T
      + feature_weight * feature alignment + attention_weight * attention transfer
      + box_weight / landmark_weight * smooth L1 towards the teacher's regression outputs

with T(epoch) = temperature_range * (1 - epoch / max_epochs) + temperature_min.

Both networks see the same input, so their levels have the same spatial sizes (strides
8/16/32) but may differ in width (`--channels`). The two feature terms
are therefore adapter-free, comparing per-pixel summaries that do not depend on the
channel count:
- feature alignment: each level's channel-mean map [N, H*W], standardised per image
  (zero mean, unit variance over pixels), compared by mean squared error;
- attention transfer (Zagoruyko & Komodakis, ICLR 2017): each level's attention map
  sum_c x_c^2 over pixels, L2-normalised per image, compared by the L2 norm of the
  difference (in [0, 2]).
Each term is averaged over the three levels and the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .distill_config import DistillConfig
from .outputs import DetectorOutputs, detector_outputs

__all__ = [
    "DistillConfig",
    "DistillTerms",
    "attention_map",
    "attention_transfer_loss",
    "distillation_loss",
    "feature_alignment_loss",
    "freeze_teacher",
    "same_backbone",
    "kd_kl_loss",
    "teacher_outputs",
    "temperature",
]


def temperature(epoch: int | float, max_epochs: int, config: DistillConfig = DistillConfig()) -> float:
    """T(epoch) = range * (1 - epoch / max_epochs) + min; epoch counts from 0."""
    if max_epochs <= 0:
        raise ValueError(f"max_epochs must be positive, got {max_epochs}")
    return config.temperature_range * (1.0 - epoch / max_epochs) + config.temperature_min


def kd_kl_loss(student_logits: Tensor, teacher_logits: Tensor, t: float, per: str = "prior") -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes. Zero
    iff the tempered distributions agree.

    per="prior": averaged over every prior of every image (the seed's form). With 16,800
    priors at 640 and a few dozen on faces, that average is tiny and barely trains.
    per="face": summed over all priors and divided by the teacher's expected number of
    face priors (the sum of its face probabilities, at least 1): the dense term then
    weighs about as much as the task's classification loss.
    """
    log_p_student = F.log_softmax(student_logits / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    if per == "prior":
        return kl.mean() * t * t
    if per == "face":
        faces = F.softmax(teacher_logits, dim=-1)[..., 1].sum().clamp(min=1.0)
        return kl.sum() / faces * t * t
    raise ValueError(f"per must be 'prior' or 'face', got {per!r}")


def _standardised_channel_mean(x: Tensor) -> Tensor:
    m = x.mean(dim=1).flatten(1)
    return (m - m.mean(dim=1, keepdim=True)) / (m.std(dim=1, keepdim=True) + 1e-6)


def feature_alignment_loss(student_levels: list[Tensor], teacher_levels: list[Tensor]) -> Tensor:
    """Mean over levels of MSE between standardised channel-mean maps (see module doc)."""
    terms = [
        F.mse_loss(_standardised_channel_mean(s), _standardised_channel_mean(t))
        for s, t in zip(student_levels, teacher_levels, strict=True)
    ]
    return torch.stack(terms).mean()


def attention_map(x: Tensor) -> Tensor:
    """Zagoruyko-Komodakis attention: sum_c x_c^2, flattened, L2-normalised -> [N, H*W]."""
    return F.normalize(x.pow(2).sum(dim=1).flatten(1), dim=1)


def attention_transfer_loss(student_levels: list[Tensor], teacher_levels: list[Tensor]) -> Tensor:
    """Mean over levels and images of ||a_student - a_teacher||_2."""
    terms = [
        (attention_map(s) - attention_map(t)).norm(dim=1).mean()
        for s, t in zip(student_levels, teacher_levels, strict=True)
    ]
    return torch.stack(terms).mean()


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Eval mode (BN running statistics) and no gradients, for good."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, x: Tensor | None, backbone_levels: list[Tensor] | None = None) -> DetectorOutputs:
    """The frozen teacher's logits, regression outputs and levels (eval mode, no grad);
    from a shared backbone's `backbone_levels` instead of `x` when given."""
    if teacher.training:
        raise RuntimeError("the teacher must be in eval mode (use freeze_teacher)")
    return detector_outputs(teacher, x, backbone_levels)


def same_backbone(student: nn.Module, teacher: nn.Module) -> bool:
    """True when both MobileNetV1 `body`s hold identical layers (activations included),
    weights and BN statistics, so that one backbone pass (in eval mode) serves both networks."""
    if not (hasattr(student, "body") and hasattr(teacher, "body")):
        return False
    mine, theirs = student.body.state_dict(), teacher.body.state_dict()
    same_layers = [type(m) for m in student.body.modules()] == [type(m) for m in teacher.body.modules()]
    same_slopes = all(
        a.negative_slope == b.negative_slope
        for a, b in zip(student.body.modules(), teacher.body.modules()) if isinstance(a, nn.LeakyReLU)
    )
    return same_layers and same_slopes and mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


@dataclass
class DistillTerms:
    total: Tensor
    kd: Tensor
    feature: Tensor
    attention: Tensor
    box: Tensor
    landmarks: Tensor


def distillation_loss(
    student: DetectorOutputs,
    teacher: DetectorOutputs,
    task_total: Tensor,
    positive: Tensor,
    t: float,
    config: DistillConfig = DistillConfig(),
) -> DistillTerms:
    """Weighted total of `task_total` (the MultiBoxLoss) and the distillation terms.

    `positive` [N, A] marks the priors matched to ground-truth faces (LossTerms.positive).
    Terms whose weight is 0 are not computed (reported as 0).
    """
    zero = task_total.new_zeros(())
    kd = kd_kl_loss(student.conf_logits, teacher.conf_logits, t, config.kd_per) if config.kd_weight else zero
    feature = feature_alignment_loss(student.levels, teacher.levels) if config.feature_weight else zero
    attention = attention_transfer_loss(student.levels, teacher.levels) if config.attention_weight else zero
    box = landmarks = zero
    if config.box_weight:
        confident = F.softmax(teacher.conf_logits, dim=-1)[..., 1] > config.regression_min_score
        count = confident.sum().clamp(min=1)
        box = F.smooth_l1_loss(student.loc[confident], teacher.loc[confident], reduction="sum") / count
    if config.landmark_weight:
        count = positive.sum().clamp(min=1)
        landmarks = F.smooth_l1_loss(student.landmarks[positive], teacher.landmarks[positive], reduction="sum") / count
    total = (
        config.task_weight * task_total
        + config.kd_weight * kd
        + config.feature_weight * feature
        + config.attention_weight * attention
        + config.box_weight * box
        + config.landmark_weight * landmarks
    )
    return DistillTerms(total, kd, feature, attention, box, landmarks)
