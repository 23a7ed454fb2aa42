"""SSH context module (three receptive fields, concatenated) and channel shuffles."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .backbone import LEAKY_SLOPE
from .dcn import DeformableConv2d

ConvFactory = Callable[[int, int], nn.Module]


def plain_conv3x3(in_ch: int, out_ch: int) -> nn.Module:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)


def deformable_conv3x3(in_ch: int, out_ch: int) -> nn.Module:
    return DeformableConv2d(in_ch, out_ch, 3, 1, 1, bias=False)


def _conv_bn(conv: nn.Module, out_ch: int, activate: bool) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(out_ch)]
    if activate:
        layers.append(nn.LeakyReLU(LEAKY_SLOPE, inplace=True))
    return nn.Sequential(*layers)


class SSH(nn.Module):
    """Branches 3x3 (C/2), 5x5 as two 3x3 (C/4), 7x7 as three 3x3 (C/4); concat; ReLU.

    `conv3x3` builds each 3x3 conv: plain for RetinaFace, deformable for FeatherFace V1.
    """

    def __init__(self, in_ch: int, out_ch: int, conv3x3: ConvFactory = plain_conv3x3) -> None:
        super().__init__()
        half, quarter = out_ch // 2, out_ch // 4
        self.conv3X3 = _conv_bn(conv3x3(in_ch, half), half, activate=False)
        self.conv5X5_1 = _conv_bn(conv3x3(in_ch, quarter), quarter, activate=True)
        self.conv5X5_2 = _conv_bn(conv3x3(quarter, quarter), quarter, activate=False)
        self.conv7X7_2 = _conv_bn(conv3x3(quarter, quarter), quarter, activate=True)
        self.conv7x7_3 = _conv_bn(conv3x3(quarter, quarter), quarter, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5_1 = self.conv5X5_1(x)
        branch7_2 = self.conv7X7_2(branch5_1)
        out = torch.cat((self.conv3X3(x), self.conv5X5_2(branch5_1), self.conv7x7_3(branch7_2)), dim=1)
        return torch.relu(out)


class ChannelShuffle(nn.Module):
    """Channel shuffle viewing channels as [C/groups, groups] before transposing.

    Public code has both this view and [groups, C/groups] (each other's inverse for two
    groups); both FeatherFace checkpoints find faces only with this one (docs/measurements.md,
    "Figures behind the code's thresholds and choices").
    """

    def __init__(self, groups: int = 2) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c // self.groups, self.groups, h * w).transpose(1, 2).reshape(n, c, h, w)


def conv_shuffle_block(channels: int) -> nn.Sequential:
    """FeatherFace V1's shuffle block: shuffle, 1x1 C->C/2 + BN, dw3x3 + BN, 1x1 C/2->C + BN, ReLU."""
    mid = channels // 2
    return nn.Sequential(
        ChannelShuffle(2),
        nn.Conv2d(channels, mid, 1, bias=False),
        nn.BatchNorm2d(mid),
        nn.Conv2d(mid, mid, 3, 1, 1, groups=mid, bias=False),
        nn.BatchNorm2d(mid),
        nn.Conv2d(mid, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )
