"""The one preprocessing of the SDK, calibration and evaluation: letterbox, BGR, minus mean.

Keeping a single implementation means an INT8 model is calibrated, evaluated and
deployed on the same pixels. `FrameWriter` is the same letterbox for a stream of frames:
straight into one reused input tensor, already in the runtime's dtype.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from featherface.config import MEAN_BGR, InputSize

__all__ = ["FrameWriter", "Letterbox", "RESIZERS", "content_size", "fill_rgb", "letterbox", "normalize", "preprocess",
           "preprocess_original_size", "resize_rgb"]

LAYOUTS = ("NCHW", "NHWC")


def _resize_pillow(image_rgb: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    # Bilinear with the filter widened by the scale factor when shrinking (antialiased).
    return np.asarray(Image.fromarray(image_rgb).resize((width, height), Image.Resampling.BILINEAR))


def _resize_opencv(image_rgb: np.ndarray, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
    import cv2

    # Shrinking by k >= 2: first INTER_AREA by the whole factor k, a k x k box average (OpenCV's
    # fast path only for whole factors; any other is many times slower than Pillow), on the
    # image less its last rows and columns beyond a multiple of k (under k pixels, so a
    # 0.1 % stretch at most); then INTER_LINEAR the rest of the way, a factor under 2.
    # Together an antialiased shrink like Pillow's widened bilinear.
    source_height, source_width = image_rgb.shape[:2]
    factor = min(source_width // width, source_height // height)
    with _one_thread(cv2):
        if factor >= 2:
            cropped = image_rgb[: source_height - source_height % factor, : source_width - source_width % factor]
            image_rgb = cv2.resize(cropped, (cropped.shape[1] // factor, cropped.shape[0] // factor), interpolation=cv2.INTER_AREA)
            if image_rgb.shape[:2] == (height, width):
                if out is None:
                    return image_rgb
                out[...] = image_rgb
                return out
        return cv2.resize(image_rgb, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)


def _opencv():
    """The cv2 module, or None where OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


