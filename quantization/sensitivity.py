"""Per-layer quantization sensitivity: where the INT8 file departs from the float one.

Both files run on the same calibration images with every intermediate tensor kept; each
op's output is compared by name (the quantizer keeps tensor names). The error of a
tensor accumulates everything upstream, so an op is charged only with what it adds: its
normalised error minus the largest normalised error among its inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from featherface.records import LayerError
from featherface.sdk.runtimes import dequantize, quantize_to

from .graph import Graph


class _TensorDump:
    """A file run op by op on one image at a time, every tensor kept (dequantized)."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # Without the XNNPACK delegate: delegated ops never write their intermediate tensors.
        self.interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        self.details = {d["name"]: d for d in self.interpreter.get_tensor_details()}

    def run(self, image: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], quantize_to(image[None], self.input))
        self.interpreter.invoke()

    def tensor(self, name: str) -> np.ndarray | None:
        detail = self.details.get(name)
        if detail is None:
            return None
        try:
            raw = self.interpreter.get_tensor(detail["index"])
        except ValueError:  # tensors without data (e.g. optional inputs)
            return None
        return dequantize(raw, detail)


def normalised_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean squared error over the mean power of both tensors: the usual NMSE for small
    errors, but bounded (at most 4) where the float tensor is almost zero, such as a ReLU
    that is off on these images, where the plain NMSE explodes (docs/measurements.md,
    "Figures behind the code's thresholds and choices")."""
    reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
    power = (float(np.mean(np.square(reference))) + float(np.mean(np.square(candidate)))) / 2
    return float(np.mean(np.square(reference - candidate)) / max(power, 1e-12))


def layer_errors(graph: Graph, float_path: Path, quantized_path: Path, images: np.ndarray) -> list[LayerError]:
    """Every op of `graph` (the float file's) with its error in the quantized file, ranked
    by the error it adds, largest first. One image at a time: the DCN tables of v1 at 640
    would need gigabytes to keep every tensor of several images."""
    reference, candidate = _TensorDump(float_path), _TensorDump(quantized_path)
    names = [op.scope for op in graph.ops]
    sums: dict[str, list[float]] = {}
    for image in images:
        reference.run(image)
        candidate.run(image)
        for name in names:
            ref, cand = reference.tensor(name), candidate.tensor(name)
            if ref is not None and cand is not None and ref.shape == cand.shape and ref.size > 1:
                sums.setdefault(name, []).append(normalised_error(ref, cand))
    nmse = {name: float(np.mean(values)) for name, values in sums.items()}
    tensor_names = {t: op.scope for op in graph.ops for t in op.outputs}
    errors = []
    for op in graph.ops:
        if op.scope not in nmse:
            continue
        # Only activations count upstream: constants (weights, biases) are the op's own share.
        upstream = max((nmse.get(tensor_names[t], 0.0) for t in op.inputs if t in tensor_names), default=0.0)
        errors.append(LayerError(op.index, op.type, op.scope, nmse[op.scope], max(0.0, nmse[op.scope] - upstream)))
    return sorted(errors, key=lambda e: e.added_nmse, reverse=True)
