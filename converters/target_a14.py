"""The a14 target: Core ML FP32, FP16, FP16 with image input and INT8 weights, plus the
optional compressed files (`request.compression`: 6-bit palette, INT8 activations)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from featherface.verify.files import ModelFile

from .export import BuildError, ExportRequest, Progress, timed

if TYPE_CHECKING:
    from .coreml_export import Compression


def convert(request: ExportRequest) -> list[ModelFile]:
    from .coreml_export import compress_weights_int8, convert_coreml

    model, stage, size, metadata, progress = request.model, request.stage, request.size, request.metadata, request.progress
    made = []
    for precision in ("fp32", "fp16"):
        progress(f"converting to Core ML {precision.upper()}")
        path, seconds = timed(lambda: convert_coreml(model, stage / f"model_{precision}.mlpackage", size, precision=precision, metadata=metadata))
        made.append(ModelFile(path, "coreml", precision, seconds))
    progress("converting to Core ML FP16 with image input")
    path, seconds = timed(lambda: convert_coreml(model, stage / "model_image_fp16.mlpackage", size, precision="fp16", image_input=True, metadata=metadata))
    made.append(ModelFile(path, "coreml", "fp16", seconds, image_input=True))
    progress("compressing Core ML weights to INT8 (weight-only)")
    path, seconds = timed(lambda: compress_weights_int8(stage / "model_fp16.mlpackage", stage / "model_w8.mlpackage"))
    made.append(ModelFile(path, "coreml", "w8", seconds))
    return made + _compressed(stage, size, progress, request.compression)


def _compressed(stage: Path, size: int, progress: Progress, compression: "Compression | None") -> list[ModelFile]:
    """The optional a14 files, each made from the saved model_fp16.mlpackage."""
    from .coreml_export import a8w8_record, palette_record, palettize_weights, quantize_activations_int8

    if compression is None:
        return []
    made = []
    fp16 = stage / "model_fp16.mlpackage"
    if compression.palettize:
        progress("palettizing Core ML weights to 6 bits (k-means)")
        path, seconds = timed(lambda: palettize_weights(fp16, stage / "model_p6.mlpackage"))
        made.append(ModelFile(path, "coreml", "p6", seconds, quantization=palette_record()))
    if compression.a8w8:
        from featherface.quantization.calibration import calibration_set

        if compression.calibration is None:
            raise BuildError("model_a8w8.mlpackage needs calibration images (Compression.calibration is None)")
        progress(f"experimental INT8 activations: ranges of {compression.calibration_images} images below {compression.calibration}")
        start = time.perf_counter()
        samples = calibration_set(compression.calibration, size, compression.calibration_images, layout="NCHW")
        path = quantize_activations_int8(fp16, stage / "model_a8w8.mlpackage", samples)
        made.append(ModelFile(path, "coreml", "a8w8", time.perf_counter() - start,
                              quantization=a8w8_record(compression.calibration, len(samples))))
    return made
