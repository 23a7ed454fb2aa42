"""The pi4 target: FP32 and FP16 TFLite through onnx2tf, then (with `request.int8`)
dynamic-range and full INT8 (featherface.quantization)."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from featherface.verify.files import ModelFile

from .export import ExportRequest


def convert(request: ExportRequest) -> list[ModelFile]:
    """Both torch exports (the network and, for INT8, its equalized copy) happen before any
    conversion starts: after them this target no longer touches the network."""
    from .onnx_export import export_onnx
    from .tflite_export import convert_tflite

    model, stage, size, metadata, progress, int8 = request.model, request.stage, request.size, request.metadata, request.progress, request.int8
    with tempfile.TemporaryDirectory(prefix="featherface-onnx-") as scratch_name:
        scratch = Path(scratch_name)
        calibration = equalized_onnx = None
        if int8 is not None:
            from featherface.quantization.pipeline import calibration_inputs, equalized_model

            calibration = calibration_inputs(int8, size, progress)
        progress("exporting ONNX for onnx2tf")
        start = time.perf_counter()
        onnx_path = export_onnx(model, scratch / "model.onnx", size, dynamic_batch=False, simplify=False, metadata=metadata)
        if int8 is not None and int8.equalize:
            progress("cross-layer equalization of the backbone (for full INT8)")
            equalized_onnx = export_onnx(equalized_model(model, calibration), scratch / "equalized.onnx", size, dynamic_batch=False, simplify=False, metadata=metadata)
        progress("converting ONNX -> TFLite FP32/FP16 with onnx2tf")
        files = convert_tflite(onnx_path, stage, size)
        made = [ModelFile(path, "tflite", precision, (time.perf_counter() - start) / len(files)) for precision, path in files.items()]
        if int8 is None:
            return made
        from featherface.quantization.pipeline import build_int8, build_int8_onnx2tf

        start = time.perf_counter()
        if int8.tool == "onnx2tf":
            result = build_int8_onnx2tf(equalized_onnx or onnx_path, files["fp32"], calibration, stage, size, int8, request.accuracy, progress)
            return made + _int8_files(result, time.perf_counter() - start)
        equalized = None
        if equalized_onnx is not None:
            progress("converting the equalized network -> TFLite FP32")
            equalized = convert_tflite(equalized_onnx, scratch / "equalized", size, precisions=("fp32",))["fp32"]
        result = build_int8(files["fp32"], equalized, calibration, stage, int8, request.accuracy, progress)
    return made + _int8_files(result, time.perf_counter() - start)


def _int8_files(result, seconds: float) -> list[ModelFile]:
    return [
        ModelFile(result.dynamic, "tflite", "dynamic_int8", seconds),
        ModelFile(result.full, "tflite", "int8", seconds, quantization=result.record),
    ]
