"""gather_guards: which of onnx2tf's negative-index guards may go (the pure analysis; the
v1-489k bundles of test_build.py check the rewritten files end to end)."""
from __future__ import annotations

import math

import numpy as np

from featherface.converters.gather_guards import IndexOp, lower_bound, removable_guards

BORDER, TABLE = 2.0, 100


def _graph(clamp_low: float | None):
    """pos -> floor -> clamp -> + BORDER -> int -> * 4 -> guard -> GATHER; tensor ids: 0 the
    positions (a graph input), 1.. the ops' outputs, 50.. constants."""
    constants = {50: np.array([-BORDER], np.float32), 51: np.array([BORDER], np.float32), 52: np.array([4], np.int32),
                 53: np.array([0], np.int32), 54: np.array([TABLE], np.int32), 55: np.zeros((TABLE, 3), np.float32)}
    ops = [IndexOp("FLOOR", (0,), (1,))]
    low = 1
    if clamp_low is not None:
        constants[50] = np.array([clamp_low], np.float32)
        ops.append(IndexOp("MAXIMUM", (1, 50), (2,)))
        low = 2
    ops += [
        IndexOp("ADD", (low, 51), (3,)), IndexOp("CAST", (3,), (4,)), IndexOp("MUL", (4, 52), (5,)),
        IndexOp("LESS", (5, 53), (6,)), IndexOp("CAST", (6,), (7,)), IndexOp("MUL", (7, 54), (8,)),
        IndexOp("ADD", (5, 8), (9,)), IndexOp("GATHER", (55, 9), (10,)),
    ]
    return ops, constants


def test_a_guard_on_indices_clamped_at_minus_the_border_goes():
    ops, constants = _graph(clamp_low=-BORDER)
    (guard,) = removable_guards(ops, constants)
    assert ops[guard.gather].type == "GATHER" and guard.index == 5
    assert sorted(ops[k].type for k in guard.ops) == ["ADD", "CAST", "LESS", "MUL"]


def test_a_guard_on_indices_that_may_be_negative_stays():
    assert removable_guards(*_graph(clamp_low=None)) == []  # no clamp: a position may be anywhere
    assert removable_guards(*_graph(clamp_low=-BORDER - 1)) == []  # clamped one row too low


def test_lower_bounds_through_the_index_arithmetic():
    ops, constants = _graph(clamp_low=-BORDER)
    producers = {t: op for op in ops for t in op.outputs}
    assert [lower_bound(t, producers, constants) for t in (1, 2, 3, 5)] == [-math.inf, -BORDER, 0.0, 0.0]
    extra = {20: IndexOp("SUB", (3, 3), (20,)), 21: IndexOp("FLOOR", (56,), (21,))}
    assert lower_bound(20, {**producers, **extra}, constants) == -math.inf  # an op the walk does not know
    assert lower_bound(21, {**producers, **extra}, {**constants, 56: np.array([0.5, 3.0], np.float32)}) == 0.0
