"""INT8 TFLite files from a float TFLite file with ai-edge-quantizer (the default tool).

ai-edge-quantizer's moving-average min/max calibration loses less AP than onnx2tf's global
min/max (docs/measurements.md, shared/docs/measured.md), which stays available through
`featherface.quantization.onnx2tf_int8`. Boxes, scores and landmarks stay three output
tensors with their own scales.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featherface.atomic import atomic_path
from featherface.config import INPUT_NAME

SIGNATURE = "serving_default"
GRANULARITIES = ("channel", "tensor")


@dataclass(frozen=True)
class Int8Recipe:
    """What to quantize: `full` (INT8 weights and activations) or `dynamic` (INT8 weights,
    activations quantized on the fly), weight scales per channel or per tensor, and the op
    scopes (output tensor names) kept in float."""

    mode: str = "full"
    weight_granularity: str = "channel"
    float_scopes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.mode not in ("full", "dynamic"):
            raise ValueError(f"INT8 mode must be 'full' or 'dynamic', got {self.mode!r}")
        if self.weight_granularity not in GRANULARITIES:
            raise ValueError(f"weight granularity must be one of {GRANULARITIES}, got {self.weight_granularity!r}")


def with_signature(float_path: Path) -> bytes:
    """The float file with a `serving_default` signature: ai-edge-quantizer calibrates
    through signatures, and onnx2tf 1.28.8 writes TFLite files without one."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(float_path))
    if model.signatureDefs:
        return Path(float_path).read_bytes()
    subgraph = model.subgraphs[0]

    def tensor_map(index: int) -> schema.TensorMapT:
        entry = schema.TensorMapT()
        name = subgraph.tensors[index].name
        entry.name = name.decode() if isinstance(name, bytes) else name
        entry.tensorIndex = index
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = SIGNATURE
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(i) for i in subgraph.inputs]
    signature.outputs = [tensor_map(i) for i in subgraph.outputs]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _scope_regex(scopes: Iterable[str]) -> str:
    # The quantizer matches re.search against "name;" (ModelExplorer's op scope).
    return "^(?:" + "|".join(re.escape(s) for s in scopes) + ");$"


def _quantizer(float_model: bytes, recipe: Int8Recipe):
    from ai_edge_quantizer import qtyping, quantizer

    granularity = qtyping.QuantGranularity.CHANNELWISE if recipe.weight_granularity == "channel" else qtyping.QuantGranularity.TENSORWISE
    tool = quantizer.Quantizer(float_model)
    if recipe.mode == "full":
        tool.add_static_config(".*", "*", activation_num_bits=8, weight_num_bits=8, weight_granularity=granularity)
    else:
        tool.add_dynamic_config(".*", "*", num_bits=8, granularity=granularity)
    if recipe.float_scopes:
        tool.update_quantization_recipe(_scope_regex(recipe.float_scopes), "*", algorithm_key="no_quantize")
    return tool


def calibrate(float_model: bytes, calibration_nhwc: np.ndarray, threads: int = 2) -> dict:
    """Activation ranges of every tensor (moving-average min/max) over the calibration
    images; reusable for any recipe of the same float file."""
    tool = _quantizer(float_model, Int8Recipe())
    batches = [{INPUT_NAME: calibration_nhwc[i : i + 1]} for i in range(len(calibration_nhwc))]
    # Its tqdm bar has no off switch; the build reports progress itself.
    with contextlib.redirect_stderr(io.StringIO()):
        return tool.calibrate({SIGNATURE: batches}, num_threads=threads)


def quantize(float_model: bytes, out_path: str | Path, recipe: Int8Recipe, ranges: dict | None) -> Path:
    """Write the INT8 file of `recipe` atomically; full INT8 needs `ranges` (calibrate)."""
    if recipe.mode == "full" and not ranges:
        raise ValueError("full INT8 needs calibration ranges")
    tool = _quantizer(float_model, recipe)
    with contextlib.redirect_stderr(io.StringIO()):  # its transformation bar ignores enable_progress_bar
        result = tool.quantize(ranges if recipe.mode == "full" else None, enable_progress_bar=False, enable_progress_report=False)
    with atomic_path(out_path) as tmp:
        Path(tmp).write_bytes(bytes(result.quantized_model))
    return Path(out_path)
