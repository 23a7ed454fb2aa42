"""Priors, box/landmark coding and NMS: hand-computed cases, round trips, NumPy == torch."""
from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface.config import PRIORS, PriorConfig
from featherface.model import box_coding as tbc
from featherface.sdk import box_coding as nbc

VAR = PRIORS.variances


def reference_priors(height: int, width: int, config: PriorConfig = PRIORS) -> np.ndarray:
    """Line-by-line port of RetinaFace's PriorBox.forward (Python loops)."""
    anchors = []
    for k, step in enumerate(config.steps):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        for i, j in itertools.product(range(rows), range(cols)):
            for min_size in config.min_sizes[k]:
                anchors += [(j + 0.5) * step / width, (i + 0.5) * step / height,
                            min_size / width, min_size / height]
    out = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    if config.clip:
        out = np.clip(out, 0, 1)
    return out.astype(np.float32)


def random_xyxy(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    xy = rng.uniform(0, 0.8, size=(n, 2))
    wh = rng.uniform(0.01, 0.3, size=(n, 2))
    return (np.concatenate([xy, xy + wh], axis=1) * scale).astype(np.float32)


# --- priors -------------------------------------------------------------------------


def test_priors_640_count_dtype_and_hand_computed_first_and_last():
    priors = nbc.make_priors(640, 640)
    assert priors.shape == (16800, 4) and priors.dtype == np.float32
    # level 0 (step 8), cell (0, 0): min sizes 16 then 32
    np.testing.assert_allclose(priors[0], [4 / 640, 4 / 640, 16 / 640, 16 / 640], rtol=1e-7)
    np.testing.assert_allclose(priors[1], [4 / 640, 4 / 640, 32 / 640, 32 / 640], rtol=1e-7)
    # level 2 (step 32), 20x20 grid, cell (19, 19), min size 512
    np.testing.assert_allclose(priors[-1], [0.975, 0.975, 0.8, 0.8], rtol=1e-7)
    np.testing.assert_allclose(priors[-2], [0.975, 0.975, 0.4, 0.4], rtol=1e-7)
    # level boundaries: 80*80*2 then 40*40*2
    np.testing.assert_allclose(priors[12800], [8 / 640, 8 / 640, 64 / 640, 64 / 640], rtol=1e-7)
    np.testing.assert_allclose(priors[16000], [16 / 640, 16 / 640, 256 / 640, 256 / 640], rtol=1e-7)


def test_priors_non_square_are_row_major_and_normalised_per_axis():
    priors = nbc.make_priors(480, 640)  # H=480, W=640
    assert len(priors) == 60 * 80 * 2 + 30 * 40 * 2 + 15 * 20 * 2
    # index 2: row 0, column 1, min size 16
    np.testing.assert_allclose(priors[2], [12 / 640, 4 / 480, 16 / 640, 16 / 480], rtol=1e-7)
    # index 160: first cell of row 1 (80 columns * 2 sizes per cell)
    np.testing.assert_allclose(priors[160], [4 / 640, 12 / 480, 16 / 640, 16 / 480], rtol=1e-7)


@pytest.mark.parametrize(
    ("height", "width", "count"),
    [(640, 640, 16800), (480, 480, 9450), (320, 320, 4200), (300, 500, 6324), (1, 1, 6)],
)
def test_priors_match_retinaface_priorbox_loop(height, width, count):
    priors = nbc.make_priors(height, width)
    assert len(priors) == count
    np.testing.assert_array_equal(priors, reference_priors(height, width))


def test_priors_clip_only_when_configured():
    assert nbc.make_priors(320, 320).max() > 1  # 512 px anchors exceed a 320 px image
    clipped_cfg = PriorConfig(clip=True)
    clipped = nbc.make_priors(320, 320, clipped_cfg)
    assert clipped.min() >= 0 and clipped.max() <= 1
    np.testing.assert_array_equal(clipped, reference_priors(320, 320, clipped_cfg))


def test_priors_follow_a_custom_config():
    cfg = PriorConfig(min_sizes=((10, 20, 30),), steps=(64,))
    priors = nbc.make_priors(128, 192, cfg)
    assert len(priors) == 2 * 3 * 3
    np.testing.assert_array_equal(priors, reference_priors(128, 192, cfg))


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 64), cols=st.integers(1, 64), data=st.data())
def test_priors_match_the_direct_formula_for_any_size_divisible_by_32(rows, cols, data):
    height, width = 32 * rows, 32 * cols
    priors = nbc.make_priors(height, width)
    per_level = [(height // step) * (width // step) * len(sizes) for step, sizes in zip(PRIORS.steps, PRIORS.min_sizes)]
    assert len(priors) == sum(per_level)
    indices = data.draw(st.lists(st.integers(0, len(priors) - 1), min_size=1, max_size=20)) + [0, len(priors) - 1]
    for index in indices:
        level, offset = 0, index  # index -> (level, row i, column j, min size)
        while offset >= per_level[level]:
            offset, level = offset - per_level[level], level + 1
        step, sizes = PRIORS.steps[level], PRIORS.min_sizes[level]
        cell, size = divmod(offset, len(sizes))
        i, j = divmod(cell, width // step)
        expected = [(j + 0.5) * step / width, (i + 0.5) * step / height, sizes[size] / width, sizes[size] / height]
        np.testing.assert_allclose(priors[index], expected, rtol=1e-6, err_msg=f"prior {index}")


def test_torch_priors_wrap_numpy_priors():
    t = tbc.make_priors(480, 640)
    assert t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), nbc.make_priors(480, 640))


# --- encode / decode ----------------------------------------------------------------


def test_decode_of_zero_regression_returns_the_prior_box():
    priors = nbc.make_priors(320, 320)
    boxes = nbc.decode_boxes(np.zeros_like(priors), priors, VAR)
    cx, cy, w, h = priors.T
    np.testing.assert_allclose(boxes, np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1),
                               atol=1e-7)
    landm = nbc.decode_landmarks(np.zeros((len(priors), 10), np.float32), priors, VAR)
    np.testing.assert_allclose(landm, np.tile(priors[:, :2], 5), atol=1e-7)


