"""Detection pictures for the report: PyTorch's faces, and each file's faces marked by how
they compare with PyTorch's (Pillow only, so they render without matplotlib)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from featherface.verify.parity import MATCH_IOU, Detections, match_detections

PANEL_WIDTH = 300  # pixels; the report shows several panels side by side
REFERENCE = (30, 110, 255)  # PyTorch's faces, on PyTorch's panel
MATCHED = (0, 170, 0)  # found by both
ONLY_REFERENCE = (230, 0, 0)  # found by PyTorch only: a face the file lost
ONLY_FILE = (255, 150, 0)  # found by the file only


@dataclass(frozen=True)
class Difference:
    """A file's faces against PyTorch's on one image, both above the score threshold."""

    matched: list[int]  # indices into the file's boxes
    only_reference: list[int]  # indices into PyTorch's boxes
    only_file: list[int]  # indices into the file's boxes


def above(detections: Detections, score: float) -> Detections:
    keep = detections.scores > score
    return Detections(detections.boxes[keep], detections.scores[keep], detections.landmarks[keep])


def difference(reference: Detections, candidate: Detections, iou_threshold: float = MATCH_IOU) -> Difference:
    """Matched as the parity check matches (greedy, one-to-one, IoU >= MATCH_IOU)."""
    pairs = match_detections(reference, candidate, iou_threshold)
    ref_hit = {r for r, _, _ in pairs}
    file_hit = {c for _, c, _ in pairs}
    return Difference(
        sorted(file_hit),
        [i for i in range(len(reference.boxes)) if i not in ref_hit],
        [i for i in range(len(candidate.boxes)) if i not in file_hit],
    )


def _canvas(image_rgb: np.ndarray) -> tuple[Image.Image, float]:
    scale = PANEL_WIDTH / image_rgb.shape[1]
    size = (PANEL_WIDTH, max(1, round(image_rgb.shape[0] * scale)))
    return Image.fromarray(image_rgb).resize(size, Image.Resampling.BILINEAR), scale


def _boxes(draw: ImageDraw.ImageDraw, boxes: np.ndarray, scale: float, colour: tuple[int, int, int]) -> None:
    for box in boxes:
        draw.rectangle(tuple(float(v) * scale for v in box), outline=colour, width=2)


def reference_panel(image_rgb: np.ndarray, reference: Detections) -> Image.Image:
    canvas, scale = _canvas(image_rgb)
    _boxes(ImageDraw.Draw(canvas), reference.boxes, scale, REFERENCE)
    return canvas


def file_panel(image_rgb: np.ndarray, reference: Detections, candidate: Detections, diff: Difference) -> Image.Image:
    """The file's faces in green (matched) or orange (file only), lost ones in red."""
    canvas, scale = _canvas(image_rgb)
    draw = ImageDraw.Draw(canvas)
    _boxes(draw, candidate.boxes[diff.matched], scale, MATCHED)
    _boxes(draw, candidate.boxes[diff.only_file], scale, ONLY_FILE)
    _boxes(draw, reference.boxes[diff.only_reference], scale, ONLY_REFERENCE)
    return canvas


def jpeg(image: Image.Image) -> bytes:
    """Photos as JPEG: a tenth of a PNG's size, and the report embeds many."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
