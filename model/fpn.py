"""RetinaFace's FPN (1x1 laterals, nearest upsampling, 3x3 merges), for the baseline."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbone import LEAKY_SLOPE


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, 1, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.LeakyReLU(LEAKY_SLOPE, inplace=True),
    )


class FPN(nn.Module):
    def __init__(self, in_channels: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.output1 = _conv_bn_act(in_channels[0], channels, 1)
        self.output2 = _conv_bn_act(in_channels[1], channels, 1)
        self.output3 = _conv_bn_act(in_channels[2], channels, 1)
        self.merge1 = _conv_bn_act(channels, channels, 3)
        self.merge2 = _conv_bn_act(channels, channels, 3)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]
