"""Parity on the device: the file's outputs on the bundle's golden vectors against the
PyTorch FP32 outputs stored beside them, judged exactly as the converters judged the build
(featherface.verify: the same detections, metrics and verdict).

Bars: featherface.config.PARITY_THRESHOLDS by the file's precision. Tensor bound (fp32):
max(abs_tolerance, FLOAT32_NOISE_FACTOR x the build's recorded torch_fp32_vs_fp64 noise,
from the file's manifest parity record). Detection agreement: both the stored PyTorch
outputs and the file's are decoded with the SDK post-processing at the bundle's deployment
thresholds, in model-input pixels (identity letterbox), down to the robust floor.
"""
from __future__ import annotations

from featherface.config import PARITY_THRESHOLDS
from featherface.records import FileEntry
from featherface.sdk.detector import Detector
from featherface.verify.check import identity_letterboxes, judge, parity_figures
from featherface.verify.golden import Golden, recorded_float32_noise


def fail(reason: str, **figures) -> dict:
    return {"status": "fail", "reasons": [reason], **figures}


def device_parity(detector: Detector, golden: Golden | None, entry: FileEntry) -> dict:
    """{"status": "pass" | "fail", "reasons": [...], figures}: the file on this device
    against PyTorch FP32 on the bundle's golden images."""
    if golden is None:
        return fail("the bundle has no golden vectors: parity cannot be checked on the device")
    precision = entry.precision
    thresholds = PARITY_THRESHOLDS.get(precision)
    if thresholds is None:
        return fail(f"no parity thresholds for precision {precision!r} (known: {', '.join(PARITY_THRESHOLDS)})")
    notes: list[str] = []
    noise = recorded_float32_noise(entry, notes)
    figures = {"precision": precision, "images": list(golden.names), **parity_figures(thresholds, noise)}
    try:
        outputs = detector.infer(golden.inputs)
    except Exception as err:  # a runtime refusing the golden batch is a parity failure, not a crash
        return fail(f"the file failed on the golden inputs: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", **figures)
    letterboxes = identity_letterboxes(detector.spec.input_size, len(golden.inputs))
    try:
        judged = judge(golden.reference, outputs, letterboxes, detector.spec, thresholds, noise)
    except ValueError as err:
        return fail(str(err), **figures)
    judged.images = list(golden.names)
    record = judged.to_json()
    result = {"status": record.pop("status"), "reasons": record.pop("reasons"), "precision": precision, **record}
    if notes:
        result["notes"] = notes
    return result
