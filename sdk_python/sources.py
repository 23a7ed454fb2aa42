"""Frames to run on: image files, folders of images, video files, cameras.

Videos and cameras need OpenCV (or picamera2 on a Raspberry Pi) when installed; image
files and folders need only pillow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}


class SourceError(ValueError):
    """An input that cannot be opened as images or video."""


@dataclass(frozen=True)
class Frame:
    """One image to detect on: a file path (loaded later), or decoded RGB pixels."""

    name: str  # file path, or "video.mp4#frame=12"
    path: Path | None = None
    rgb: np.ndarray | None = None
    timestamp_ms: float | None = None  # a video's or camera's frame time; None for image files


def image_files(folder: Path) -> list[Path]:
    """Every image file below `folder`, recursively, sorted (a deterministic order)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def spread(paths: list[Path], count: int) -> list[Path]:
    """At most `count` of `paths`, spread evenly from the first to the last."""
    picks = np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)
    return [paths[i] for i in sorted(set(picks))]


def _require_cv2():
    try:
        import cv2
        return cv2
    except ImportError:
        raise SourceError("video and camera input need OpenCV: pip install opencv-python-headless") from None


def video_frames(path: Path | int, name: str) -> Iterator[Frame]:
    cv2 = _require_cv2()
    capture = cv2.VideoCapture(path if isinstance(path, int) else str(path))
    if not capture.isOpened():
        raise SourceError(f"cannot open video {name}")
    try:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                return
            # A file's own time of the frame; a camera (an index) has none worth having: the clock's.
            timestamp_ms = 1000 * time.monotonic() if isinstance(path, int) else capture.get(cv2.CAP_PROP_POS_MSEC)
            yield Frame(f"{name}#frame={index}", rgb=np.ascontiguousarray(bgr[:, :, ::-1]), timestamp_ms=timestamp_ms)
            index += 1
    finally:
        capture.release()


def expand_inputs(inputs: list[str]) -> Iterator[Frame]:
    """Frames of every input in order: folders recursively (sorted), videos frame by frame.

    A missing input raises SourceError; an unreadable image is left for the loader to
    report, so that a folder carries on past it.
    """
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise SourceError(f"no images found in folder {path}")
            yield from (Frame(str(p), path=p) for p in files)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            if not path.is_file():
                raise SourceError(f"video not found: {path}")
            yield from video_frames(path, str(path))
        elif path.exists() or path.suffix.lower() in IMAGE_SUFFIXES:
            yield Frame(str(path), path=path)
        else:
            raise SourceError(f"input not found: {path}")
