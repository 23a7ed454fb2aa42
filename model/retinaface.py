"""RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface layout): the baseline every
lightweight face detector is compared with."""
from __future__ import annotations

import torch

from .backbone import MobileNetV1
from .fpn import FPN
from .heads import RetinaStyleDetector
from .ssh import SSH


class RetinaFaceMNet(RetinaStyleDetector):
    def __init__(self, channels: int = 64) -> None:
        super().__init__(channels)
        self.body = MobileNetV1()
        self.fpn = FPN(MobileNetV1.out_channels, channels)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(channels, channels) for _ in range(3))

    def neck(self, backbone_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = self.fpn(backbone_levels)
        return [self.ssh1(p3), self.ssh2(p4), self.ssh3(p5)]
