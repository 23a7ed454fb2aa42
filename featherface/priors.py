"""RetinaFace's anchors ("priors") in NumPy alone: the one generator that the SDK, the
torch twin for training and the verification core all use (conventions: featherface.sdk.box_coding)."""
from __future__ import annotations

import math

import numpy as np

from featherface.config import PRIORS, InputSize, PriorConfig


def make_priors(image_height: int, image_width: int, config: PriorConfig = PRIORS) -> np.ndarray:
    """Anchors of RetinaFace's PriorBox, as float32 [A, 4] normalised cxcywh.

    Order: level by level; within a level the ceil(H/step) x ceil(W/step) grid row-major
    (row i outer, column j inner); within a cell each min size in `config.min_sizes[k]`.
    Each prior is cx = (j + 0.5) * step / W, cy = (i + 0.5) * step / H,
    w = min_size / W, h = min_size / H. Clipped to [0, 1] only if `config.clip`.
    A = 16800 for 640 x 640 with the default config.
    """
    if image_height <= 0 or image_width <= 0:
        raise ValueError(f"image size must be positive, got {image_height}x{image_width}")
    if len(config.min_sizes) != len(config.steps):
        raise ValueError("config.min_sizes and config.steps must have one entry per level")
    levels = []
    for step, min_sizes in zip(config.steps, config.min_sizes):
        rows, cols = math.ceil(image_height / step), math.ceil(image_width / step)
        sizes = np.asarray(min_sizes, dtype=np.float64)
        cy = (np.arange(rows, dtype=np.float64) + 0.5) * step / image_height
        cx = (np.arange(cols, dtype=np.float64) + 0.5) * step / image_width
        shape = (rows, cols, len(sizes))  # broadcast to [row i, column j, min size]
        level = np.stack(
            [
                np.broadcast_to(cx[None, :, None], shape),
                np.broadcast_to(cy[:, None, None], shape),
                np.broadcast_to(sizes[None, None, :] / image_width, shape),
                np.broadcast_to(sizes[None, None, :] / image_height, shape),
            ],
            axis=-1,
        )
        levels.append(level.reshape(-1, 4))
    priors = np.concatenate(levels, axis=0)
    if config.clip:
        priors = np.clip(priors, 0.0, 1.0)
    return priors.astype(np.float32)


def anchor_count(input_size: int | InputSize, config: PriorConfig = PRIORS) -> int:
    """Anchors of an input (an int N: N x N): ceil(H / step) x ceil(W / step) cells per
    level, times anchors per cell."""
    size = InputSize.of(input_size)
    return sum(math.ceil(size.height / step) * math.ceil(size.width / step) * len(sizes)
               for step, sizes in zip(config.steps, config.min_sizes))
