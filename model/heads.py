"""RetinaFace-style 1x1 heads and the detector base that assembles their outputs."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from featherface.config import OUTPUT_WIDTHS, PRIORS

ANCHORS = PRIORS.anchors_per_location  # the heads and the priors agree by construction


class Head(nn.Module):
    """1x1 conv predicting `width` numbers per anchor, flattened to [N, H*W*anchors, width]."""

    def __init__(self, in_ch: int, anchors: int, width: int) -> None:
        super().__init__()
        self.width = width
        self.conv1x1 = nn.Conv2d(in_ch, anchors * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.width)


def head_list(in_ch: int, anchors: int, width: int, levels: int = 3) -> nn.ModuleList:
    return nn.ModuleList(Head(in_ch, anchors, width) for _ in range(levels))


class RetinaStyleDetector(nn.Module):
    """Base of every variant: subclasses compute per-level features; heads map them to
    loc [N, A, 4], conf [N, A, 2] (softmax outside training) and landmarks [N, A, 10]."""

    def __init__(self, head_channels: int, shared_heads: bool = False) -> None:
        super().__init__()
        levels = 1 if shared_heads else 3  # shared: one head serves every level
        self.ClassHead = head_list(head_channels, ANCHORS, OUTPUT_WIDTHS["conf"], levels)
        self.BboxHead = head_list(head_channels, ANCHORS, OUTPUT_WIDTHS["loc"], levels)
        self.LandmarkHead = head_list(head_channels, ANCHORS, OUTPUT_WIDTHS["landmarks"], levels)

    def neck(self, backbone_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Everything between the MobileNetV1 `body` and the heads."""
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.neck(self.body(x))

    def raw_outputs(
        self, x: torch.Tensor | None = None, backbone_levels: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """loc, class logits (never softmaxed), landmarks, and the per-level features the
        heads read (training and distillation need both). Given `backbone_levels` instead
        of `x`, the body is skipped: one backbone pass can serve two networks sharing it."""
        levels = self.features(x) if backbone_levels is None else self.neck(backbone_levels)

        def predict(heads: nn.ModuleList) -> torch.Tensor:
            return torch.cat([heads[i % len(heads)](f) for i, f in enumerate(levels)], dim=1)

        return predict(self.BboxHead), predict(self.ClassHead), predict(self.LandmarkHead), levels

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loc, conf, landmarks, _ = self.raw_outputs(x)
        if not self.training:
            conf = F.softmax(conf, dim=-1)
        return loc, conf, landmarks
