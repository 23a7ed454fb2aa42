"""Parity on the device: the file's outputs on the bundle's golden vectors against the
PyTorch FP32 outputs stored beside them, judged exactly as the converters judged the build.

Bars: featherface.config.PARITY_THRESHOLDS by the file's precision. Tensor bound (fp32):
max(abs_tolerance, FLOAT32_NOISE_FACTOR x the build's recorded torch_fp32_vs_fp64 noise,
from the file's manifest parity record). Detection agreement: both the stored PyTorch
outputs and the file's are decoded with the SDK post-processing at the bundle's deployment
thresholds, in model-input pixels (identity letterbox), down to the robust floor.
"""
from __future__ import annotations

import math
from dataclasses import asdict

from featherface.config import OUTPUT_NAMES, PARITY_THRESHOLDS, Thresholds
from featherface.converters.parity import ROBUST_MARGIN, Detections, detection_agreement, error_bound, tensor_errors, verdict
from featherface.sdk.detector import Detector
from featherface.sdk.preprocess import Letterbox

from .targets import Golden


def fail(reason: str, **figures) -> dict:
    return {"status": "fail", "reasons": [reason], **figures}


def float32_noise(entry: dict, notes: list[str]) -> dict[str, float]:
    """PyTorch FP32's error against FP64 recorded by the build for this file (0 if absent)."""
    recorded = (entry.get("parity") or {}).get("torch_fp32_vs_fp64") or {}
    noise = {}
    for name in OUTPUT_NAMES:
        value = recorded.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            noise[name] = float(value)
        else:
            noise[name] = 0.0
    if len(recorded) < len(OUTPUT_NAMES):
        notes.append("the manifest records no torch_fp32_vs_fp64 noise for some outputs; their bound is the abs tolerance")
    return noise


def device_parity(detector: Detector, golden: Golden | None, entry: dict) -> dict:
    """{"status": "pass" | "fail", "reasons": [...], figures}: the file on this device
    against PyTorch FP32 on the bundle's golden images."""
    if golden is None:
        return fail("the bundle has no golden vectors: parity cannot be checked on the device")
    precision = entry.get("precision")
    thresholds = PARITY_THRESHOLDS.get(precision)
    if thresholds is None:
        return fail(f"no parity thresholds for precision {precision!r} (known: {', '.join(PARITY_THRESHOLDS)})")
    notes: list[str] = []
    noise = float32_noise(entry, notes)
    figures = {
        "precision": precision,
        "images": list(golden.names),
        "thresholds": asdict(thresholds),
        "error_bounds": {name: error_bound(thresholds, noise[name]) for name in OUTPUT_NAMES},
        "torch_fp32_vs_fp64": noise,
    }
    try:
        outputs = detector.infer(golden.inputs)
    except Exception as err:  # a runtime refusing the golden batch is a parity failure, not a crash
        return fail(f"the file failed on the golden inputs: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", **figures)
    try:
        errors = tensor_errors(golden.reference, outputs)
    except ValueError as err:
        return fail(str(err), **figures)
    deploy = detector.spec.thresholds
    floor = Thresholds(score=deploy.score - ROBUST_MARGIN, nms_iou=deploy.nms_iou, top_k=deploy.top_k)
    size = detector.spec.input_size
    identity = Letterbox(1.0, 0, 0, size, size)
    count = len(golden.inputs)
    reference = [Detections(*detector.decode_arrays(golden.reference, i, identity, floor)) for i in range(count)]
    candidate = [Detections(*detector.decode_arrays(outputs, i, identity, floor)) for i in range(count)]
    agreement = detection_agreement(reference, candidate, deploy.score)
    status, reasons = verdict(errors, agreement, thresholds, noise)
    result = {"status": status, "reasons": reasons, **figures, "tensor": errors, "detections": agreement}
    if notes:
        result["notes"] = notes
    return result

