"""Modulated deformable convolution (DCNv2) written with standard tensor ops.

torchvision is not available here and ONNX gained DeformConv only in opset 19, with
thin converter support. Semantics follow torchvision.ops.deform_conv2d: offsets are
(dy, dx) pairs per kernel tap in row-major tap order, bilinear sampling reads zeros
outside the feature map.

The formulation is shaped by what the sampling costs on a CPU: it streams the sampled
values through memory several times, so the fewer and narrower those passes, the faster
(op-by-op measurements in docs/measurements.md, "DCN without the gather tax"):
- project first: one 1x1 convolution turns the input into K*Cout channels (tap t's
  weights at every pixel), so each sample reads Cout values instead of C and the matrix
  multiply runs as an ordinary convolution;
- one gather reads the four bilinear corners of every tap of every output point from a
  zero-padded channel-last table, and one multiply by weights that carry the modulation
  and one sum over those 4*K samples give the output;
- every tensor has rank <= 3 and the position tables are 2-D [points, taps] (onnx2tf's
  NCHW->NHWC inference misreads 4-D tensors that are not images), built from small
  broadcast pieces that no exporter folds into a per-layer constant table.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# The top-left corner of every sample is clamped onto a 2-pixel zero border: a sample
# with y <= -1 or y >= H (x alike) then reads only zeros, exactly torchvision's rule.
BORDER = 2


def _undeformed_positions(
    points: int, out_h: int, out_w: int, kernel: int, stride: int, padding: int, dilation: int, like: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each tap of each output point samples without offset: (y, x), each
    broadcastable to [points, taps] (points in (image, row, column) order)."""
    point = torch.arange(points, device=like.device).reshape(-1, 1)
    steps = torch.arange(kernel, device=like.device) * dilation
    tap_y = steps.repeat_interleave(kernel).reshape(1, -1).to(like.dtype)
    tap_x = steps.repeat(kernel).reshape(1, -1).to(like.dtype)
    row_y = (((point // out_w) % out_h) * stride - padding).to(like.dtype)
    col_x = ((point % out_w) * stride - padding).to(like.dtype)
    return row_y + tap_y, col_x + tap_x


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
    The projection runs at every input pixel: at stride s it does s^2 times the
    multiply-adds of the plain convolution (FeatherFace's DCNs all have stride 1).
    """
    n, c, h, w = x.shape
    c_out, _, k, _ = weight.shape
    taps = k * k
    out_h, out_w = offset.shape[2], offset.shape[3]
    points = n * out_h * out_w

    offset_yx = offset.permute(0, 2, 3, 1).reshape(points, 2 * taps)
    base_y, base_x = _undeformed_positions(points, out_h, out_w, k, stride, padding, dilation, x)
    pos_y, pos_x = offset_yx[:, 0::2] + base_y, offset_yx[:, 1::2] + base_x  # [points, taps]
    y0, x0 = torch.floor(pos_y), torch.floor(pos_x)
    frac_y, frac_x = pos_y - y0, pos_x - x0

    # Table row (image, y, x, tap) holds weight[:, :, tap] @ x[:, y, x] on the bordered map.
    projection = weight.permute(2, 3, 0, 1).reshape(taps * c_out, c, 1, 1)
    table = F.pad(F.conv2d(x, projection), (BORDER,) * 4).permute(0, 2, 3, 1).reshape(-1, c_out)
    row_len = w + 2 * BORDER
    image_len = (h + 2 * BORDER) * row_len * taps
    # Integer index arithmetic in int32 and without divisions: Core ML converts an integer
    # division to a float one, and an FP16 program then rounds row numbers above 2048.
    image = torch.arange(n, dtype=torch.int32, device=x.device).reshape(n, 1).expand(n, out_h * out_w).reshape(points, 1)
    # The cast is not redundant: the ONNX exporter makes this sum int64, which promoted the
    # whole index table (and every gather's indices) to int64.
    first_row = (image * image_len + torch.arange(taps, dtype=torch.int32, device=x.device).reshape(1, -1)).to(torch.int32)
    # Clamp in float (exact: the values are integers), then index in integers: an FP16
    # program (Core ML's default) cannot hold row numbers above 2048 exactly. Integer
    # tensors are never reshaped: Core ML's FP16 pass would round-trip them through fp16.
    row = (torch.clamp(y0, -float(BORDER), float(h)) + BORDER).to(torch.int32)
    col = (torch.clamp(x0, -float(BORDER), float(w)) + BORDER).to(torch.int32)
    top_left = (row * row_len + col) * taps + first_row
    corners = torch.cat((top_left, top_left + taps, top_left + row_len * taps, top_left + (row_len + 1) * taps), dim=1)

    # Bilinear weights of the four corners, the modulation folded into the row weights.
    modulation = mask.permute(0, 2, 3, 1).reshape(points, taps)
    low_y = modulation * (1.0 - frac_y)
    high_y = modulation * frac_y
    corner_weights = torch.cat((low_y * (1.0 - frac_x), low_y * frac_x, high_y * (1.0 - frac_x), high_y * frac_x), dim=1)

    out = (table[corners] * corner_weights.unsqueeze(2)).sum(1)  # [points, Cout]
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
