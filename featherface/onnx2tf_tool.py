"""onnx2tf 1.28.8 run as a subprocess in a scratch directory: the one place that starts it
(ONNX -> TFLite in featherface.converters, full INT8 in featherface.quantization).

onnx2tf 1.28.8 traps handled here (shared/docs/measured.md and the converters issue):
- it runs the `onnxsim` executable from PATH and silently produces wrong outputs when it
  is missing: we put this interpreter's bin directory first on PATH and check it is there;
- it downloads a sample-image file from the internet even for FP32: we write our own
  (deterministic, seeded) file of that name into its working directory first;
- it overwrites its input ONNX: it gets a copy;
- dynamic-batch ONNX needs `-ois` to fix the shape;
- `-cotof` never changes its exit code: we never rely on it and check the final files.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from featherface.config import INPUT_NAME, InputSize

# onnx2tf looks for exactly this file in its working directory before downloading it.
ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"


class ConversionError(RuntimeError):
    """A converter failed; the message carries the tail of its log."""


def _tool_environment() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "onnxsim").exists():
        raise ConversionError(
            f"onnxsim is not installed beside {sys.executable}; onnx2tf silently produces "
            "wrong outputs without it (pip install onnxsim)"
        )
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_onnx2tf(onnx_path: Path, input_size: int | InputSize, extra_args: list[str], work_dir: Path) -> Path:
    """Run onnx2tf on a copy of `onnx_path` in `work_dir`; returns its output directory."""
    input_size = InputSize.of(input_size)
    model_copy = work_dir / "model.onnx"
    shutil.copyfile(onnx_path, model_copy)
    # Only a dummy input for onnx2tf's own shape checks (never calibration data: INT8
    # always gets our calibration set through -cind).
    np.save(work_dir / ONNX2TF_SAMPLE_FILE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    out_dir = work_dir / "out"
    command = [
        str(Path(sys.executable).parent / "onnx2tf"),
        "-i", str(model_copy), "-o", str(out_dir),
        "-ois", f"{INPUT_NAME}:1,3,{input_size.height},{input_size.width}",
        "-v", "error",
        *extra_args,
    ]
    log_path = work_dir / "onnx2tf.log"
    with open(log_path, "w") as log:
        status = subprocess.run(command, cwd=work_dir, env=_tool_environment(), stdout=log, stderr=subprocess.STDOUT).returncode
    if status != 0 or not out_dir.is_dir():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise ConversionError(f"onnx2tf failed (exit {status}) on {onnx_path.name}:\n{tail}")
    return out_dir