def test_decode_hand_computed_offsets():
    prior = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)
    loc = np.array([[1.0, -1.0, 0.0, math.log(2) / 0.2]], np.float32)
    # centre (0.5 + 0.1*0.2, 0.5 - 0.1*0.4) = (0.52, 0.46); size (0.2, 0.8)
    np.testing.assert_allclose(nbc.decode_boxes(loc, prior, VAR), [[0.42, 0.06, 0.62, 0.86]],
                               rtol=1e-6)
    landm = np.array([[1, 0, 0, 1, -1, 0, 0, -1, 2, 2]], np.float32)
    np.testing.assert_allclose(
        nbc.decode_landmarks(landm, prior, VAR),
        [[0.52, 0.5, 0.5, 0.54, 0.48, 0.5, 0.5, 0.46, 0.54, 0.58]], rtol=1e-6)


def test_decode_inverts_encode_numpy_and_torch_batched():
    rng = np.random.default_rng(0)
    priors = nbc.make_priors(160, 224)
    boxes = random_xyxy(rng, 2 * len(priors)).reshape(2, len(priors), 4).astype(np.float64)
    points = rng.uniform(0, 1, size=(2, len(priors), 10))
    p64 = priors.astype(np.float64)

    np.testing.assert_allclose(nbc.decode_boxes(nbc.encode_boxes(boxes, p64, VAR), p64, VAR),
                               boxes, atol=1e-12)
    np.testing.assert_allclose(
        nbc.decode_landmarks(nbc.encode_landmarks(points, p64, VAR), p64, VAR), points, atol=1e-12)

    # The torch encoder (training's targets) is inverted by the NumPy decoder (the SDK's).
    tb, tp, tl = torch.from_numpy(boxes), torch.from_numpy(p64), torch.from_numpy(points)
    np.testing.assert_allclose(nbc.decode_boxes(tbc.encode_boxes(tb, tp, VAR).numpy(), p64, VAR), boxes, atol=1e-12)
    np.testing.assert_allclose(nbc.decode_landmarks(tbc.encode_landmarks(tl, tp, VAR).numpy(), p64, VAR), points, atol=1e-12)


finite = {"allow_nan": False, "allow_infinity": False}


@settings(max_examples=200, deadline=None)
@given(
    prior=st.tuples(st.floats(-1, 2, **finite), st.floats(-1, 2, **finite), st.floats(1e-3, 2, **finite), st.floats(1e-3, 2, **finite)),
    corner=st.tuples(st.floats(-2, 2, **finite), st.floats(-2, 2, **finite)),
    size=st.tuples(st.floats(1e-3, 3, **finite), st.floats(1e-3, 3, **finite)),
    points=st.lists(st.floats(-2, 3, **finite), min_size=10, max_size=10),
)
def test_decode_inverts_encode_for_any_box_and_prior(prior, corner, size, points):
    priors = np.array([prior])
    box = np.array([[corner[0], corner[1], corner[0] + size[0], corner[1] + size[1]]])
    np.testing.assert_allclose(nbc.decode_boxes(nbc.encode_boxes(box, priors, VAR), priors, VAR), box, rtol=1e-9, atol=1e-9)
    landmarks = np.array([points])
    np.testing.assert_allclose(
        nbc.decode_landmarks(nbc.encode_landmarks(landmarks, priors, VAR), priors, VAR), landmarks, rtol=1e-9, atol=1e-9)


def test_encode_matches_between_numpy_and_torch():
    rng = np.random.default_rng(1)
    priors = nbc.make_priors(320, 256)
    n = len(priors)
    boxes = random_xyxy(rng, n)
    points = rng.uniform(0, 1, size=(n, 10)).astype(np.float32)
    tp = torch.from_numpy(priors)
    pairs = [
        (nbc.encode_boxes(boxes, priors, VAR), tbc.encode_boxes(torch.from_numpy(boxes), tp, VAR)),
        (nbc.encode_landmarks(points, priors, VAR),
         tbc.encode_landmarks(torch.from_numpy(points), tp, VAR)),
    ]
    for expected, actual in pairs:
        assert expected.dtype == np.float32 and actual.dtype == torch.float32
        np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_torch_encode_is_differentiable():
    priors = tbc.make_priors(64, 64).double()[:20]
    loc = np.random.default_rng(4).normal(0, 1, size=(20, 4))
    boxes = torch.from_numpy(nbc.decode_boxes(loc, priors.numpy(), VAR)).requires_grad_()
    points = torch.randn(20, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: tbc.encode_boxes(x, priors, VAR), (boxes,))
    assert torch.autograd.gradcheck(lambda x: tbc.encode_landmarks(x, priors, VAR), (points,))


