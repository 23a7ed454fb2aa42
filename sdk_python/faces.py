"""Raw network outputs -> faces in the caller's image pixels (score filter, decode, NMS).

`postprocess_arrays` gives plain arrays (evaluation, verification); `faces_from_arrays` wraps
its rows in `Face`s (the Detector).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from featherface.config import NUM_LANDMARKS, Thresholds
from featherface.sdk.box_coding import decode_boxes, decode_landmarks, nms
from featherface.sdk.preprocess import Letterbox

__all__ = ["Face", "faces_from_arrays", "postprocess_arrays"]


@dataclass(frozen=True)
class Face:
    """One detected face, in pixels of the image given to the detector.

    box: (x1, y1, x2, y2), clipped to the image. score: face probability in [0, 1].
    landmarks: five (x, y) points: left eye, right eye, nose, left mouth corner,
    right mouth corner ("left" as seen in the image); not clipped.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...]

    def to_dict(self) -> dict:
        """JSON-ready dict at full float precision (rounding is for the presenter)."""
        return {
            "box": [float(v) for v in self.box],
            "score": float(self.score),
            "landmarks": [[float(x), float(y)] for x, y in self.landmarks],
        }


def faces_from_arrays(
    boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray
) -> list[Face]:
    """Wrap `postprocess_arrays` output rows ([K, 4], [K], [K, 10]) in `Face`s, same order."""
    # tolist(): the same Python floats as float() of each element, without a call per value.
    points = np.asarray(landmarks, dtype=np.float64).reshape(len(scores), NUM_LANDMARKS, 2).tolist()
    rows = np.asarray(boxes, dtype=np.float64).tolist()
    return [
        Face(box=tuple(box), score=score, landmarks=tuple(map(tuple, face_points)))  # type: ignore[arg-type]
        for box, score, face_points in zip(rows, np.asarray(scores, dtype=np.float64).tolist(), points)
    ]


def _rows(array: np.ndarray, width: int, name: str) -> np.ndarray:
    """[A, width] view of an output; a leading batch axis of 1 (runtime outputs) is dropped."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must be [A, {width}] (or [1, A, {width}]), got {array.shape}")
    return array


def postprocess_arrays(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    priors: np.ndarray,
    letterbox: Letterbox,
    input_height: int,
    input_width: int,
    thresholds: Thresholds,
    variances: Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detections as float32 arrays: boxes [K, 4] xyxy, scores [K], landmarks [K, 10].

    `loc` [A, 4], `conf` [A, 2] (softmax probabilities; column 1 is "face"),
    `landmarks` [A, 10] are the raw outputs for `priors` [A, 4] (normalised cxcywh, from
    `make_priors(input_height, input_width)`). Steps: keep score > thresholds.score
    (before decoding, so only survivors are decoded), decode to model-input pixels, NMS
    at thresholds.nms_iou keeping at most thresholds.top_k (0 = all), map back through
    `letterbox`, clip boxes to the image. Rows are sorted by descending score.
    Thresholds and variances come from the bundle's manifest, hence no defaults.
    """
    loc = _rows(loc, 4, "loc")
    conf = _rows(conf, 2, "conf")
    landmarks = _rows(landmarks, 2 * NUM_LANDMARKS, "landmarks")
    priors = _rows(priors, 4, "priors")
    counts = {len(loc), len(conf), len(landmarks), len(priors)}
    if len(counts) != 1:
        raise ValueError(
            f"outputs disagree on the anchor count: loc {len(loc)}, conf {len(conf)}, "
            f"landmarks {len(landmarks)}, priors {len(priors)}"
        )

    kept = np.flatnonzero(conf[:, 1] > thresholds.score)
    if kept.size == 0:
        return (
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 2 * NUM_LANDMARKS), np.float32),
        )
    scores = conf[kept, 1].astype(np.float32)
    pixels = np.array([input_width, input_height], dtype=np.float64)
    boxes = decode_boxes(loc[kept], priors[kept], variances) * np.tile(pixels, 2)
    points = decode_landmarks(landmarks[kept], priors[kept], variances) * np.tile(
        pixels, NUM_LANDMARKS
    )

    order = nms(boxes, scores, thresholds.nms_iou, thresholds.top_k)
    boxes = letterbox.to_image(boxes[order])
    points = letterbox.to_image(points[order])
    limits = np.array([letterbox.image_width, letterbox.image_height] * 2, dtype=np.float64)
    boxes = np.clip(boxes, 0.0, limits)
    return boxes.astype(np.float32), scores[order], points.astype(np.float32)
