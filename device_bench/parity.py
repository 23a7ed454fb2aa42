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
from featherface.records import FileEntry, ParityRecord
from featherface.sdk.detector import Detector
from featherface.verify.check import identity_letterboxes, judge, parity_figures
from featherface.verify.golden import Golden, recorded_float32_noise


def device_parity(detector: Detector, golden: Golden | None, entry: FileEntry) -> ParityRecord:
    """The file on this device against PyTorch FP32 on the bundle's golden images: a failed
    record names why (no golden vectors, no bars for its precision, a runtime error)."""
    precision = entry.precision
    extra = {"precision": precision}  # bench.json's parity names the precision judged
    if golden is None:
        return ParityRecord("fail", ["the bundle has no golden vectors: parity cannot be checked on the device"], extra=extra)
    thresholds = PARITY_THRESHOLDS.get(precision)
    if thresholds is None:
        reason = f"no parity thresholds for precision {precision!r} (known: {', '.join(PARITY_THRESHOLDS)})"
        return ParityRecord("fail", [reason], extra=extra)
    notes: list[str] = []
    noise = recorded_float32_noise(entry, notes)
    figures = parity_figures(thresholds, noise)
    if notes:
        extra["notes"] = notes
    try:
        outputs = detector.infer(golden.inputs)
    except Exception as err:  # a runtime refusing the golden batch is a parity failure, not a crash
        reason = f"the file failed on the golden inputs: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return ParityRecord("fail", [reason], **figures, images=list(golden.names), extra=extra)
    letterboxes = identity_letterboxes(detector.spec.input_size, len(golden.inputs))
    try:
        judged = judge(golden.reference, outputs, letterboxes, detector.spec, thresholds, noise)
    except ValueError as err:
        return ParityRecord("fail", [str(err)], **figures, images=list(golden.names), extra=extra)
    judged.images = list(golden.names)
    judged.extra.update(extra)
    return judged
