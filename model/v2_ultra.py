"""FeatherFace V2 Ultra: our small detector (`featherface info --arch v2-ultra`), distilled from a face-trained
teacher that shares its MobileNetV1-0.25 backbone.

The seed document names the parts but no trained or exportable implementation exists,
so this is our design, shaped by one constraint: the shared backbone alone takes about half
of RetinaFace-mnet0.25's time (docs/design.md), so everything on top of it must be nearly free.
Every submodule is registered, and there is no data-dependent Python branch.

Default parts (`featherface info --arch v2-ultra` counts them):
- backbone: MobileNetV1-0.25, the same as V1 and RetinaFace, but with ReLU where theirs
  has LeakyReLU(0.1) (`relu_backbone`): in full INT8 each LeakyReLU costs three extra passes
  over its map, a ReLU none. The checkpoint records which one it was trained with.
- pyramid: per level a 1x1 lateral projection to `channels` (+BN+ReLU); optionally
  `bifpn_cells` BiFPN cells (off by default: their fusion and swish ops cost time).
- context: per level one depthwise-separable 3x3 block (+BN+ReLU each); `deep_context`
  adds a second one, dilated 2 and residual (an SSH-style wider context for small faces;
  off: it bought no more than a seed's worth of AP, docs/design.md).
- heads: a class / box / landmark 1x1 head per level (`level_heads`; off: one set shared by
  the three levels: fewer parameters, the same ops and time).
ReLU everywhere on top of the backbone: an INT8 conv fuses it, whereas a LeakyReLU is
requantized over its full range.

The seed's five "zero-parameter innovations" stay switches, so that each one's cost and
gain can be measured (`featherface ablate`); docs/design.md ("V2 Ultra against the seed document's claims") records which are on and why:
1. feature_reuse: the pyramid level is added back to its context output (a skip).
2. attention_multiplication: a shared channel attention (the CBAM's channel gate)
   scales each context output.
3. progressive_enhancement: top-down pathway, P4 += up(P5) then P3 += up(P4), before
   the context modules.
4. multiscale_context: the context input is enriched with its 3x3 average pool.
5. dynamic_weight_sharing: for heads shared by the levels, a per-level gate
   g = sigmoid(a * mean(x) + b) blends the context output with its input (6 parameters).
`attention` (the seed's shared CBAM, applied residually before the context) is a switch too.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from featherface.model_names import INNOVATIONS  # noqa: F401  (re-exported; readable without torch)

from .backbone import LEAKY_SLOPE, MobileNetV1
from .bifpn import BiFPNCell
from .cbam import CBAM
from .heads import RetinaStyleDetector


@dataclass(frozen=True)
class FeatherFaceV2UltraConfig:
    channels: int = 64
    bifpn_cells: int = 0
    attention: bool = False
    cbam_reduction: int = 16
    feature_reuse: bool = True
    attention_multiplication: bool = False
    progressive_enhancement: bool = True
    multiscale_context: bool = False
    dynamic_weight_sharing: bool = False
    relu_backbone: bool = True  # False: the teacher's LeakyReLU(0.1), which a shared frozen backbone needs
    deep_context: bool = False
    level_heads: bool = True  # False: one set of heads shared by the three levels


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, 1, dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def separable_block(channels: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3x3 (optionally dilated) then pointwise 1x1, each with BN and ReLU."""
    return nn.Sequential(conv_bn_relu(channels, channels, 3, groups=channels, dilation=dilation), conv_bn_relu(channels, channels))


def residual_context_block(channels: int) -> nn.Sequential:
    """A dilated depthwise 3x3 (+BN+ReLU), then a 1x1 and a BN that starts at zero, so that
    `x + block(x)` is the identity at first: added to trained weights, it starts as the
    network it joins. No ReLU after that BN: at zero it would pass no gradient."""
    block = nn.Sequential(
        conv_bn_relu(channels, channels, 3, groups=channels, dilation=2),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
    )
    nn.init.zeros_(block[-1].weight)
    return block


class LevelGate(nn.Module):
    """Per-level gate g = sigmoid(a * mean(x) + b), one (a, b) pair per level."""

    def __init__(self, levels: int = 3) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(levels))
        self.bias = nn.Parameter(torch.full((levels,), 2.0))  # starts mostly open: g ~ 0.88

    def forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale[level] * x.mean(dim=(1, 2, 3), keepdim=True) + self.bias[level])


def _same_backbone_activation(module: nn.Module, state: dict, prefix: str, *_args) -> None:
    saved = state.get(prefix + "relu_backbone")
    if saved is not None and bool(saved) != bool(module.relu_backbone):
        def name(relu: bool) -> str:
            return "ReLU" if relu else "LeakyReLU"

        raise ValueError(
            f"these v2-ultra weights were trained with a {name(bool(saved))} backbone, but the network was built "
            f"with {name(bool(module.relu_backbone))} (FeatherFaceV2UltraConfig.relu_backbone)"
        )


class FeatherFaceV2Ultra(RetinaStyleDetector):
    def __init__(self, config: FeatherFaceV2UltraConfig = FeatherFaceV2UltraConfig()) -> None:
        super().__init__(config.channels, shared_heads=not config.level_heads)
        self.config = config
        c = config.channels
        self.body = MobileNetV1(slope=0.0 if config.relu_backbone else LEAKY_SLOPE)
        # In the checkpoint, so that weights trained with one activation never load
        # silently into a network built with the other (the keys are the same).
        self.register_buffer("relu_backbone", torch.tensor(config.relu_backbone))
        self.register_load_state_dict_pre_hook(_same_backbone_activation)
        self.lateral = nn.ModuleList(conv_bn_relu(width, c) for width in MobileNetV1.out_channels)
        self.bifpn = nn.Sequential(*[BiFPNCell(c) for _ in range(config.bifpn_cells)]) if config.bifpn_cells else None
        needs_cbam = config.attention or config.attention_multiplication
        self.attention = CBAM(c, config.cbam_reduction) if needs_cbam else None
        self.context = nn.ModuleList(separable_block(c) for _ in range(3))
        self.deep_context = nn.ModuleList(residual_context_block(c) for _ in range(3)) if config.deep_context else None
        self.gate = LevelGate(3) if config.dynamic_weight_sharing else None

    def neck(self, backbone_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        cfg = self.config
        p3, p4, p5 = (proj(f) for proj, f in zip(self.lateral, backbone_levels))
        if cfg.progressive_enhancement:
            p4 = p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest")
            p3 = p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest")
        levels = [p3, p4, p5]
        if self.bifpn is not None:
            levels = self.bifpn(levels)
        outputs = []
        for i, level in enumerate(levels):
            channel_att = self.attention.ChannelGate.attention(level) if self.attention is not None else None
            if cfg.attention:  # the shared CBAM, residually, reusing channel_att
                attended = level * channel_att
                level = torch.relu(attended * self.attention.SpatialGate.attention(attended) + level)
            context_input = level
            if cfg.multiscale_context:
                context_input = (level + F.avg_pool2d(level, 3, 1, 1)) * 0.5
            context = self.context[i](context_input)
            if self.deep_context is not None:
                context = context + self.deep_context[i](context)
            if cfg.attention_multiplication:
                context = context * channel_att
            if self.gate is not None:
                g = self.gate(i, level)
                context = g * context + (1.0 - g) * level
            if cfg.feature_reuse:
                context = context + level
            outputs.append(context)
        return outputs
