"""Raw detector outputs for training: class logits (never softmax) and the pyramid levels.

`RetinaStyleDetector.forward` softmaxes `conf` outside training mode and hides the
per-level features that distillation compares; `raw_outputs` gives both.
"""
from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn
from torch import Tensor

__all__ = ["DetectorOutputs", "WithFeatures", "detector_outputs"]


class DetectorOutputs(NamedTuple):
    loc: Tensor  # [N, A, 4] box offsets
    conf_logits: Tensor  # [N, A, 2] raw class scores (background, face)
    landmarks: Tensor  # [N, A, 10] landmark offsets
    levels: list[Tensor]  # per-level features [N, C, H, W] at strides 8, 16, 32


def detector_outputs(model: nn.Module, x: Tensor | None, backbone_levels: list[Tensor] | None = None) -> DetectorOutputs:
    """Outputs of any registered variant in its current mode, with conf as logits; from
    `backbone_levels` (its `body`'s output) instead of `x` when given."""
    return DetectorOutputs(*model.raw_outputs(x, backbone_levels))


class WithFeatures(nn.Module):
    """`forward` returns `DetectorOutputs`; what DistributedDataParallel wraps, so that its
    gradient hooks see the same forward the loss uses. Weights live in `.detector`."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: Tensor | None, backbone_levels: list[Tensor] | None = None) -> DetectorOutputs:
        return detector_outputs(self.detector, x, backbone_levels)
