"""The op graph of a TFLite file, and the structural groups mixed precision keeps in float.

onnx2tf names tensors after Keras layers (`tf.nn.convolution_7`), not after our torch
modules, so groups are found from the graph's structure, which every RetinaFace-family
network shares: the MobileNet stem runs at strides 2-8 before anything reaches stride
16; the deformable convolutions' sampling positions are the 2-D tables that reach a gather's
indices;
the heads are the convolutions whose outputs reach the model outputs only through
reshapes, concatenations and the softmax.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Ops that only move or normalise head outputs on their way to the model outputs.
OUTPUT_PLUMBING = {"RESHAPE", "CONCATENATION", "SOFTMAX", "TRANSPOSE", "DEQUANTIZE", "QUANTIZE"}
GATHER_OPS = {"GATHER", "GATHER_ND"}


@dataclass(frozen=True)
class Op:
    index: int
    type: str
    scope: str  # output tensor name: what the quantizer's recipes match on
    shape: tuple[int, ...]  # of the (first) output
    inputs: tuple[int, ...]  # tensor indices
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    ops: list[Op]
    input_size: int
    output_tensors: tuple[int, ...]

    def producers(self) -> dict[int, Op]:
        return {tensor: op for op in self.ops for tensor in op.outputs}


def read_graph(path: str | Path) -> Graph:
    """Ops of a float TFLite file in execution order."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = [
        Op(o["index"], o["op_name"], tensors[o["outputs"][0]]["name"], tuple(int(d) for d in tensors[o["outputs"][0]]["shape"]),
           tuple(int(i) for i in o["inputs"] if i >= 0), tuple(int(i) for i in o["outputs"]))
        for o in interpreter._get_ops_details()  # noqa: SLF001 (the public API has no op list)
    ]
    (image,) = interpreter.get_input_details()
    return Graph(ops, int(image["shape"][1]), tuple(int(o["index"]) for o in interpreter.get_output_details()))


def stem_ops(graph: Graph) -> list[Op]:
    """The backbone stem: every op before the first one whose output is at stride 16."""
    coarse = graph.input_size // 16
    first_coarse = next((op.index for op in graph.ops if len(op.shape) == 4 and op.shape[1] <= coarse), len(graph.ops))
    return [op for op in graph.ops if op.index < first_coarse]


def sampling_ops(graph: Graph) -> list[Op]:
    """The deformable-convolution sampling positions: every op of rank <= 2 upstream of a
    gather's indices (offsets, floors, clamps, casts, index arithmetic) and the fractions
    taken from the floors. The gathered values, their bilinear weights (in [0, 2]) and the
    sum over the samples stay INT8: 8 bits suit a weight, not a position of 80 pixels.
    None in a network without gathers: its low-rank ops (a channel-attention MLP, level
    gates) are ordinary layers."""
    gathers = [op for op in graph.ops if op.type in GATHER_OPS]
    if not gathers:
        return []
    producers = graph.producers()
    found: dict[int, Op] = {}
    frontier = [producers[op.inputs[1]] for op in gathers if op.inputs[1] in producers]
    while frontier:
        op = frontier.pop()
        if op.index in found or len(op.shape) > 2:
            continue
        found[op.index] = op
        frontier += [producers[t] for t in op.inputs if t in producers]
    floored = {t for op in found.values() if op.type == "FLOOR" for t in op.outputs}
    found.update({op.index: op for op in graph.ops if floored & set(op.inputs)})
    return sorted(found.values(), key=lambda op: op.index)


def head_ops(graph: Graph) -> list[Op]:
    """The output plumbing and the head convolutions that feed it."""
    producers = graph.producers()
    found: dict[int, Op] = {}
    frontier = [producers[t] for t in graph.output_tensors if t in producers]
    while frontier:
        op = frontier.pop()
        if op.index in found:
            continue
        found[op.index] = op
        if op.type in OUTPUT_PLUMBING:
            frontier += [producers[t] for t in op.inputs if t in producers]
    return sorted(found.values(), key=lambda op: op.index)


SAMPLING_GROUP = "deformable sampling"  # float by construction, never searched
STRUCTURAL_GROUPS = {"stem": stem_ops, SAMPLING_GROUP: sampling_ops, "heads and outputs": head_ops}
