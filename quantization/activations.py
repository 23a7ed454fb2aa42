"""LeakyReLU rewritten as max(x, slope * x) for full INT8.

ai-edge-quantizer has no INT8 LEAKY_RELU: each one stays float, with a DEQUANTIZE before and
a QUANTIZE after it on the backbone's largest maps. MUL and MAXIMUM it quantizes, and for a
slope below 1 max(x, slope * x) is the same function, so the INT8 file keeps nothing float.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class MaxLeakyReLU(nn.Module):
    """max(x, slope * x): LeakyReLU for 0 <= slope <= 1, in ops an INT8 quantizer supports."""

    def __init__(self, slope: float) -> None:
        super().__init__()
        if not 0.0 <= slope <= 1.0:
            raise ValueError(f"max(x, slope * x) is LeakyReLU only for a slope in [0, 1], got {slope}")
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.maximum(x, x * self.slope)


def quantizable_activations(model: nn.Module) -> nn.Module:
    """`model` with every nn.LeakyReLU replaced in place by MaxLeakyReLU; returns it."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.LeakyReLU):
                setattr(parent, name, MaxLeakyReLU(child.negative_slope))
    return model