# --- IoU and NMS --------------------------------------------------------------------


def test_iou_hand_computed_without_plus_one():
    a = np.array([[0, 0, 2, 2]], np.float32)
    b = np.array([[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2], [5, 5, 5, 5]], np.float32)
    np.testing.assert_allclose(nbc.iou_matrix(a, b), [[1 / 7, 0, 1, 0]], rtol=1e-6)
    np.testing.assert_allclose(nbc.iou_matrix(b[3:], b[3:]), [[0]])  # empty union -> 0
    torch.testing.assert_close(tbc.iou_matrix(torch.from_numpy(a), torch.from_numpy(b)),
                               torch.tensor([[1 / 7, 0, 1, 0]]))


def test_nms_hand_computed_keeps_best_of_overlapping_pair_and_the_separate_box():
    boxes = np.array([[0, 0, 10, 10],     # score 0.8
                      [1, 0, 11, 10],     # score 0.9, IoU 90/110 = 0.82 with box 0
                      [20, 20, 30, 30]],  # score 0.7, disjoint
                     np.float32)
    scores = np.array([0.8, 0.9, 0.7], np.float32)
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.4), [1, 2])
    assert nbc.nms(boxes, scores, 0.4).dtype == np.int64
    # a threshold above their IoU keeps all three, best first
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.9), [1, 0, 2])


def test_nms_suppresses_only_iou_strictly_above_threshold():
    boxes = np.array([[0, 0, 2, 1], [1, 0, 3, 1]], np.float64)  # IoU exactly 1/3
    scores = np.array([1.0, 0.5])
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 1 / 3), [0, 1])
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.3), [0])


def test_nms_top_k_caps_the_number_kept():
    boxes = np.array([[i * 10, 0, i * 10 + 5, 5] for i in range(6)], np.float32)  # disjoint
    scores = np.array([0.1, 0.6, 0.3, 0.9, 0.5, 0.2], np.float32)
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.4, top_k=3), [3, 1, 4])
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.4, top_k=0), [3, 1, 4, 2, 5, 0])


def test_nms_breaks_score_ties_by_input_order():
    boxes = np.array([[i * 10, 0, i * 10 + 5, 5] for i in range(5)], np.float32)
    scores = np.array([0.5, 0.7, 0.5, 0.7, 0.5], np.float32)
    np.testing.assert_array_equal(nbc.nms(boxes, scores, 0.4), [1, 3, 0, 2, 4])


def test_nms_of_no_boxes_is_empty():
    assert nbc.nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.4).shape == (0,)


def test_iou_matches_between_numpy_and_torch_on_random_boxes():
    rng = np.random.default_rng(2)
    for trial in range(20):
        boxes = random_xyxy(rng, 300, scale=640.0)
        tb = torch.from_numpy(boxes)
        np.testing.assert_allclose(tbc.iou_matrix(tb, tb).numpy(), nbc.iou_matrix(boxes, boxes),
                                   rtol=1e-6, atol=1e-7)


box_strategy = st.tuples(
    st.floats(0, 100, width=32), st.floats(0, 100, width=32),  # x1, y1
    st.floats(0, 50, width=32), st.floats(0, 50, width=32),    # w, h (zero allowed)
    st.floats(0, 1, width=32),                                  # score
)


@settings(max_examples=200, deadline=None)
@given(st.lists(box_strategy, min_size=1, max_size=40), st.floats(0.05, 0.95))
def test_nms_property_no_kept_pair_overlaps_above_threshold_and_best_is_kept(rows, threshold):
    data = np.asarray(rows, dtype=np.float64)
    boxes = np.concatenate([data[:, :2], data[:, :2] + data[:, 2:4]], axis=1)
    scores = data[:, 4]
    kept = nbc.nms(boxes, scores, threshold)

    assert kept[0] == int(np.argmax(scores))  # first maximal score (stable tie-break)
    assert len(set(kept.tolist())) == len(kept)
    assert np.all(np.diff(scores[kept]) <= 0)  # best first
    iou = nbc.iou_matrix(boxes[kept], boxes[kept])
    np.fill_diagonal(iou, 0)
    assert np.all(iou <= threshold)
    # greedy completeness: every dropped box overlaps some kept box above the threshold
    dropped = np.setdiff1d(np.arange(len(boxes)), kept)
    if dropped.size:
        assert np.all(nbc.iou_matrix(boxes[dropped], boxes[kept]).max(axis=1) > threshold)


# --- dependencies -------------------------------------------------------------------


def test_sdk_box_coding_imports_without_torch():
    code = ("import sys, featherface.sdk.box_coding; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
