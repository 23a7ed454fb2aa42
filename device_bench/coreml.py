"""Core ML on macOS: an .mlpackage opened at a chosen compute unit (CPU_ONLY, CPU_AND_GPU,
CPU_AND_NE, ALL), including the image-input variant of a14 bundles.

Code path only where it was written (Linux): it runs on a Mac with coremltools installed.
iPhones: see device_bench/ios (Swift harness).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from featherface.records import FileEntry
from featherface.sdk.runtimes import CoreMLRuntime, FloatInput


class CoreMLImageRuntime(FloatInput):
    """An .mlpackage whose input is an image (Core ML adds the bias = -mean itself).

    The bench feeds prepared NCHW tensors (BGR minus mean) to every file; this one turns
    them back into the 8-bit picture the model expects. The conversion is part of its
    `model_ms`, as it would be for an app holding tensors (an app holding a camera frame
    would hand Core ML the pixel buffer directly).
    """

    input_layout = "NCHW"

    def __init__(self, path: str | Path, compute_units: str, mean_bgr: Sequence[float]) -> None:
        self.inner = CoreMLRuntime(path, None, compute_units)
        self.mean = np.asarray(mean_bgr, np.float32).reshape(3, 1, 1)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from PIL import Image

        results = []
        for image in batch:
            bgr = np.clip(np.rint(image + self.mean), 0, 255).astype(np.uint8)
            rgb = np.ascontiguousarray(bgr[::-1].transpose(1, 2, 0))
            # Core ML takes an RGB PIL image and reorders it to the model's BGR layout.
            results.append(self.inner.model.predict({self.inner.input_name: Image.fromarray(rgb)}))
        return {name: np.concatenate([np.asarray(r[name], np.float32) for r in results]) for name in results[0]}

    def close(self) -> None:
        self.inner.close()


def open_coreml(path: Path, entry: FileEntry, compute_units: str, mean_bgr: Sequence[float]):
    """A runtime over `path` at `compute_units` (tensor or image input, by the manifest entry)."""
    if entry.image_input:
        return CoreMLImageRuntime(path, compute_units, mean_bgr)
    return CoreMLRuntime(path, None, compute_units)
