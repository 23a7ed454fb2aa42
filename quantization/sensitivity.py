"""Per-layer quantization sensitivity: where the INT8 file departs from the float one.

Both files run on the same calibration images with every intermediate tensor kept; each
op's output is compared by name (the quantizer keeps tensor names). The error of a
tensor accumulates everything upstream, so an op is charged only with what it adds: its
normalised error minus the largest normalised error among its inputs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .graph import Graph


@dataclass(frozen=True)
class LayerError:
    op_index: int
    op: str
    tensor: str
    nmse: float  # mean squared error / mean square of the float tensor
    added_nmse: float  # nmse minus the worst nmse of its inputs: this op's own share

    def to_dict(self) -> dict:
        return asdict(self)


def _all_tensors(path: Path, images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per image: tensor name -> float value (dequantized) of every tensor of the file."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the XNNPACK delegate: delegated ops never write their intermediate tensors.
    interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    (image_input,) = interpreter.get_input_details()
    details = interpreter.get_tensor_details()
    runs = []
    for image in images:
        value = image[None]
        if image_input["dtype"] != np.float32:
            scale, zero_point = image_input["quantization"]
            value = np.clip(np.round(value / scale + zero_point), -128, 127).astype(image_input["dtype"])
        interpreter.set_tensor(image_input["index"], value)
        interpreter.invoke()
        tensors = {}
        for detail in details:
            try:
                raw = interpreter.get_tensor(detail["index"])
            except ValueError:  # tensors without data (e.g. optional inputs)
                continue
            scale, zero_point = detail["quantization"]
            tensors[detail["name"]] = (raw.astype(np.float32) - zero_point) * scale if scale else raw.astype(np.float32)
        runs.append(tensors)
    return runs


def normalised_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    power = float(np.mean(np.square(reference, dtype=np.float64)))
    return float(np.mean(np.square(reference - candidate, dtype=np.float64)) / max(power, 1e-12))


def layer_errors(graph: Graph, float_path: Path, quantized_path: Path, images: np.ndarray) -> list[LayerError]:
    """Every op of `graph` (the float file's) with its error in the quantized file, ranked
    by the error it adds, largest first."""
    reference = _all_tensors(float_path, images)
    candidate = _all_tensors(quantized_path, images)
    tensor_names = {}
    from ai_edge_litert.interpreter import Interpreter

    for detail in Interpreter(model_path=str(float_path)).get_tensor_details():
        tensor_names[detail["index"]] = detail["name"]
    nmse: dict[str, float] = {}
    for name in reference[0]:
        if all(name in run for run in candidate) and reference[0][name].size > 1:
            pairs = [(ref[name], cand[name]) for ref, cand in zip(reference, candidate) if ref[name].shape == cand[name].shape]
            if pairs:
                nmse[name] = float(np.mean([normalised_error(r, c) for r, c in pairs]))
    produced = graph.producers()
    errors = []
    for op in graph.ops:
        if op.scope not in nmse:
            continue
        # Only activations count upstream: constants (weights, biases) are the op's own share.
        upstream = max((nmse.get(tensor_names.get(t, ""), 0.0) for t in op.inputs if t in produced), default=0.0)
        errors.append(LayerError(op.index, op.type, op.scope, nmse[op.scope], max(0.0, nmse[op.scope] - upstream)))
    return sorted(errors, key=lambda e: e.added_nmse, reverse=True)
