"""Full INT8 through onnx2tf 1.28.8 (`-oiqt` with our calibration through `-cind`): the
alternative to ai-edge-quantizer, and the route to INT8 input and output tensors.

onnx2tf calibrates with global min/max, which loses more AP than ai-edge-quantizer's
moving average on our networks (docs/quantization.md), so it is not the default.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from featherface.config import INPUT_NAME, InputSize
from featherface.onnx2tf_tool import ConversionError, run_onnx2tf

IO_TYPES = ("float32", "int8")
# onnx2tf's output file names for full INT8, by input/output type.
OUTPUT_FILES = {"float32": "model_full_integer_quant.tflite", "int8": "model_full_integer_quant_with_int8_input_output.tflite"}


def quantize_onnx2tf(onnx_path: Path, out_path: Path, input_size: InputSize, calibration_nhwc: np.ndarray,
                     weight_granularity: str = "channel", io_type: str = "float32") -> Path:
    """Full-INT8 TFLite of an ONNX file, calibrated on `calibration_nhwc` (already
    preprocessed: onnx2tf is told mean 0 and std 1 so it does not normalise again)."""
    if io_type not in IO_TYPES:
        raise ValueError(f"INT8 input/output type must be one of {IO_TYPES}, got {io_type!r}")
    with tempfile.TemporaryDirectory(prefix="onnx2tf-int8-") as scratch_name:
        scratch = Path(scratch_name)
        samples = scratch / "calibration.npy"
        np.save(samples, calibration_nhwc.astype(np.float32))
        extra = [
            "-oiqt", "-qt", f"per-{weight_granularity}",
            "-cind", INPUT_NAME, str(samples), "[[[[0.0,0.0,0.0]]]]", "[[[[1.0,1.0,1.0]]]]",
        ]
        if io_type == "int8":
            extra += ["-iqd", "int8", "-oqd", "int8"]
        tool_out = run_onnx2tf(onnx_path, input_size, extra, scratch)
        produced = tool_out / OUTPUT_FILES[io_type]
        if not produced.is_file():
            raise ConversionError(f"onnx2tf produced no full-INT8 file ({produced.name})")
        refuse_unloadable(produced)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(produced), out_path)
    return out_path


def refuse_unloadable(path: Path) -> None:
    """Open `path` with LiteRT in a child process first: onnx2tf 1.28.8's full-INT8 file of
    v2-ultra corrupts LiteRT's heap when its tensors are allocated ("corrupted size vs.
    prev_size", the process aborts), which in the build's own process would be a crash."""
    probe = "import sys; from ai_edge_litert.interpreter import Interpreter; Interpreter(model_path=sys.argv[1]).allocate_tensors()"
    result = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise ConversionError(f"onnx2tf's full-INT8 file does not load in LiteRT ({last.strip()[:160]}); "
                              "use the default quantizer (ai-edge-quantizer)")
