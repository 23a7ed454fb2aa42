"""FeatherFace V1 (Kim, Jung, Kim, Electronics 2025) and its 489K variant.

MobileNetV1-0.25 -> [CBAM] -> BiFPN -> [CBAM] -> DCN-SSH -> shuffle -> heads.
Attribute names (including the checkpoint's `bacbkbone_*` typo) match the published
state dicts so that they load strictly and unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .backbone import MobileNetV1
from .bifpn import build_bifpn
from .cbam import CBAM, residual_cbam
from .heads import RetinaStyleDetector
from .ssh import SSH, ChannelShuffle, conv_shuffle_block, deformable_conv3x3


@dataclass(frozen=True)
class FeatherFaceV1Config:
    channels: int = 64
    bifpn_cells: int = 3
    cbam: bool = True  # CBAM on the backbone outputs and on the BiFPN outputs
    cbam_reduction: int = 16
    conv_shuffle: bool = True  # shuffle + 1x1/dw3x3/1x1 block; False: parameter-free shuffle


class FeatherFaceV1(RetinaStyleDetector):
    def __init__(self, config: FeatherFaceV1Config = FeatherFaceV1Config()) -> None:
        super().__init__(config.channels)
        self.config = config
        c = config.channels
        self.body = MobileNetV1()
        if config.cbam:
            for i, ch in enumerate(MobileNetV1.out_channels):
                setattr(self, f"bacbkbone_{i}_cbam", CBAM(ch, config.cbam_reduction))
        self.bifpn = build_bifpn(c, MobileNetV1.out_channels, config.bifpn_cells)
        if config.cbam:
            for i in range(3):
                setattr(self, f"bif_cbam_{i}", CBAM(c, config.cbam_reduction))
        for i in range(1, 4):
            setattr(self, f"ssh{i}", SSH(c, c, deformable_conv3x3))
            shuffle = conv_shuffle_block(c) if config.conv_shuffle else ChannelShuffle(2)
            setattr(self, f"ssh{i}_cs", shuffle)

    def _attend(self, prefix: str, features: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.config.cbam:
            return features
        return [residual_cbam(getattr(self, prefix.format(i)), f) for i, f in enumerate(features)]

    def neck(self, backbone_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = self._attend("bacbkbone_{}_cbam", backbone_levels)
        levels = self._attend("bif_cbam_{}", self.bifpn(levels))
        return [getattr(self, f"ssh{i + 1}_cs")(getattr(self, f"ssh{i + 1}")(f)) for i, f in enumerate(levels)]
