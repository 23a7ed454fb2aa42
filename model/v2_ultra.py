"""FeatherFace V2 Ultra: our ~244K-parameter student, designed to be distilled from V1.

The seed document names the parts but no trained or exportable implementation exists,
so this is our design. Every submodule is registered (trained and saved), and there is
no data-dependent Python branch: the network traces and exports as one graph.

Parts (parameters with the default config; `featherface info --arch v2-ultra`):
- backbone: MobileNetV1-0.25, the same as V1 and RetinaFace (213,072).
- bifpn: 1x1 lateral projections 64/128/256 -> 32 (+BN), then 2 BiFPN cells of
  depthwise-separable 3x3 convs at 32 channels with fast normalised fusion (25,908).
- attention: one light CBAM shared by the three levels, channel reduction 128 (MLP
  32 -> 1 -> 32) and the 7x7 spatial gate (197); applied as relu(CBAM(x) + x).
- context: per level an SSH whose 3x3 convs are grouped (groups 8) followed by a
  parameter-free channel shuffle (groups 8) so that the groups exchange information (3,528).
- heads: one class / box / landmark 1x1 head shared by the three levels (1,056).

The five "zero-parameter innovations" of the seed, each a switch in the config so that
its real effect can be measured (costs at 640x640, where the three 32-channel levels hold
268,800 values; none adds convolution multiply-adds):
1. feature_reuse: the lateral projections are added back to the BiFPN outputs (a skip
   around the pyramid). 0 parameters; 268,800 adds.
2. attention_multiplication: the channel attention computed by the shared CBAM before
   the context module also scales the SSH output, reusing it instead of recomputing.
   0 parameters; 268,800 multiplies.
3. progressive_enhancement: after the context module the coarse levels enhance the finer
   ones top-down (P4 += up(P5), then P3 += up(P4)). 0 parameters; 256,000 adds.
4. multiscale_context: the SSH input is enriched with its 3x3 and 5x5 average pools
   (stride 1), widening the grouped convs' view for free. 0 parameters; about 9.1M adds
   (pooling windows) and 537,600 adds/multiplies to combine.
5. dynamic_weight_sharing: because the heads are shared, a per-level differentiable gate
   g = sigmoid(a * mean(x) + b) blends the context output with its input,
   g * SSH(x) + (1 - g) * x: a level can lean on or skip its context module, smoothly and
   per image, where the public code used a Python `if`. 6 parameters; 537,600 multiplies.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from featherface.model_names import INNOVATIONS  # noqa: F401  (re-exported; readable without torch)

from .backbone import MobileNetV1
from .bifpn import BiFPNCell, projection
from .cbam import CBAM
from .heads import RetinaStyleDetector
from .ssh import SSH, ChannelShuffle


@dataclass(frozen=True)
class FeatherFaceV2UltraConfig:
    channels: int = 32
    bifpn_cells: int = 2
    cbam_reduction: int = 128
    ssh_groups: int = 8
    anchors: int = 2
    feature_reuse: bool = True
    attention_multiplication: bool = True
    progressive_enhancement: bool = True
    multiscale_context: bool = True
    dynamic_weight_sharing: bool = True




class LightBiFPN(nn.Module):
    """Lateral 1x1 projections to `channels`, then BiFPN cells sharing them for both paths."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int, cells: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(projection(c, channels) for c in in_channels)
        self.cells = nn.Sequential(*[BiFPNCell(channels) for _ in range(cells)])

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        projected = [proj(f) for proj, f in zip(self.lateral, features)]
        return self.cells(projected), projected


class LevelGate(nn.Module):
    """Per-level gate g = sigmoid(a * mean(x) + b), one (a, b) pair per level."""

    def __init__(self, levels: int = 3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(levels))
        self.bias = nn.Parameter(torch.full((levels,), 2.0))  # starts mostly open: g ~ 0.88

    def forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale[level] * x.mean(dim=(1, 2, 3), keepdim=True) + self.bias[level])


class FeatherFaceV2Ultra(RetinaStyleDetector):
    def __init__(self, config: FeatherFaceV2UltraConfig = FeatherFaceV2UltraConfig()) -> None:
        super().__init__(config.channels, config.anchors, shared_heads=True)
        self.config = config
        c = config.channels
        self.body = MobileNetV1()
        self.bifpn = LightBiFPN(MobileNetV1.out_channels, c, config.bifpn_cells)
        self.attention = CBAM(c, config.cbam_reduction)
        self.context = nn.ModuleList(
            nn.Sequential(SSH(c, c, self._grouped_conv3x3), ChannelShuffle(config.ssh_groups)) for _ in range(3)
        )
        self.gate = LevelGate(3) if config.dynamic_weight_sharing else None

    def _grouped_conv3x3(self, in_ch: int, out_ch: int) -> nn.Module:
        return nn.Conv2d(in_ch, out_ch, 3, 1, 1, groups=self.config.ssh_groups, bias=False)

    def _attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shared CBAM applied residually; also returns the channel attention for reuse."""
        channel_att = self.attention.ChannelGate.attention(x)
        attended = x * channel_att
        attended = attended * self.attention.SpatialGate.attention(attended)
        return torch.relu(attended + x), channel_att

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        cfg = self.config
        levels, projected = self.bifpn(self.body(x))
        if cfg.feature_reuse:
            levels = [f + p for f, p in zip(levels, projected)]
        outputs = []
        for i, feature in enumerate(levels):
            attended, channel_att = self._attend(feature)
            ssh_input = attended
            if cfg.multiscale_context:
                ssh_input = (attended + F.avg_pool2d(attended, 3, 1, 1) + F.avg_pool2d(attended, 5, 1, 2)) / 3.0
            context = self.context[i](ssh_input)
            if cfg.attention_multiplication:
                context = context * channel_att
            if self.gate is not None:
                g = self.gate(i, attended)
                context = g * context + (1.0 - g) * attended
            outputs.append(context)
        if cfg.progressive_enhancement:
            p3, p4, p5 = outputs
            p4 = p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest")
            p3 = p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest")
            outputs = [p3, p4, p5]
        return outputs
