"""RetinaFace priors, box/landmark coding and NMS in NumPy alone, so the on-device SDK
never needs torch; `featherface.model.box_coding` mirrors it for training.

Conventions used throughout:

* "cxcywh": (centre x, centre y, width, height); priors are always in this form.
* "xyxy": (x1, y1, x2, y2), top-left then bottom-right corner, x2 >= x1, y2 >= y1.
* "normalised": x and widths divided by the image width, y and heights by the image
  height, so the image spans [0, 1] on both axes. Multiply by (W, H, W, H) for pixels.
* Landmarks: 2 x `featherface.config.NUM_LANDMARKS` values per anchor, (x, y) points in
  the order left eye, right eye, nose, left mouth corner, right mouth corner.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from featherface.config import NUM_LANDMARKS, PRIORS
from featherface.priors import make_priors

__all__ = [
    "make_priors",
    "decode_boxes",
    "decode_landmarks",
    "encode_boxes",
    "encode_landmarks",
    "iou_matrix",
    "nms",
]


def decode_boxes(
    loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = PRIORS.variances
) -> np.ndarray:
    """Regression offsets [..., A, 4] -> boxes [..., A, 4] as normalised xyxy.

    `priors` is [A, 4] normalised cxcywh (from `make_priors`). RetinaFace's decode:
    centre = prior_c + loc[:2] * var0 * prior_wh, size = prior_wh * exp(loc[2:] * var1).
    A zero offset gives back the prior box itself.
    """
    loc = np.asarray(loc)
    priors = np.asarray(priors)
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[..., 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1)


def decode_landmarks(
    landm: np.ndarray, priors: np.ndarray, variances: Sequence[float] = PRIORS.variances
) -> np.ndarray:
    """Landmark offsets [..., A, 10] -> points [..., A, 10] as normalised (x, y) pairs.

    Each point = prior_c + landm * var0 * prior_wh, with `priors` [A, 4] normalised cxcywh.
    """
    landm = np.asarray(landm)
    priors = np.asarray(priors)
    points = landm.reshape(*landm.shape[:-1], NUM_LANDMARKS, 2)
    decoded = priors[:, None, :2] + points * variances[0] * priors[:, None, 2:]
    return decoded.reshape(landm.shape)


def encode_boxes(
    matched: np.ndarray, priors: np.ndarray, variances: Sequence[float] = PRIORS.variances
) -> np.ndarray:
    """Boxes [..., A, 4] as normalised xyxy -> regression targets [..., A, 4].

    Exact inverse of `decode_boxes` (RetinaFace's box_utils.encode). A box of zero
    width or height gives -inf, as in the reference; filter degenerate boxes first.
    """
    matched = np.asarray(matched)
    priors = np.asarray(priors)
    centre = (matched[..., :2] + matched[..., 2:]) / 2
    size = matched[..., 2:] - matched[..., :2]
    g_c = (centre - priors[:, :2]) / (variances[0] * priors[:, 2:])
    with np.errstate(divide="ignore"):
        g_wh = np.log(size / priors[:, 2:]) / variances[1]
    return np.concatenate([g_c, g_wh], axis=-1)


def encode_landmarks(
    matched: np.ndarray, priors: np.ndarray, variances: Sequence[float] = PRIORS.variances
) -> np.ndarray:
    """Landmarks [..., A, 10] as normalised (x, y) pairs -> regression targets [..., A, 10].

    Exact inverse of `decode_landmarks` (RetinaFace's box_utils.encode_landm).
    """
    matched = np.asarray(matched)
    priors = np.asarray(priors)
    points = matched.reshape(*matched.shape[:-1], NUM_LANDMARKS, 2)
    encoded = (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])
    return encoded.reshape(matched.shape)


def _float(x: np.ndarray) -> np.ndarray:
    """Keep a floating dtype as is; promote integers to float64."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU [M, K] of xyxy boxes a [M, 4] and b [K, 4] (any common unit).

    Continuous coordinates, no "+1" pixel convention: area = (x2 - x1) * (y2 - y1).
    Pairs whose union is empty get IoU 0.
    """
    a, b = _float(a), _float(b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0).astype(inter.dtype)


def nms(
    boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int = 0
) -> np.ndarray:
    """Greedy non-maximum suppression; returns int64 indices of kept boxes, best first.

    `boxes_xyxy` [K, 4] in any common unit, `scores` [K]. Boxes are visited in
    descending score (stable sort: equal scores keep input order); each kept box drops
    every remaining box whose IoU with it is strictly greater than `iou_threshold`
    (py_cpu_nms semantics without the "+1" pixel convention). `top_k` > 0 stops after
    that many kept boxes; 0 means no cap.
    """
    boxes = _float(boxes_xyxy).reshape(-1, 4)
    scores = _float(scores).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0 and (top_k <= 0 or len(keep) < top_k):
        i, rest = order[0], order[1:]
        keep.append(int(i))
        # np.maximum(., 0), not np.clip: the same values at a fraction of the call overhead,
        # which is what this loop of small arrays pays.
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        union = areas[i] + areas[rest] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)
