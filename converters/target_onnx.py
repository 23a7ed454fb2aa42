"""The onnx target: one FP32 ONNX file with a dynamic batch."""
from __future__ import annotations

from featherface.verify.files import ModelFile

from .export import ExportRequest, timed


def convert(request: ExportRequest) -> list[ModelFile]:
    from .onnx_export import export_onnx

    request.progress("exporting ONNX (dynamic batch)")
    path, seconds = timed(lambda: export_onnx(request.model, request.stage / "model.onnx", request.size, metadata=request.metadata))
    return [ModelFile(path, "onnx", "fp32", seconds)]
