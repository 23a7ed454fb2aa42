"""ONNX -> TFLite (FP32, FP16) with onnx2tf; featherface.onnx2tf_tool runs it and handles
its traps, and the gathers lose the negative-index guards their indices never need
(gather_guards). Output order and names may change: the bundle maps outputs by shape, not
by index.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from featherface.config import InputSize
from featherface.onnx2tf_tool import ConversionError, run_onnx2tf

from .gather_guards import drop_gather_guards

__all__ = ["ConversionError", "convert_tflite"]

PRECISION_SUFFIXES = {"fp32": "_float32.tflite", "fp16": "_float16.tflite"}


def convert_tflite(onnx_path: str | Path, out_dir: str | Path, input_size: InputSize, precisions: tuple[str, ...] = ("fp32", "fp16")) -> dict[str, Path]:
    """Convert a static- or dynamic-batch ONNX file to TFLite files `model_<precision>.tflite`."""
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    produced: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as scratch:
        tool_out = run_onnx2tf(onnx_path, input_size, [], Path(scratch))
        for precision in precisions:
            source = tool_out / f"model{PRECISION_SUFFIXES[precision]}"
            if not source.is_file():
                raise ConversionError(f"onnx2tf produced no {precision} file ({source.name})")
            target = out_dir / f"model_{precision}.tflite"
            shutil.move(str(source), target)
            drop_gather_guards(target)
            produced[precision] = target
    return produced
