"""Parity of a model file with PyTorch: tensor errors, detection agreement, the verdict.

Pure functions over NumPy arrays; running the files is the caller's business. The
verdict uses the thresholds of featherface.config.PARITY_THRESHOLDS.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featherface.config import FLOAT32_NOISE_FACTOR, NUM_LANDMARKS, OUTPUT_NAMES, ParityThresholds
from featherface.records import DetectionAgreement, OutputError
from featherface.sdk.box_coding import iou_matrix

# A face near the score threshold flips with the tiniest change; the robust agreement
# asks only that clear faces (threshold + margin) survive at (threshold - margin).
ROBUST_MARGIN = 0.1
MATCH_IOU = 0.5  # a face found by both sides: the usual detection criterion


@dataclass(frozen=True)
class Detections:
    """One image's detections in model-input pixels."""

    boxes: np.ndarray  # [K, 4] x1, y1, x2, y2
    scores: np.ndarray  # [K]
    landmarks: np.ndarray  # [K, 10] x, y pairs


def tensor_errors(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict[str, OutputError]:
    """Per output: max and mean absolute error and cosine similarity, over all images."""
    errors = {}
    for name in OUTPUT_NAMES:
        ref = reference[name].astype(np.float64).ravel()
        cand = candidate[name].astype(np.float64).ravel()
        if ref.shape != cand.shape:
            raise ValueError(f"output {name!r}: shape {candidate[name].shape} differs from PyTorch's {reference[name].shape}")
        diff = np.abs(ref - cand)
        finite = bool(np.isfinite(cand).all())
        denom = np.linalg.norm(ref) * np.linalg.norm(cand)
        errors[name] = OutputError(
            max_abs_error=float(diff.max()) if finite else float("inf"),
            mean_abs_error=float(diff.mean()) if finite else float("inf"),
            cosine=float(ref @ cand / denom) if finite and denom > 0 else 0.0,
            finite=finite,
        )
    return errors


def match_detections(reference: Detections, candidate: Detections, iou_threshold: float) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, candidates in descending score: (ref, cand, IoU) triples."""
    if len(reference.boxes) == 0 or len(candidate.boxes) == 0:
        return []
    ious = iou_matrix(reference.boxes, candidate.boxes)
    taken = np.zeros(len(reference.boxes), dtype=bool)
    pairs = []
    for c in np.argsort(-candidate.scores, kind="stable"):
        column = np.where(taken, -1.0, ious[:, c])
        r = int(column.argmax())
        if column[r] >= iou_threshold:
            taken[r] = True
            pairs.append((r, int(c), float(column[r])))
    return pairs


def _subset(d: Detections, keep: np.ndarray) -> Detections:
    return Detections(d.boxes[keep], d.scores[keep], d.landmarks[keep])


def detection_agreement(
    reference: list[Detections], candidate: list[Detections], score_threshold: float, iou_threshold: float = MATCH_IOU
) -> DetectionAgreement:
    """Recall and precision of the candidate's faces against the reference's, over images.

    Both lists hold detections above a floor of `score_threshold - ROBUST_MARGIN`. The
    plain figures compare faces above `score_threshold` on both sides. The robust ones
    ask every clear face (above `score_threshold + ROBUST_MARGIN`) on one side to be
    found above the floor on the other: a face whose score merely crosses the threshold
    (0.5001 -> 0.4999) does not count as lost, a face that vanished does.
    """
    matched = ref_total = cand_total = 0
    robust = {"recall": [0, 0], "precision": [0, 0]}  # [found, total]
    ious: list[float] = []
    landmark_errors: list[float] = []
    for ref, cand in zip(reference, candidate, strict=True):
        ref_plain = _subset(ref, ref.scores > score_threshold)
        cand_plain = _subset(cand, cand.scores > score_threshold)
        pairs = match_detections(ref_plain, cand_plain, iou_threshold)
        matched += len(pairs)
        ref_total += len(ref_plain.scores)
        cand_total += len(cand_plain.scores)
        for r, c, iou in pairs:
            ious.append(iou)
            box = ref_plain.boxes[r]
            size = np.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-6))
            points = np.linalg.norm((ref_plain.landmarks[r] - cand_plain.landmarks[c]).reshape(NUM_LANDMARKS, 2), axis=1)
            landmark_errors.append(float(points.mean() / size))
        for key, clear_side, other in (("recall", ref, cand), ("precision", cand, ref)):
            clear = _subset(clear_side, clear_side.scores > score_threshold + ROBUST_MARGIN)
            robust[key][0] += len(match_detections(other, clear, iou_threshold))
            robust[key][1] += len(clear.scores)
    return DetectionAgreement(
        reference_faces=ref_total,
        candidate_faces=cand_total,
        matched=matched,
        recall=matched / ref_total if ref_total else 1.0,
        precision=matched / cand_total if cand_total else 1.0,
        robust_recall=robust["recall"][0] / robust["recall"][1] if robust["recall"][1] else 1.0,
        robust_precision=robust["precision"][0] / robust["precision"][1] if robust["precision"][1] else 1.0,
        mean_iou=float(np.mean(ious)) if ious else 1.0,
        landmark_error=float(np.mean(landmark_errors)) if landmark_errors else 0.0,
    )


def error_bound(thresholds: ParityThresholds, float32_noise: float) -> float | None:
    """The max abs error allowed on an output whose PyTorch FP32 noise is `float32_noise`."""
    if thresholds.abs_tolerance is None:
        return None
    return max(thresholds.abs_tolerance, FLOAT32_NOISE_FACTOR * float32_noise)


def verdict(
    errors: dict[str, OutputError], agreement: DetectionAgreement, thresholds: ParityThresholds,
    float32_noise: dict[str, float],
) -> tuple[str, list[str]]:
    """("pass" | "fail", reasons): every failed bar, named with its figure."""
    reasons = []
    for name, figures in errors.items():
        bound = error_bound(thresholds, float32_noise[name])
        if not figures.finite:
            reasons.append(f"{name} has non-finite values (overflow?)")
        elif bound is not None and figures.max_abs_error > bound:
            reasons.append(f"{name} max abs error {figures.max_abs_error:.2e} > {bound:.2e}")
    # Judged on the robust figures: with scores packed at the threshold (an untrained
    # network) float32 noise alone flips plain matches; the plain figures are reported.
    if agreement.robust_recall < thresholds.min_recall:
        reasons.append(f"detection recall (robust) {agreement.robust_recall:.3f} < {thresholds.min_recall}")
    if agreement.robust_precision < thresholds.min_precision:
        reasons.append(f"detection precision (robust) {agreement.robust_precision:.3f} < {thresholds.min_precision}")
    return ("fail" if reasons else "pass"), reasons
