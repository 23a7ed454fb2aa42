"""The one preprocessing of the SDK, calibration and evaluation: letterbox, BGR, minus mean.

Keeping a single implementation means an INT8 model is calibrated, evaluated and
deployed on exactly the same pixels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from featherface.config import MEAN_BGR

__all__ = ["Letterbox", "letterbox", "normalize", "preprocess", "preprocess_original_size"]

LAYOUTS = ("NCHW", "NHWC")

# PIL bilinear, not nearest or cv2.INTER_LINEAR: when shrinking, PIL widens the filter
# with the scale factor (antialiased), so small faces do not alias; it is also
# deterministic across platforms with numpy + pillow only.
RESAMPLE = Image.Resampling.BILINEAR


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed in the model input, to map coordinates back and forth.

    model = image * scale + pad; the original image is `image_width` x `image_height`.
    """

    scale: float
    pad_x: int
    pad_y: int
    image_width: int
    image_height: int

    def to_image(self, xy: np.ndarray) -> np.ndarray:
        """Model-input pixels -> original-image pixels.

        `xy` holds (x, y) pairs along its last axis, any leading shape: boxes [..., 4]
        as x1, y1, x2, y2 or landmarks [..., 10]. Returns a new float array.
        """
        points = _pairs(xy)
        return ((points - (self.pad_x, self.pad_y)) / self.scale).reshape(np.shape(xy))

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Original-image pixels -> model-input pixels; inverse of `to_image`."""
        points = _pairs(xy)
        return (points * self.scale + (self.pad_x, self.pad_y)).reshape(np.shape(xy))


def _pairs(xy: np.ndarray) -> np.ndarray:
    array = np.asarray(xy)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if array.ndim == 0 or array.shape[-1] % 2:
        raise ValueError(f"expected (x, y) pairs along the last axis, got shape {array.shape}")
    return array.reshape(*array.shape[:-1], -1, 2)


def _check_rgb(image_rgb: np.ndarray) -> tuple[int, int]:
    if not isinstance(image_rgb, np.ndarray) or image_rgb.dtype != np.uint8:
        kind = getattr(image_rgb, "dtype", type(image_rgb).__name__)
        raise ValueError(f"expected an HxWx3 uint8 RGB array (see load_image), got {kind}")
    if image_rgb.ndim != 3 or image_rgb.shape[-1] != 3 or min(image_rgb.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {image_rgb.shape}")
    return image_rgb.shape[0], image_rgb.shape[1]


def _round_half_up(value: float) -> int:
    # Not Python's round(): banker's rounding differs from Java/Swift/C++ ports at .5.
    return int(math.floor(value + 0.5))


def _content_size(height: int, width: int, size: int) -> tuple[int, int, float]:
    """(new_height, new_width, scale) of an image letterboxed into size x size."""
    scale = size / max(height, width)
    new_height = min(size, max(1, _round_half_up(height * scale)))
    new_width = min(size, max(1, _round_half_up(width * scale)))
    return new_height, new_width, scale


def _fill_rgb(mean_bgr: Sequence[float]) -> tuple[int, int, int]:
    blue, green, red = (int(np.clip(_round_half_up(v), 0, 255)) for v in mean_bgr)
    return red, green, blue


def letterbox(
    image_rgb: np.ndarray, size: int, *, mean_bgr: Sequence[float] = MEAN_BGR
) -> tuple[np.ndarray, Letterbox]:
    """Fit an RGB image into a size x size uint8 canvas, keeping its aspect ratio.

    The longer side becomes `size` (scale = size / max(h, w); up- or down-scaled, PIL
    bilinear), placed at the top-left corner (pad_x = pad_y = 0). The rest of the canvas
    is the mean colour (`mean_bgr`, as RGB) so that after mean subtraction the padding is
    zero: the "zero padding bottom/right" of the measured probes (docs/measured.md).
    """
    height, width = _check_rgb(image_rgb)
    if size <= 0:
        raise ValueError(f"letterbox size must be positive, got {size}")
    new_height, new_width, scale = _content_size(height, width, size)
    if (new_height, new_width) == (height, width):
        content = image_rgb
    else:
        resized = Image.fromarray(image_rgb).resize((new_width, new_height), RESAMPLE)
        content = np.asarray(resized)
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[...] = _fill_rgb(mean_bgr)
    canvas[:new_height, :new_width] = content
    return canvas, Letterbox(scale, 0, 0, width, height)


def normalize(
    image_rgb_uint8: np.ndarray,
    mean_bgr: Sequence[float] = MEAN_BGR,
    layout: str = "NCHW",
) -> np.ndarray:
    """RGB uint8 HxWx3 -> float32 [1, 3, H, W] ("NCHW") or [1, H, W, 3] ("NHWC").

    Channels in BGR order minus `mean_bgr`, no scaling: how the RetinaFace-family
    checkpoints were trained (featherface.config.MEAN_BGR).
    """
    _check_rgb(image_rgb_uint8)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    bgr = image_rgb_uint8[..., ::-1].astype(np.float32)
    bgr -= np.asarray(mean_bgr, dtype=np.float32)
    if layout == "NCHW":
        bgr = bgr.transpose(2, 0, 1)
    return np.ascontiguousarray(bgr[None])


def preprocess(
    image_rgb: np.ndarray,
    size: int,
    mean_bgr: Sequence[float] = MEAN_BGR,
    layout: str = "NCHW",
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox to size x size then normalise; returns (input tensor, Letterbox).

    Equal, value for value, to `normalize(letterbox(...))` with the padding exactly 0 (the
    uint8 canvas can only hold the rounded mean), but written straight into the tensor in
    `layout`: no canvas, no transposed copy (half the time on a 1280x1024 frame).
    """
    height, width = _check_rgb(image_rgb)
    if size <= 0:
        raise ValueError(f"letterbox size must be positive, got {size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    new_height, new_width, scale = _content_size(height, width, size)
    content = image_rgb
    if (new_height, new_width) != (height, width):
        content = np.asarray(Image.fromarray(image_rgb).resize((new_width, new_height), RESAMPLE))
    mean = np.asarray(mean_bgr, dtype=np.float32)
    nhwc = layout == "NHWC"
    tensor = np.zeros((1, size, size, 3) if nhwc else (1, 3, size, size), dtype=np.float32)
    for channel in range(3):  # BGR: channel 0 is the image's blue, index 2; one plane at a time is fastest
        plane = tensor[0, :new_height, :new_width, channel] if nhwc else tensor[0, channel, :new_height, :new_width]
        np.subtract(content[..., 2 - channel], mean[channel], out=plane, dtype=np.float32)
    return tensor, Letterbox(scale, 0, 0, width, height)


def preprocess_original_size(
    image_rgb: np.ndarray,
    mean_bgr: Sequence[float] = MEAN_BGR,
    layout: str = "NCHW",
) -> tuple[np.ndarray, Letterbox]:
    """Normalise without resizing: the paper's WIDER FACE protocol (original-size input).

    Returns an identity Letterbox so callers map coordinates the same way either way.
    """
    height, width = _check_rgb(image_rgb)
    return normalize(image_rgb, mean_bgr, layout), Letterbox(1.0, 0, 0, width, height)
