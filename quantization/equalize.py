"""Cross-layer equalization of the MobileNetV1 backbone on its pre-activation ranges.

Why (shared/docs/measured.md): full-INT8 RetinaFace-family detectors lose faces in the
high-resolution stem. After BatchNorm folding some channels span less than three of the
tensor's INT8 steps (docs/measurements.md, "Figures behind the code's thresholds and
choices"), and because LeakyReLU cannot be fused into an INT8 convolution the
conv output is requantized over its whole pre-activation range, negative tail included.
Per-tensor activation scales then drown the small channels in noise.

The fix changes no output: for consecutive convolutions W1 -> LeakyReLU -> W2, channel i
of W1's output is divided by s_i and W2's input channel i multiplied by s_i, which is
exact because LeakyReLU(x / s) = LeakyReLU(x) / s for s > 0. We choose s_i from the
channel's measured pre-activation range on calibration images (Nagel et al., "Data-Free
Quantization", 2019, balance weight ranges instead):
- W2 depthwise: its weights are quantized per channel, so the scale is free there and
  every channel of the activation is brought to the tensor's widest range;
- W2 pointwise: activation range and W2's input-column range are balanced (geometric
  mean of their relative ranges), since W2's per-output-channel scales feel the change.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

# A channel is never scaled up by more than this (dead channels would explode W1).
MAX_UPSCALE = 64.0


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv with bias computing conv followed by `bn` in eval mode (exact)."""
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        folded.weight.copy_(conv.weight * factor.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded.bias.copy_(bn.bias + (bias - bn.running_mean) * factor)
    return folded


def _folded_chain(stage: nn.Module) -> list[nn.Conv2d]:
    """Replace every Conv2d + BatchNorm2d pair of a backbone stage by a folded conv (BN
    becomes Identity); returns the convs in execution order."""
    convs: list[nn.Conv2d] = []
    for block in stage.modules():
        if not isinstance(block, nn.Sequential):
            continue
        children = list(block.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                folded = fold_batchnorm(conv, bn)
                setattr(block, name, folded)
                setattr(block, bn_name, nn.Identity())
                convs.append(folded)
    return convs


def _channel_ranges(model: nn.Module, convs: list[nn.Conv2d], inputs: np.ndarray) -> list[np.ndarray]:
    """Per conv, per output channel: max - min of its (pre-activation) output over `inputs`."""
    lows = [None] * len(convs)
    highs = [None] * len(convs)

    def hook(index: int):
        def record(_module, _args, output: torch.Tensor) -> None:
            low = output.amin(dim=(0, 2, 3))
            high = output.amax(dim=(0, 2, 3))
            lows[index] = low if lows[index] is None else torch.minimum(lows[index], low)
            highs[index] = high if highs[index] is None else torch.maximum(highs[index], high)
        return record

    handles = [conv.register_forward_hook(hook(i)) for i, conv in enumerate(convs)]
    try:
        with torch.no_grad():
            for image in inputs:
                model.body(torch.from_numpy(np.ascontiguousarray(image[None])))
    finally:
        for handle in handles:
            handle.remove()
    return [(high - low).numpy().astype(np.float64) for low, high in zip(lows, highs)]


def equalization_scales(activation_range: np.ndarray, next_conv: nn.Conv2d) -> np.ndarray:
    """s_i for one pair: the activation's channel i is divided by s_i (pure function)."""
    relative_activation = np.maximum(activation_range / activation_range.max(), 1.0 / MAX_UPSCALE)
    if next_conv.groups == next_conv.in_channels == next_conv.out_channels:
        return relative_activation
    weight = next_conv.weight.detach().numpy()
    column_range = np.abs(weight).max(axis=(0, 2, 3)).astype(np.float64)
    relative_weight = np.maximum(column_range / column_range.max(), 1.0 / MAX_UPSCALE)
    return np.clip(np.sqrt(relative_activation / relative_weight), 1.0 / MAX_UPSCALE, MAX_UPSCALE)


def equalize(model: nn.Module, calibration_nchw: np.ndarray) -> nn.Module:
    """A copy of `model` whose backbone is BN-folded and equalized; same outputs up to
    float32 rounding. `calibration_nchw`: [N, 3, H, W] preprocessed images."""
    model = copy.deepcopy(model).eval()
    # Pairs stay inside a stage: a stage's output also feeds the neck, which must not change.
    stages = [_folded_chain(stage) for stage in (model.body.stage1, model.body.stage2, model.body.stage3)]
    ranges = _channel_ranges(model, [conv for stage in stages for conv in stage], calibration_nchw)
    pairs = [(a, b) for stage in stages for a, b in zip(stage, stage[1:])]
    firsts = [conv for stage in stages for conv in stage]
    with torch.no_grad():
        for first, second in pairs:
            activation_range = ranges[firsts.index(first)]
            scales = torch.from_numpy(equalization_scales(activation_range, second)).float()
            first.weight.div_(scales.reshape(-1, 1, 1, 1))
            first.bias.div_(scales)
            if second.groups == second.in_channels:
                second.weight.mul_(scales.reshape(-1, 1, 1, 1))
            else:
                second.weight.mul_(scales.reshape(1, -1, 1, 1))
    return model
