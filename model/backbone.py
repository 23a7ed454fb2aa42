"""MobileNetV1-0.25, the backbone shared by RetinaFace-mnet0.25 and every FeatherFace.

Module names (`stage1.0.0` ...) match the published checkpoints and the ImageNet tar.
"""
from __future__ import annotations

import torch
import torch.nn as nn

LEAKY_SLOPE = 0.1


def activation(slope: float) -> nn.Module:
    """LeakyReLU(slope), or ReLU for slope 0: an INT8 convolution fuses a ReLU, whereas a
    LeakyReLU costs extra passes over the map (docs/quantization.md)."""
    return nn.LeakyReLU(slope, inplace=True) if slope else nn.ReLU(inplace=True)


def conv_bn(in_ch: int, out_ch: int, stride: int, slope: float = LEAKY_SLOPE) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        activation(slope),
    )


def conv_dw(in_ch: int, out_ch: int, stride: int, slope: float = LEAKY_SLOPE) -> nn.Sequential:
    """Depthwise 3x3 + BN + activation, then pointwise 1x1 + BN + activation."""
    return nn.Sequential(
        nn.Conv2d(in_ch, in_ch, 3, stride, 1, groups=in_ch, bias=False),
        nn.BatchNorm2d(in_ch),
        activation(slope),
        nn.Conv2d(in_ch, out_ch, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_ch),
        activation(slope),
    )


class MobileNetV1(nn.Module):
    """Returns the stride 8 / 16 / 32 feature maps (64 / 128 / 256 channels).

    `slope`: of every LeakyReLU (0.1 in the published networks; 0 for ReLU).
    """

    out_channels = (64, 128, 256)

    def __init__(self, slope: float = LEAKY_SLOPE) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, slope),
            conv_dw(8, 16, 1, slope),
            conv_dw(16, 32, 2, slope),
            conv_dw(32, 32, 1, slope),
            conv_dw(32, 64, 2, slope),
            conv_dw(64, 64, 1, slope),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2, slope), *[conv_dw(128, 128, 1, slope) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2, slope), conv_dw(256, 256, 1, slope))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        c5 = self.stage3(c4)
        return [c3, c4, c5]
