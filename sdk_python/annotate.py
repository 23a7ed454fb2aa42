"""Draw detections (box, score, five landmarks) on a copy of an image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from featherface.atomic import atomic_path

from .faces import Face

LANDMARK_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 255, 0), (255, 0, 255))


def annotate(image_rgb: np.ndarray, faces: list[Face]) -> Image.Image:
    canvas = Image.fromarray(image_rgb)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 400))
    for face in faces:
        draw.rectangle(face.box, outline=(0, 255, 0), width=width)
        draw.text((face.box[0], max(0.0, face.box[1] - 11)), f"{face.score:.2f}", fill=(0, 255, 0))
        for (x, y), colour in zip(face.landmarks, LANDMARK_COLOURS):
            draw.ellipse((x - width, y - width, x + width, y + width), fill=colour)
    return canvas


def save_annotated(image_rgb: np.ndarray, faces: list[Face], path: str | Path) -> Path:
    """Write the annotated image atomically (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        annotate(image_rgb, faces).save(tmp, format=Image.registered_extensions().get(path.suffix.lower(), "JPEG"))
    return path
