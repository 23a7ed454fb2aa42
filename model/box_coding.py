"""Torch twin of `featherface.sdk.box_coding` for training: same conventions, same results,
differentiable encoding of the targets and IoU for matching; priors come from the NumPy code
(featherface.priors) so there is one source of truth. Decoding and NMS happen on the NumPy
side only (the SDK, evaluation and verification).

Conventions (see the NumPy module): priors are normalised cxcywh [A, 4]; boxes are xyxy;
"normalised" means divided by image width (x) and height (y); landmarks are five (x, y).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from featherface import priors as _np_priors
from featherface.config import NUM_LANDMARKS, PRIORS, PriorConfig

__all__ = ["make_priors", "encode_boxes", "encode_landmarks", "iou_matrix"]


def make_priors(
    image_height: int,
    image_width: int,
    config: PriorConfig = PRIORS,
    device: torch.device | str | None = None,
) -> Tensor:
    """Anchors as float32 [A, 4] normalised cxcywh; wraps the NumPy `make_priors`."""
    priors = torch.from_numpy(_np_priors.make_priors(image_height, image_width, config))
    return priors.to(device) if device is not None else priors


def encode_boxes(
    matched: Tensor, priors: Tensor, variances: Sequence[float] = PRIORS.variances
) -> Tensor:
    """Boxes [..., A, 4] as normalised xyxy -> regression targets; inverse of the NumPy `decode_boxes`.

    A box of zero width or height gives -inf, as in RetinaFace's box_utils.encode.
    """
    centre = (matched[..., :2] + matched[..., 2:]) / 2
    size = matched[..., 2:] - matched[..., :2]
    g_c = (centre - priors[:, :2]) / (variances[0] * priors[:, 2:])
    g_wh = torch.log(size / priors[:, 2:]) / variances[1]
    return torch.cat([g_c, g_wh], dim=-1)


def encode_landmarks(
    matched: Tensor, priors: Tensor, variances: Sequence[float] = PRIORS.variances
) -> Tensor:
    """Landmarks [..., A, 10] as normalised (x, y) -> targets; inverse of the NumPy `decode_landmarks`."""
    points = matched.reshape(*matched.shape[:-1], NUM_LANDMARKS, 2)
    encoded = (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return encoded.reshape(matched.shape)


def _float(x: Tensor) -> Tensor:
    """Keep a floating dtype as is; promote integers to float64 (as NumPy does)."""
    return x if x.is_floating_point() else x.to(torch.float64)


def iou_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU [M, K] of xyxy boxes a [M, 4] and b [K, 4]; no "+1"; empty union -> 0."""
    a, b = _float(a), _float(b)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    safe = torch.where(union > 0, union, torch.ones_like(union))
    return torch.where(union > 0, inter / safe, torch.zeros_like(inter))
