"""PyTorch -> Core ML ML Program (.mlpackage) from the traced network, for the A14.

coremltools has no ONNX front end any more, so Core ML files come from the traced torch
graph. Compute precision FP16 is Core ML's default; FP32 is offered for reference. The
image-input variant takes camera frames directly: a BGR image type whose bias subtracts
the mean, so an iOS app writes no pre-processing of its own. Compressed files (INT8 or
6-bit palettized weights, experimental INT8 activations) are made from the saved FP16 one.
"""
from __future__ import annotations

import os
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from featherface.config import CHANNEL_ORDER, IMAGE_INPUT_NAME, INPUT_NAME, MEAN_BGR, OUTPUT_NAMES, InputSize
from featherface.records import QuantizationRecord

PALETTE_BITS = 6
A8W8_CALIBRATION_IMAGES = 16  # a handful for min/max ranges (each one is a full evaluation by mil_eval)
# Goes into the a8w8 file's manifest record and docs/quantization.md: the issue asks it be said.
A8W8_NOTE = ("On an A14, INT8 activations bring no speed: its Neural Engine computes in FP16 (int8-int8 "
             "throughput came with the A17 Pro and M4), and on the CPU and GPU the quantize/dequantize "
             "pairs only add work. Experimental: for newer chips and for comparison, not a faster A14 file.")
os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' progress bars would flood the build log


def convert_coreml(
    model: nn.Module,
    path: str | Path,
    input_size: int | InputSize,
    *,
    precision: str = "fp16",
    image_input: bool = False,
    metadata: dict[str, str] | None = None,
) -> Path:
    import coremltools as ct

    if precision not in ("fp16", "fp32"):
        raise ValueError(f"Core ML precision must be fp16 or fp32, got {precision!r}")
    size = InputSize.of(input_size)
    example = torch.zeros(1, 3, size.height, size.width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model.eval(), example)
    shape = (1, 3, size.height, size.width)
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


@dataclass(frozen=True)
class Compression:
    """Extra a14 files beyond FP32 / FP16 / image input / weight INT8 (all off by default)."""

    palettize: bool = False  # model_p6.mlpackage
    a8w8: bool = False  # model_a8w8.mlpackage (experimental)
    calibration: Path | None = None  # images (or a WIDER FACE root) for a8w8's activation ranges
    calibration_images: int = A8W8_CALIBRATION_IMAGES


