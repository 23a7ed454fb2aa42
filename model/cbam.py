"""CBAM attention (channel gate, then spatial gate), as in the FeatherFace V1 checkpoint."""
from __future__ import annotations

import torch
import torch.nn as nn


class ChannelGate(nn.Module):
    """Shared MLP on the average- and max-pooled channel vectors, summed, sigmoid."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        # Index 0 is a parameter-free Flatten so that keys read `mlp.1` / `mlp.3`.
        self.mlp = nn.Sequential(
            nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
        )

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel weights in (0, 1), [N, C, 1, 1]."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak).unsqueeze(-1).unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class SpatialConv(nn.Module):
    """7x7 conv (no bias) + BN on the [max, mean] channel summary."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, 1, kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SpatialGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.spatial = SpatialConv()

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel weights in (0, 1), [N, 1, H, W]."""
        summary = torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)
        return torch.sigmoid(self.spatial(summary))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


def residual_cbam(cbam: CBAM, x: torch.Tensor) -> torch.Tensor:
    """FeatherFace applies CBAM residually: relu(CBAM(x) + x)."""
    return torch.relu(cbam(x) + x)
