"""Modulated deformable convolution (DCNv2) written with standard tensor ops.

torchvision is not available here and ONNX gained DeformConv only in opset 19, with
thin converter support. This formulation uses gathers on a zero-padded, channel-last
table and one matrix multiply, keeping every tensor at rank 4 or lower: it exports to
ONNX with standard ops, gets through onnx2tf and Core ML (rank <= 5), and was measured
twice as fast as a grid-sample formulation in ONNX Runtime (see shared/docs/measured.md).
Semantics follow torchvision.ops.deform_conv2d: offsets are (dy, dx) pairs per kernel
tap in row-major tap order, bilinear sampling reads zeros outside the feature map.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _tap_offsets(out_w: int, kernel: int, stride: int, padding: int, dilation: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undeformed positions within one output row: tap_y and col_x, each [1, Wo*K]."""
    taps = kernel * kernel
    steps = torch.arange(kernel, dtype=like.dtype, device=like.device) * dilation
    tap_row = steps.reshape(kernel, 1).expand(kernel, kernel).reshape(1, taps)
    tap_col = steps.reshape(1, kernel).expand(kernel, kernel).reshape(1, taps)
    cols = torch.arange(out_w, dtype=like.dtype, device=like.device) * stride - padding
    return tap_row.expand(out_w, taps).reshape(1, -1), (cols.reshape(out_w, 1) + tap_col).reshape(1, -1)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """Modulated deformable 3x3 (or kxk) convolution.

    x [N, C, H, W]; offset [N, 2*K, Ho, Wo] as (dy, dx) per tap; mask [N, K, Ho, Wo]
    (already activated); weight [Cout, C, k, k]. Returns [N, Cout, Ho, Wo].
    """
    n, c, h, w = x.shape
    c_out, _, k, _ = weight.shape
    taps = k * k
    out_h, out_w = offset.shape[2], offset.shape[3]

    # Sampling positions as 2-D [N*Ho, Wo*K] tables (rows: image and output row; columns:
    # output column and tap). Every DCN tensor stays 2-D: onnx2tf's NCHW->NHWC layout
    # inference misreads 4-D tensors that are not images, and the undeformed positions
    # stay small broadcast pieces that no exporter folds into a per-layer constant table.
    offset_yx = offset.permute(0, 2, 3, 1).reshape(-1, 2)
    rows = torch.arange(n * out_h, device=x.device).reshape(-1, 1)
    row_y = ((rows % out_h) * stride - padding).to(x.dtype)
    tap_y, col_x = _tap_offsets(out_w, k, stride, padding, dilation, x)
    pos_y = offset_yx[:, 0:1].reshape(n * out_h, out_w * taps) + row_y + tap_y
    pos_x = offset_yx[:, 1:2].reshape(n * out_h, out_w * taps) + col_x
    y0, x0 = torch.floor(pos_y), torch.floor(pos_x)
    frac_y, frac_x = pos_y - y0, pos_x - x0

    # Table of the input with a one-pixel zero border: any corner outside the map is
    # clamped onto that border and so reads zero, exactly like torchvision.
    table = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1).reshape(n * (h + 2) * (w + 2), c)
    batch_base = (rows // out_h) * ((h + 2) * (w + 2))  # first table row of each image

    def corner(yy: torch.Tensor, xx: torch.Tensor) -> torch.Tensor:
        # Clamp in float (exact: the values are integers), then index in integers: an
        # FP16 program (Core ML's default) cannot hold row numbers above 2048 exactly.
        row = (torch.clamp(yy, -1.0, float(h)) + 1.0).to(torch.int64)
        col = (torch.clamp(xx, -1.0, float(w)) + 1.0).to(torch.int64)
        index = row * (w + 2) + col + batch_base
        # Gather with the 2-D index as it is: reshaping an integer tensor makes Core ML's
        # FP16 pass round-trip it through fp16. Only the float result is flattened.
        return table[index].reshape(-1, c)  # [N*L, C]

    modulation = mask.permute(0, 2, 3, 1).reshape(n * out_h * out_w * taps, 1)
    wy1, wx1 = frac_y.reshape(-1, 1), frac_x.reshape(-1, 1)
    wy0, wx0 = 1.0 - wy1, 1.0 - wx1
    sampled = (
        corner(y0, x0) * (wy0 * wx0)
        + corner(y0, x0 + 1.0) * (wy0 * wx1)
        + corner(y0 + 1.0, x0) * (wy1 * wx0)
        + corner(y0 + 1.0, x0 + 1.0) * (wy1 * wx1)
    ) * modulation  # [N*Ho*Wo*K, C]

    columns = sampled.reshape(n * out_h * out_w, taps * c)
    kernel = weight.permute(2, 3, 1, 0).reshape(taps * c, c_out)
    out = columns @ kernel
    if bias is not None:
        out = out + bias
    return out.reshape(n, out_h, out_w, c_out).permute(0, 3, 1, 2)


class DeformableConv2d(nn.Module):
    """DCNv2 block of the FeatherFace checkpoints: offset and modulator convs predict
    where and how strongly each tap samples; mask = 2 * sigmoid(modulator), so a
    zero-initialised modulator starts as a plain convolution."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3,
        stride: int = 1, padding: int = 1, dilation: int = 1, bias: bool = False,
    ) -> None:
        super().__init__()
        taps = kernel_size * kernel_size
        self.stride, self.padding, self.dilation = stride, padding, dilation
        conv_args = dict(kernel_size=kernel_size, stride=stride, padding=padding, dilation=dilation)
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, bias=True, **conv_args)
        self.modulator_conv = nn.Conv2d(in_channels, taps, bias=True, **conv_args)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, bias=bias, **conv_args)
        for zero_init in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(zero_init.weight)
            nn.init.zeros_(zero_init.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2.0 * torch.sigmoid(self.modulator_conv(x))
        return deform_conv2d(
            x, offset, mask, self.regular_conv.weight, self.regular_conv.bias,
            self.stride, self.padding, self.dilation,
        )