def _kmeans_palette(nbits: int):
    """lut_function: the 2**nbits-entry palette of one tensor by exact 1-D k-means.

    coremltools' mode="kmeans" uses this same exact clustering (its bundled kmeans1d) only for
    FP16 tensors of 10,000+ elements and needs scikit-learn (not a dependency here) for the
    smaller ones; calling it for every tensor keeps the result exact and deterministic.
    """
    from coremltools._deps import kmeans1d

    def palette(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # float32: numpy 2.3.5's np.unique can repeat values of an unsorted float16 array
        values, inverse, counts = np.unique(weight.reshape(-1).astype(np.float32), return_inverse=True, return_counts=True)
        clusters = min(len(values), 1 << nbits)
        result = kmeans1d.cluster(values, clusters, weights=counts)
        lut = np.zeros(1 << nbits, weight.dtype)  # unused entries when a tensor has few values
        lut[:clusters] = result.centroids
        return lut, np.asarray(result.clusters, np.uint8)[inverse.reshape(-1)]

    return palette


def palettize_weights(source: str | Path, path: str | Path, nbits: int = PALETTE_BITS) -> Path:
    """Weights as nbits-bit indices into one k-means palette per tensor (iOS16
    constexpr_lut_to_dense); still computes in FP16. Per-grouped-channel palettes (iOS18)
    were measured and not adopted: no consistent gain (docs/quantization.md, "Core ML compression")."""
    import coremltools as ct
    from coremltools.optimize.coreml import OpPalettizerConfig, OptimizationConfig
    from coremltools.optimize.coreml import palettize_weights as palettize

    mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    config = OptimizationConfig(global_config=OpPalettizerConfig(mode="custom", lut_function=_kmeans_palette(nbits)))
    compressed = palettize(mlmodel, config)
    compressed.user_defined_metadata.update(dict(mlmodel.user_defined_metadata))
    return save_mlpackage(compressed, path)


def palette_record(nbits: int = PALETTE_BITS) -> QuantizationRecord:
    """The manifest's `quantization` entry of a palettized file."""
    return QuantizationRecord("coremltools palettize_weights",
                              kept_float=["weights of 2048 elements or fewer (coremltools' weight_threshold)"],
                              details={"weights": f"{nbits}-bit palette per tensor, exact 1-D k-means", "activations": "fp16"})


def activation_ranges(source: str | Path, samples: np.ndarray) -> dict[str, dict[str, float]]:
    """{tensor name: {"rmin", "rmax"}} over every sample, from our MIL evaluator.

    Tensors joined by a concat share one range, as coremltools does, so the concat needs no
    requantization.
    """
    import coremltools as ct
    from coremltools.optimize.coreml.experimental._model_debugger import ModelDebugger
    from coremltools.optimize.coreml.experimental._post_training_quantization import (
        _adjust_concat_surrounding_activation_stats,
    )

    from .mil_eval import run_mlpackage

    ranges: dict[str, dict[str, float]] = {}

    def observe(name: str, value: np.ndarray) -> None:
        if value.dtype.kind != "f":
            return
        low, high = float(value.min()), float(value.max())
        seen = ranges.setdefault(name, {"rmin": low, "rmax": high})
        seen["rmin"], seen["rmax"] = min(seen["rmin"], low), max(seen["rmax"], high)

    for sample in samples:
        run_mlpackage(source, {INPUT_NAME: sample[None]}, observe)
    mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    _adjust_concat_surrounding_activation_stats(ModelDebugger(mlmodel)._get_concat_op_info(), ranges)
    return ranges


def quantize_activations_int8(source: str | Path, path: str | Path, samples: np.ndarray) -> Path:
    """Experimental INT8 activations (per tensor, asymmetric; iOS17 quantize/dequantize pairs
    around conv, pooling and add) plus INT8 weights per channel, from the FP16 package.

    coremltools.optimize.coreml.linear_quantize_activations calibrates through Core ML
    predictions, which exist only on macOS, and in 9.0 keeps only the last sample's range per
    tensor. Its graph passes are used as they are; the ranges come from `activation_ranges`
    (our evaluator, min/max over all `samples`, [N, 3, S, S] preprocessed inputs).
    """
    import coremltools as ct
    from coremltools.optimize.coreml import (
        OpLinearQuantizerConfig,
        OptimizationConfig,
        linear_quantize_activations,
        linear_quantize_weights,
    )

    mlmodel = ct.models.MLModel(str(source), skip_model_load=True)
    ranges = activation_ranges(source, samples)
    feeds = [{INPUT_NAME: sample[None]} for sample in samples]
    # Asymmetric: most activations follow a (leaky) ReLU and would leave half of a symmetric
    # range unused; symmetric failed parity where asymmetric passed (docs/measurements.md).
    config = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear"))
    with calibration_ranges_given(ranges):
        activations = linear_quantize_activations(mlmodel, config, feeds)
    weights = OptimizationConfig(global_config=OpLinearQuantizerConfig(mode="linear_symmetric", granularity="per_channel"))
    compressed = linear_quantize_weights(activations, weights)
    compressed.user_defined_metadata.update(dict(mlmodel.user_defined_metadata))
    return save_mlpackage(compressed, path)


# coremltools 9.0 has no public way to hand linear_quantize_activations ranges measured
# elsewhere: it always calibrates through Core ML predictions (macOS only). Its module-level
# helper below computes them; this is the one place that replaces it, and
# tests/test_coreml_compression.py fails when coremltools renames it or stops calling it.
CALIBRATION_STATS_MODULE = "coremltools.optimize.coreml._post_training_quantization"
CALIBRATION_STATS_FUNCTION = "_get_activation_calibration_stats"


@contextmanager
def calibration_ranges_given(ranges: dict[str, dict[str, float]]) -> Iterator[None]:
    """Within the block, coremltools' activation calibration returns `ranges` ({tensor name:
    {"rmin", "rmax"}}) instead of running Core ML; the original is restored afterwards."""
    import importlib

    module = importlib.import_module(CALIBRATION_STATS_MODULE)
    original = getattr(module, CALIBRATION_STATS_FUNCTION, None)
    if original is None:
        raise RuntimeError(f"{CALIBRATION_STATS_MODULE}.{CALIBRATION_STATS_FUNCTION} is gone: this coremltools "
                           "changed its private calibration route; the a8w8 file cannot be made")
    setattr(module, CALIBRATION_STATS_FUNCTION, lambda *_args, **_kwargs: ranges)
    try:
        yield
    finally:
        setattr(module, CALIBRATION_STATS_FUNCTION, original)


def a8w8_record(calibration: Path, images: int) -> QuantizationRecord:
    """The manifest's `quantization` entry of the experimental INT8-activation file."""
    from featherface.quantization.calibration import calibration_record

    return QuantizationRecord(
        "coremltools linear_quantize_activations + linear_quantize_weights (ranges from mil_eval)",
        kept_float=["ops other than conv, pooling and add (activations fp16)"],
        details={"weights": "int8 per channel, symmetric", "activations": "int8 per tensor, asymmetric, min/max",
                 "calibration": calibration_record(calibration, images),
                 "minimum_deployment_target": "iOS17", "note": A8W8_NOTE})


def save_mlpackage(mlmodel, path: str | Path) -> Path:
    """Save beside the target, then move into place (an .mlpackage is a directory)."""
    path = Path(path)
    staging = path.with_name(f".partial-{path.name}")  # coremltools insists on the suffix
    shutil.rmtree(staging, ignore_errors=True)
    mlmodel.save(str(staging))
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
    return path
