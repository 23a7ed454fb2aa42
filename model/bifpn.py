"""BiFPN over three levels (P3-P5) with fast normalised fusion, as in FeatherFace V1.

Module names match the published checkpoints (Zylo117's EfficientDet naming).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSION_EPS = 1e-4
BIFPN_BN_EPS = 1e-3  # the TensorFlow-style BN epsilon the checkpoints were trained with


class ConvWrap(nn.Module):
    """Plain conv under a `.conv` attribute (the checkpoints' static-same-padding wrapper;
    for the 1x1 and stride-1 3x3 convs used here "same" padding is symmetric)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, kernel_size // 2, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SeparableConvBlock(nn.Module):
    """Depthwise 3x3 (no bias), pointwise 1x1 (bias), BN; no activation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise_conv = ConvWrap(channels, channels, 3, groups=channels, bias=False)
        self.pointwise_conv = ConvWrap(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels, momentum=0.01, eps=BIFPN_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pointwise_conv(self.depthwise_conv(x)))


def max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-2 max pool with TensorFlow "same" zero padding (extra on the bottom/right)."""
    h, w = x.shape[-2:]
    extra_w = (math.ceil(w / 2) - 1) * 2 - w + 3
    extra_h = (math.ceil(h / 2) - 1) * 2 - h + 3
    x = F.pad(x, [extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2])
    return F.max_pool2d(x, 3, 2)


def fusion_weights(raw: torch.Tensor) -> torch.Tensor:
    """Fast normalised fusion: relu(w) / (sum(relu(w)) + eps)."""
    positive = torch.relu(raw)
    return positive / (positive.sum() + FUSION_EPS)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def projection(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(ConvWrap(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch, momentum=0.01, eps=BIFPN_BN_EPS))


class BiFPNCell(nn.Module):
    """One BiFPN cell. The first cell projects the backbone maps to `channels`, with
    separate projections for the bottom-up path."""

    def __init__(self, channels: int, in_channels: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        self.first_time = in_channels is not None
        self.conv4_up = SeparableConvBlock(channels)
        self.conv3_up = SeparableConvBlock(channels)
        self.conv4_down = SeparableConvBlock(channels)
        self.conv5_down = SeparableConvBlock(channels)
        if in_channels is not None:
            c3, c4, c5 = in_channels
            self.p5_down_channel = projection(c5, channels)
            self.p4_down_channel = projection(c4, channels)
            self.p3_down_channel = projection(c3, channels)
            self.p4_down_channel_2 = projection(c4, channels)
            self.p5_down_channel_2 = projection(c5, channels)
        self.p4_w1 = nn.Parameter(torch.ones(2))
        self.p3_w1 = nn.Parameter(torch.ones(2))
        self.p4_w2 = nn.Parameter(torch.ones(3))
        # Three weights, of which the checkpoints' code uses the first two (normalised
        # over all three): kept as trained so the published weights compute the same.
        self.p5_w2 = nn.Parameter(torch.ones(3))

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = features
        if self.first_time:
            p3_in, p4_in, p5_in = self.p3_down_channel(p3), self.p4_down_channel(p4), self.p5_down_channel(p5)
        else:
            p3_in, p4_in, p5_in = p3, p4, p5

        w = fusion_weights(self.p4_w1)
        p4_up = self.conv4_up(swish(w[0] * p4_in + w[1] * F.interpolate(p5_in, size=p4_in.shape[-2:], mode="nearest")))
        w = fusion_weights(self.p3_w1)
        p3_out = self.conv3_up(swish(w[0] * p3_in + w[1] * F.interpolate(p4_up, size=p3_in.shape[-2:], mode="nearest")))

        if self.first_time:
            p4_in, p5_in = self.p4_down_channel_2(p4), self.p5_down_channel_2(p5)
        w = fusion_weights(self.p4_w2)
        p4_out = self.conv4_down(swish(w[0] * p4_in + w[1] * p4_up + w[2] * max_pool_same(p3_out)))
        w = fusion_weights(self.p5_w2)
        p5_out = self.conv5_down(swish(w[0] * p5_in + w[1] * max_pool_same(p4_out)))
        return [p3_out, p4_out, p5_out]


def build_bifpn(channels: int, in_channels: tuple[int, int, int], cells: int) -> nn.Sequential:
    return nn.Sequential(*[BiFPNCell(channels, in_channels if i == 0 else None) for i in range(cells)])


def is_fusion_weight(param_name: str) -> bool:
    """The BiFPN fusion scalars, which the paper's parameter counter (thop) skips."""
    return param_name.rsplit(".", 1)[-1] in {"p4_w1", "p3_w1", "p4_w2", "p5_w2"}
