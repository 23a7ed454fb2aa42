"""Calibration images for post-training quantization, preprocessed exactly as at inference.

Public reports of INT8 RetinaFace "finding no faces" come from calibrating on pixels the
deployed model never sees (another mean, RGB instead of BGR, stretched instead of
letterboxed). Here calibration goes through `featherface.sdk.preprocess.preprocess`,
the one function the SDK, the evaluator and the parity checks use.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featherface.config import CALIBRATION_IMAGES, InputSize
from featherface.sdk.image_io import ImageError, load_image
from featherface.sdk.preprocess import preprocess
from featherface.sdk.sources import image_files, spread


class CalibrationError(ValueError):
    """No usable calibration set; the message names the directory and why."""


def calibration_record(source: str | Path, images: int) -> dict:
    """The manifest's account of a calibration set (every quantized file's record): where it
    came from, how many images, and that they were prepared as at inference."""
    return {"source": str(source), "images": int(images),
            "preprocessing": "featherface.sdk.preprocess.preprocess (letterbox, BGR, minus mean)"}


def calibration_root(source: str | Path) -> Path:
    """A WIDER FACE root calibrates on its train split; any other directory on its images."""
    source = Path(source)
    if not source.is_dir():
        raise CalibrationError(f"calibration directory not found: {source}")
    train = source / "WIDER_train" / "images"
    if train.is_dir():
        return train
    if (source / "images").is_dir() and source.name == "WIDER_train":
        return source / "images"
    return source


def select_images(source: str | Path, count: int = CALIBRATION_IMAGES) -> list[Path]:
    """`count` image files spread evenly over the sorted files below `source` (deterministic:
    the same directory always gives the same list, whatever the filesystem order)."""
    if count < 1:
        raise CalibrationError(f"the number of calibration images must be at least 1, got {count}")
    root = calibration_root(source)
    files = image_files(root)
    if not files:
        raise CalibrationError(f"no images (*.jpg, *.png, ...) found below {root} for calibration")
    return spread(files, count)


def calibration_batches(paths: list[Path], size: int | InputSize, layout: str = "NHWC") -> Iterator[np.ndarray]:
    """One preprocessed [1, ...] float32 tensor per readable image; unreadable files are
    skipped, and a set with no readable image at all is an error (never a silent fallback
    to a converter's built-in sample images)."""
    yielded = 0
    skipped: list[str] = []
    for path in paths:
        try:
            image = load_image(path)
        except ImageError as err:
            skipped.append(f"{path.name} ({err})")
            continue
        tensor, _ = preprocess(image, size, layout=layout)
        yielded += 1
        yield tensor
    if not yielded:
        where = paths[0].parent if paths else "the calibration directory"
        raise CalibrationError(f"none of the {len(paths)} calibration files below {where} is a readable image: " + "; ".join(skipped[:3]))


def calibration_set(source: str | Path, size: int | InputSize, count: int = CALIBRATION_IMAGES, layout: str = "NHWC") -> np.ndarray:
    """[N, ...] float32 stack of the calibration inputs (N <= count)."""
    return np.concatenate(list(calibration_batches(select_images(source, count), size, layout)))
