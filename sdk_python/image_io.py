"""Load any image (file, PIL image or NumPy array) as HxWx3 uint8 RGB for the detector.

Bad inputs raise `ImageError` with one line naming the input and the problem, never a
Pillow traceback, so a batch job can log the file and move on.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "load_image", "MIN_IMAGE_SIDE"]

# Smaller images cannot be letterboxed meaningfully (and usually mean a decoding bug).
MIN_IMAGE_SIDE = 2

ImageSource = str | os.PathLike | Image.Image | np.ndarray


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message names it and why."""


def load_image(source: ImageSource, *, bgr: bool = False) -> np.ndarray:
    """Return `source` as a C-contiguous HxWx3 uint8 RGB array.

    * Path (str or PathLike): decoded in full (so truncation is caught here, not later),
      EXIF orientation applied, first frame of multi-frame files.
    * PIL image: EXIF orientation applied, then converted like a file.
    * NumPy array: uint8 HxWx3 RGB (BGR, e.g. an OpenCV frame, when `bgr=True`),
      HxW or HxWx1 grayscale, or HxWx4 RGBA/BGRA. May share memory with the input when
      no conversion is needed. `bgr` only concerns arrays; files and PIL images carry
      their own channel order.

    Alpha is dropped, not composited: this is what `cv2.imread(..., IMREAD_COLOR)` does,
    which is how the RetinaFace-family checkpoints were fed during training.
    16-bit samples map to 8 bits by round(v / 257), the exact inverse of the usual
    8 -> 16 bit expansion v * 257 (65535 -> 255, no clipping).

    Raises `ImageError` (a ValueError) for a missing, empty, unreadable, truncated,
    oversized (Pillow's decompression-bomb limit) or smaller than 2x2 image.
    """
    if isinstance(source, np.ndarray):
        return _check_size(_from_array(source, bgr=bgr), "array")
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        return _check_size(_decode(source, name), name)
    if isinstance(source, (str, os.PathLike)):
        return _check_size(_read_file(Path(source)), str(source))
    raise TypeError(
        f"load_image expects a path, a PIL image or a NumPy array, got {type(source).__name__}"
    )


def _read_file(path: Path) -> np.ndarray:
    name = str(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        raise ImageError(f"cannot read image {name}: no such file") from None
    except OSError as exc:  # permission denied, symlink loops, ...
        raise ImageError(f"cannot read image {name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(status.st_mode):
        raise ImageError(f"cannot read image {name}: is a directory")
    if status.st_size == 0:
        raise ImageError(f"cannot read image {name}: empty file (0 bytes)")
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x its pixel limit; a bomb is an error here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return _decode(image, name)
        except ImageError:
            raise
        except UnidentifiedImageError:
            problem = "not an image or an unsupported format"
            if _has_image_signature(path):
                problem = "truncated or corrupt header"
            raise ImageError(f"cannot read image {name}: {problem}") from None
        except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one line
            raise ImageError(f"cannot read image {name}: {_describe(exc)}") from None


# Leading bytes of the formats a camera or phone produces; used only to word errors.
_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"RIFF", b"II*\x00", b"MM\x00*"
)


def _has_image_signature(path: Path) -> bool:
    """Whether the file starts like a known image format (so it is damaged, not text)."""
    try:
        with path.open("rb") as file:
            head = file.read(8)
    except OSError:
        return False
    return head.startswith(_SIGNATURES)


def _decode(image: Image.Image, name: str) -> np.ndarray:
    """Fully decode a PIL image, upright and as RGB; decoder errors become ImageError."""
    try:
        image.load()  # lazy by default: force it so a truncated file fails here
        return _pil_to_rgb(_upright(image))
    except ImageError as exc:  # an unsupported mode: add the name
        raise ImageError(f"cannot read image {name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001
        raise ImageError(f"cannot read image {name}: {_describe(exc)}") from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation; damaged metadata must not cost a decodable photo."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - bad EXIF: keep the pixels as stored
        return image
    return upright if upright is not None else image


def _describe(exc: BaseException) -> str:
    """One short line for a Pillow/decoder exception."""
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return (
            f"image too large, over Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels (raise PIL.Image.MAX_IMAGE_PIXELS if trusted)"
        )
    if isinstance(exc, UnidentifiedImageError):
        return "not an image or an unsupported format"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return exc.strerror.lower()  # permission denied and the like, not a decoder issue
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return "truncated file"
    if "broken data stream" in text.lower():
        return "truncated or corrupt data"
    return f"corrupt or unsupported file ({text})"


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        rgb = image
    elif mode.startswith("I;16") or mode in ("I", "F"):
        gray = _high_depth_to_uint8(np.asarray(image), mode)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=-1))
    elif mode in ("P", "PA"):
        # Via RGBA so a palette transparency entry is honoured (then dropped like alpha).
        rgb = image.convert("RGBA").convert("RGB")
    else:  # L, LA, 1, RGBA, RGBa, RGBX, CMYK, YCbCr, ...: Pillow knows these
        try:
            rgb = image.convert("RGB")
        except ValueError:
            raise ImageError(f"unsupported image mode {mode!r}") from None
    return np.array(rgb, dtype=np.uint8, order="C")


def _high_depth_to_uint8(samples: np.ndarray, mode: str) -> np.ndarray:
    """Scale 16-bit / 32-bit single-channel samples to uint8 without clipping highlights.

    I;16*: fixed range 0..65535. I (int32): Pillow's container for 16-bit files, so
    0..65535 when values fit, otherwise no nominal range exists and the actual min..max
    is stretched. F (float32): 0..1 when values fit, otherwise min..max stretched.
    """
    values = np.nan_to_num(samples.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        scaled = values / 257.0
    elif mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray, *, bgr: bool) -> np.ndarray:
    if array.dtype != np.uint8:
        raise ImageError(
            f"image array must be uint8, got {array.dtype}; convert it first "
            "(e.g. np.clip(a * 255, 0, 255).astype(np.uint8) for floats in 0..1)"
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=-1))
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise ImageError(
            f"image array must be HxWx3 (or HxW gray, HxWx4 with alpha), got shape {array.shape}"
        )
    colour = array[..., :3]
    if bgr:
        colour = colour[..., ::-1]
    return np.ascontiguousarray(colour)


def _check_size(rgb: np.ndarray, name: str) -> np.ndarray:
    height, width = rgb.shape[:2]
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise ImageError(
            f"cannot read image {name}: image too small ({width}x{height}), "
            f"need at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}"
        )
    return rgb
