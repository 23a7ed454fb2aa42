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

from featherface.records import FileEntry, ParityRecord
from featherface.sdk.detector import Detector
from featherface.verify.check import judge_golden
from featherface.verify.golden import Golden


def device_parity(detector: Detector, golden: Golden | None, entry: FileEntry) -> ParityRecord:
    """The file on this device against PyTorch FP32 on the bundle's golden images: a failed
    record names why (no golden vectors, no bars for its precision, a runtime error)."""
    extra = {"precision": entry.precision}  # bench.json's parity names the precision judged
    if golden is None:
        return ParityRecord("fail", ["the bundle has no golden vectors: parity cannot be checked on the device"], extra=extra)
    try:
        outputs = detector.infer(golden.inputs)
    except Exception as err:  # a runtime refusing the golden batch is a parity failure, not a crash
        reason = f"the file failed on the golden inputs: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        return ParityRecord("fail", [reason], images=list(golden.names), extra=extra)
    judged = judge_golden(entry, golden.reference, outputs, detector.spec)
    judged.images = list(golden.names)
    return judged
