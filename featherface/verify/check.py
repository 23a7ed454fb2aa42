"""A file's outputs judged against PyTorch's: detections down to the robust floor, tensor
errors, detection agreement and the verdict, as one parity record (build and bench alike)."""
from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import numpy as np

from featherface.config import OUTPUT_NAMES, InputSize, ParityThresholds, Thresholds
from featherface.priors import make_priors
from featherface.records import ParityRecord
from featherface.sdk.detector import ModelSpec
from featherface.sdk.faces import postprocess_arrays
from featherface.sdk.preprocess import Letterbox

from .parity import ROBUST_MARGIN, Detections, detection_agreement, error_bound, tensor_errors, verdict


def robust_floor(thresholds: Thresholds) -> Thresholds:
    """The deployment thresholds with the score lowered by ROBUST_MARGIN (parity.detection_agreement)."""
    return Thresholds(score=thresholds.score - ROBUST_MARGIN, nms_iou=thresholds.nms_iou, top_k=thresholds.top_k)


def identity_letterboxes(size: InputSize, count: int) -> list[Letterbox]:
    """Letterboxes that keep model-input pixels (golden vectors carry no original image)."""
    return [Letterbox(1.0, 0, 0, size.width, size.height)] * count


def detections_of(outputs: dict[str, np.ndarray], letterboxes: Sequence[Letterbox], spec: ModelSpec) -> list[Detections]:
    """Per image of a batch of outputs: detections down to the robust floor of the spec's
    thresholds, in the pixels each letterbox maps back to."""
    size = spec.input_size
    priors = make_priors(size.height, size.width, spec.priors)
    floor = robust_floor(spec.thresholds)
    return [
        Detections(*postprocess_arrays(outputs["loc"][i], outputs["conf"][i], outputs["landmarks"][i],
                                       priors, letterbox, size.height, size.width, floor, spec.priors.variances))
        for i, letterbox in enumerate(letterboxes)
    ]


def parity_figures(thresholds: ParityThresholds, float32_noise: dict[str, float]) -> dict:
    """The bars a file is judged against: its precision's thresholds and each output's bound."""
    return {
        "thresholds": asdict(thresholds),
        "error_bounds": {name: error_bound(thresholds, float32_noise[name]) for name in OUTPUT_NAMES},
        "torch_fp32_vs_fp64": float32_noise,
    }


def judge(
    reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray], letterboxes: Sequence[Letterbox], spec: ModelSpec,
    thresholds: ParityThresholds, float32_noise: dict[str, float], reference_detections: list[Detections] | None = None,
) -> ParityRecord:
    """A file's `outputs` against PyTorch's `reference` on the same images: the verdict, the
    bars and the figures (the caller adds which images and how long the conversion took).

    Both sides are decoded with `spec` through `letterboxes` (`reference_detections`, when
    given, are PyTorch's already decoded). Raises ValueError when an output's shape differs
    from PyTorch's."""
    errors = tensor_errors(reference, outputs)
    if reference_detections is None:
        reference_detections = detections_of(reference, letterboxes, spec)
    agreement = detection_agreement(reference_detections, detections_of(outputs, letterboxes, spec), spec.thresholds.score)
    status, reasons = verdict(errors, agreement, thresholds, float32_noise)
    return ParityRecord(status, reasons, **parity_figures(thresholds, float32_noise), tensor=errors, detections=agreement)
