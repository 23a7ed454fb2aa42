"""Drop onnx2tf's negative-index guards where the indices can never be negative.

ONNX allows negative gather indices and TFLite does not, so onnx2tf 1.28.8 writes every
GATHER with computed indices `i` as GATHER(table, i + (i < 0) * n): LESS, CAST, MUL and ADD
over the whole index table. The deformable convolutions' indices are clamped before they
become integers, yet the guard made four passes over each [points, 4 x taps] table
(docs/measurements.md, "DCN without the gather tax"). A lower bound propagated from the
constants through the index arithmetic proves i >= 0; only then does the gather read i.
A GATHER that the pass misjudged would fail loudly at run time (LiteRT checks bounds),
never return wrong values, and every file still passes the build's parity check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featherface.atomic import atomic_path

__all__ = ["Guard", "IndexOp", "drop_gather_guards", "lower_bound", "removable_guards"]


@dataclass(frozen=True)
class IndexOp:
    type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Guard:
    gather: int  # op index
    index: int  # the unguarded index tensor the gather reads instead
    ops: tuple[int, ...]  # the guard's LESS, CAST, MUL and ADD


# Ops whose output is bounded below by their (first) input's bound.
_PASS_THROUGH = {"RESHAPE", "STRIDED_SLICE", "SLICE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS"}
_BOUNDED = _PASS_THROUGH | {"MAXIMUM", "MINIMUM", "CONCATENATION", "ADD", "MUL", "FLOOR", "CAST", "DEQUANTIZE"}


def lower_bound(tensor: int, producers: dict[int, IndexOp], constants: dict[int, np.ndarray], memo: dict[int, float] | None = None) -> float:
    """A value no element of `tensor` is below (-inf when unknown)."""
    memo = {} if memo is None else memo
    if tensor in memo:
        return memo[tensor]
    memo[tensor] = -math.inf  # cycles cannot occur in a TFLite graph; this only guards the walk
    if tensor in constants:
        values = constants[tensor]
        bound = float(values.min()) if values.size else -math.inf
    elif tensor not in producers:
        bound = -math.inf  # a graph input
    elif producers[tensor].type not in _BOUNDED:
        bound = -math.inf  # without walking further up: the network above can be deep
    else:
        op = producers[tensor]
        bounds = [lower_bound(t, producers, constants, memo) for t in op.inputs]
        if op.type == "MAXIMUM":
            bound = max(bounds)
        elif op.type in ("MINIMUM", "CONCATENATION"):
            bound = min(bounds)
        elif op.type == "ADD":
            bound = sum(bounds)
        elif op.type == "MUL":
            bound = bounds[0] * bounds[1] if min(bounds) >= 0 else -math.inf
        elif op.type == "FLOOR":
            bound = math.floor(bounds[0]) if math.isfinite(bounds[0]) else bounds[0]
        elif op.type == "CAST":  # float -> int truncates towards zero: never below a bound >= 0 floored
            bound = math.floor(bounds[0]) if bounds[0] >= 0 else bounds[0]
        elif op.type in _PASS_THROUGH:
            bound = bounds[0]
        elif op.type == "DEQUANTIZE" and constants.get(op.inputs[0], np.empty(0)).dtype == np.float16:
            bound = bounds[0]  # an FP16 file's constant; an INT8 one's would need its scale
        else:
            bound = -math.inf
    memo[tensor] = bound
    return bound


def removable_guards(ops: list[IndexOp], constants: dict[int, np.ndarray]) -> list[Guard]:
    """Each GATHER whose indices are `i + cast(i < 0) * n` with i proven >= 0."""
    producer = {t: k for k, op in enumerate(ops) for t in op.outputs}  # tensor -> op index
    producers = {t: ops[k] for t, k in producer.items()}
    memo: dict[int, float] = {}

    def made_by(tensor: int, kind: str) -> int | None:
        k = producer.get(tensor)
        return k if k is not None and ops[k].type == kind else None

    guards = []
    for k, gather in enumerate(ops):
        add = made_by(gather.inputs[1], "ADD") if gather.type == "GATHER" and len(gather.inputs) > 1 else None
        if add is None or len(ops[add].inputs) != 2:
            continue
        for index, offset in (ops[add].inputs, ops[add].inputs[::-1]):
            mul = made_by(offset, "MUL")
            cast = None if mul is None else next((c for c in (made_by(t, "CAST") for t in ops[mul].inputs) if c is not None), None)
            less = None if cast is None else made_by(ops[cast].inputs[0], "LESS")
            if less is not None and ops[less].inputs[0] == index and lower_bound(index, producers, constants, memo) >= 0:
                guards.append(Guard(k, index, (less, cast, mul, add)))
                break
    return guards


def _builtin_names() -> dict[int, str]:
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _constants(model, subgraph) -> dict[int, np.ndarray]:
    from ai_edge_litert import schema_py_generated as schema

    dtypes = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
              schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}
    found = {}
    for t, tensor in enumerate(subgraph.tensors):
        data = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
        if data is not None and len(data) and tensor.type in dtypes:
            found[t] = np.frombuffer(bytes(data), dtypes[tensor.type])
    return found


def _drop_unused_tensors(model, subgraph_index: int) -> None:
    """Tensors no op reads or writes go, and the rest are renumbered: tools that walk every
    tensor (ai-edge-quantizer's calibration) fail on one that nothing computes."""
    subgraph = model.subgraphs[subgraph_index]
    used = sorted({t for op in subgraph.operators for t in (*op.inputs, *op.outputs) if t >= 0}
                  | set(subgraph.inputs) | set(subgraph.outputs))
    new_index = {old: new for new, old in enumerate(used)}
    subgraph.tensors = [subgraph.tensors[t] for t in used]
    for op in subgraph.operators:
        op.inputs = [new_index[t] if t >= 0 else t for t in op.inputs]
        op.outputs = [new_index[t] for t in op.outputs]
    subgraph.inputs = [new_index[t] for t in subgraph.inputs]
    subgraph.outputs = [new_index[t] for t in subgraph.outputs]
    for signature in (s for s in model.signatureDefs or [] if s.subgraphIndex == subgraph_index):
        for entry in (*(signature.inputs or []), *(signature.outputs or [])):
            entry.tensorIndex = new_index[entry.tensorIndex]


def drop_gather_guards(path: str | Path) -> int:
    """Rewrite the TFLite file at `path` (atomically) without its provably needless gather
    guards; returns how many gathers now read their indices directly."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    names = _builtin_names()
    removed = 0
    for subgraph_index, subgraph in enumerate(model.subgraphs):
        codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        ops = [IndexOp(names.get(codes[op.opcodeIndex], "?"), tuple(op.inputs), tuple(op.outputs)) for op in subgraph.operators]
        guards = removable_guards(ops, _constants(model, subgraph))
        if not guards:
            continue
        for guard in guards:
            subgraph.operators[guard.gather].inputs[1] = guard.index
        dead: set[int] = set()
        for k in sorted({k for g in guards for k in g.ops}, reverse=True):  # ADD, MUL, CAST, LESS: readers first
            read = {t for j, op in enumerate(subgraph.operators) if j not in dead for t in op.inputs} | set(subgraph.outputs)
            if not set(subgraph.operators[k].outputs) & read:
                dead.add(k)
        subgraph.operators = [op for k, op in enumerate(subgraph.operators) if k not in dead]
        _drop_unused_tensors(model, subgraph_index)
        removed += len(guards)
    if removed:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return removed