@contextmanager
def _one_thread(cv2) -> Iterator[None]:
    """OpenCV on the calling thread alone, its setting restored after: the model's runtime
    owns the cores, a megabyte frame gains little from OpenCV's pool, and a pool that waits
    for a busy core multiplies the time (docs/measurements.md, issue 16)."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


# Resizers by name. OpenCV when installed: far faster than Pillow on a camera frame
# (docs/measurements.md), the same faces within the FP32 parity bar (tests/test_camera_shapes.py).
RESIZERS: dict[str, Callable[..., np.ndarray]] = {"opencv": _resize_opencv, "pillow": _resize_pillow}
DEFAULT_RESIZER = "opencv" if _opencv() is not None else "pillow"


def resize_rgb(image_rgb: np.ndarray, width: int, height: int, resizer: str | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """HxWx3 uint8 -> height x width x 3 uint8 with `resizer` (default: DEFAULT_RESIZER),
    into `out` when given and the resizer can (OpenCV; Pillow always returns a new array)."""
    name = resizer or DEFAULT_RESIZER
    if name not in RESIZERS:
        raise ValueError(f"resizer must be one of {sorted(RESIZERS)}, got {name!r}")
    return RESIZERS[name](image_rgb, width, height, out)


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
    return array.reshape(*array.shape[:-1], array.shape[-1] // 2, 2)  # explicit: zero rows reshape too


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


def content_size(height: int, width: int, size: int | InputSize) -> tuple[int, int, float]:
    """(new_height, new_width, scale) of a height x width image letterboxed into `size`:
    scale = min(input width / width, input height / height), so the image fits whole."""
    size = InputSize.of(size)
    scale = min(size.width / width, size.height / height)
    new_height = min(size.height, max(1, _round_half_up(height * scale)))
    new_width = min(size.width, max(1, _round_half_up(width * scale)))
    return new_height, new_width, scale


def _fitted(image_rgb: np.ndarray, size: int | InputSize, resizer: str | None,
            out: np.ndarray | None = None) -> tuple[np.ndarray, Letterbox]:
    """The image resized to its letterboxed content size (into `out` if it has that shape), and the letterbox."""
    height, width = _check_rgb(image_rgb)
    new_height, new_width, scale = content_size(height, width, size)
    content = image_rgb
    if (new_height, new_width) != (height, width):
        reusable = out is not None and out.shape == (new_height, new_width, 3) and out.flags.writeable
        out = out if reusable else None  # Pillow's arrays are read-only
        content = resize_rgb(image_rgb, new_width, new_height, resizer, out)
    return content, Letterbox(scale, 0, 0, width, height)


def fill_rgb(mean_bgr: Sequence[float] = MEAN_BGR) -> tuple[int, int, int]:
    """The RGB colour whose pixels become 0 after subtracting `mean_bgr`: the letterbox
    padding, which training crops use too."""
    blue, green, red = (int(np.clip(_round_half_up(v), 0, 255)) for v in mean_bgr)
    return red, green, blue


def letterbox(
    image_rgb: np.ndarray, size: int | InputSize, *, mean_bgr: Sequence[float] = MEAN_BGR, resizer: str | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """Fit an RGB image into a uint8 canvas of `size` (an int N: N x N), keeping its aspect ratio.

    Scaled by min(input width / width, input height / height) (up or down, `resize_rgb`),
    placed at the top-left corner (pad_x = pad_y = 0). The rest of the canvas is the mean
    colour (`mean_bgr`, as RGB) so that after mean subtraction the padding is zero: the
    "zero padding bottom/right" of the measured probes (../shared/docs/measured.md).
    """
    content, box = _fitted(image_rgb, size, resizer)
    size = InputSize.of(size)
    canvas = np.empty((size.height, size.width, 3), dtype=np.uint8)
    canvas[...] = fill_rgb(mean_bgr)
    canvas[: content.shape[0], : content.shape[1]] = content
    return canvas, box


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
    size: int | InputSize,
    mean_bgr: Sequence[float] = MEAN_BGR,
    layout: str = "NCHW",
    resizer: str | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox into `size` (an int N: N x N) then normalise; returns (input tensor, Letterbox).

    Equal, value for value, to `normalize(letterbox(...))` with the padding exactly 0 (the
    uint8 canvas can only hold the rounded mean), but written straight into a new float32
    tensor in `layout`: no canvas, no transposed copy.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    content, box = _fitted(image_rgb, size, resizer)
    size = InputSize.of(size)
    nhwc = layout == "NHWC"
    shape = (1, size.height, size.width, 3) if nhwc else (1, 3, size.height, size.width)
    tensor = np.zeros(shape, dtype=np.float32)
    _write_planes(content, tensor[0] if nhwc else tensor[0].transpose(1, 2, 0), np.asarray(mean_bgr, dtype=np.float32))
    return tensor, box


def _write_planes(content: np.ndarray, hwc: np.ndarray, mean: np.ndarray) -> None:
    """content (RGB uint8) minus the mean into the top-left of `hwc` (a BGR float view),
    one channel at a time (the fastest in NumPy, for either layout)."""
    height, width = content.shape[:2]
    for channel in range(3):  # BGR: channel 0 is the image's blue, index 2
        np.subtract(content[..., 2 - channel], mean[channel], out=hwc[:height, :width, channel], dtype=np.float32)


class FrameWriter:
    """Letterboxes frames into one reused input tensor in the runtime's layout and dtype.

    The tensor is the same array on every call (valid until the next one), and so are the
    resized frame and the channel planes: a stream of frames allocates nothing (a fresh
    megabyte costs page faults that cost more than the resize). Only the content is
    rewritten; the padding is refilled when the content size changes. Normalising is a table
    lookup: the 256 possible values of each channel minus its mean, put through `quantize`
    (the runtime's float -> input dtype; None: float32), so the tensor holds bit for bit
    `quantize(preprocess(frame))` with no float copy in between. For an NHWC input with
    OpenCV installed: split into planes, one LUT per plane (BGR order), merged into the
    tensor; otherwise NumPy's take per channel.
    """

    def __init__(self, size: InputSize, mean_bgr: Sequence[float], layout: str, dtype: np.dtype = np.float32,
                 quantize: Callable[[np.ndarray], np.ndarray] | None = None, resizer: str | None = None) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.size, self.layout, self.resizer = size, layout, resizer
        nhwc = layout == "NHWC"
        self.tensor = np.empty((1, size.height, size.width, 3) if nhwc else (1, 3, size.height, size.width), np.dtype(dtype))
        self._hwc = self.tensor[0] if nhwc else self.tensor[0].transpose(1, 2, 0)
        quantize = quantize or (lambda x: np.asarray(x, dtype=np.float32))
        levels = np.arange(256, dtype=np.float32)[:, None] - np.asarray(mean_bgr, dtype=np.float32)
        self._table = np.ascontiguousarray(quantize(levels), dtype=self.tensor.dtype)  # [256, 3]: value -> input, per BGR channel
        self._padding = np.asarray(quantize(np.zeros(3, np.float32)), dtype=self.tensor.dtype)
        self._cv2 = _opencv() if nhwc else None  # OpenCV writes channel-interleaved rows only
        self._content: tuple[int, int] | None = None
        self._resized: np.ndarray | None = None
        self._planes: list[np.ndarray] = []  # R, G, B of the content, then B, G, R looked up
        self._tables = [np.ascontiguousarray(self._table[:, channel]).reshape(1, 256) for channel in range(3)]

    def write(self, image_rgb: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """(the input tensor holding `image_rgb` letterboxed, its letterbox)."""
        content, box = _fitted(image_rgb, self.size, self.resizer, self._resized)
        if content is not image_rgb:
            self._resized = content
        height, width = shape = content.shape[:2]
        if shape != self._content:
            self._hwc[...] = self._padding
            self._content = shape
        target = self._hwc[:height, :width]
        if self._cv2 is not None:
            cv2 = self._cv2
            if not self._planes or self._planes[0].shape != shape:
                self._planes = [np.empty(shape, np.uint8) for _ in range(3)] + [np.empty(shape, self.tensor.dtype) for _ in range(3)]
            rgb, looked_up = self._planes[:3], self._planes[3:]
            with _one_thread(cv2):  # each call writes into the buffer given (its result is that buffer)
                rgb = cv2.split(content, rgb)
                looked_up = [cv2.LUT(rgb[2 - channel], self._tables[channel], dst=looked_up[channel])
                             for channel in range(3)]  # BGR: channel 0 is the image's blue, plane 2
                written = cv2.merge(looked_up, dst=target)
            if not np.may_share_memory(written, self.tensor):  # OpenCV gave a new array instead
                target[...] = written
        else:
            for channel in range(3):  # BGR: channel 0 is the image's blue, index 2
                np.take(self._table[:, channel], content[..., 2 - channel], out=target[..., channel], mode="clip")
        return self.tensor, box


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
