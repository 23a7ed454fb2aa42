"""PyTorch -> Core ML ML Program (.mlpackage) from the traced network, for the A14.

coremltools has no ONNX front end any more, so Core ML files come from the traced torch
graph. Compute precision FP16 is Core ML's default; FP32 is offered for reference. The
image-input variant takes camera frames directly: a BGR image type whose bias subtracts
the mean, so an iOS app writes no pre-processing of its own.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from featherface.config import CHANNEL_ORDER, INPUT_NAME, MEAN_BGR, OUTPUT_NAMES

IMAGE_INPUT_NAME = "image"
os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars would flood the build log
logging.getLogger("coremltools").setLevel(logging.ERROR)  # int64 -> int32 notices, one per op


def convert_coreml(
    model: nn.Module,
    path: str | Path,
    input_size: int,
    *,
    precision: str = "fp16",
    image_input: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    import coremltools as ct

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Core ML precision must be fp16 or fp32, got {precision!r}")
    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example)
    shape = (1, 3, input_size, input_size)
    if image_input:
        assert CHANNEL_ORDER == "BGR"
        inputs = [ct.ImageType(name=IMAGE_INPUT_NAME, shape=shape, color_layout=ct.colorlayout.BGR,
                               scale=1.0, bias=[-m for m in MEAN_BGR])]
    else:
        inputs = [ct.TensorType(name=INPUT_NAME, shape=shape, dtype=np.float32)]
    mlmodel = ct.convert(
        traced,
        inputs=inputs,
        outputs=[ct.TensorType(name=name, dtype=np.float32) for name in OUTPUT_NAMES],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS15,
    )
    mlmodel.user_defined_metadata.update({k: str(v) for k, v in (metadata or {}).items()})
    return save_mlpackage(mlmodel, path)


def compress_weights_int8(source: str | Path, path: str | Path) -> Path:
    """Weight-only INT8 (per-channel linear): a smaller file that still computes in float."""
    import coremltools as ct
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

    mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel"))
    compressed = linear_quantize_weights(mlmodel, config)
    compressed.user_defined_metadata.update(dict(mlmodel.user_defined_metadata))
    return save_mlpackage(compressed, path)


def save_mlpackage(mlmodel, path: str | Path) -> Path:
    """Save beside the target, then move into place (an .mlpackage is a directory)."""
    path = Path(path)
    staging = path.with_name(f".partial-{path.name}")  # coremltools insists on the suffix
    shutil.rmtree(staging, ignore_errors=True)
    mlmodel.save(str(staging))
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
    return path
