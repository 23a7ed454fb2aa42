"""Post-processing on hand-built outputs: filter, decode, NMS, top-k, letterbox, clipping."""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from featherface.config import PRIORS, Thresholds
from featherface.sdk.box_coding import make_priors
from featherface.sdk.faces import Face, faces_from_arrays, postprocess_arrays
from featherface.sdk.preprocess import letterbox

INPUT = 64
PRIORS_64 = make_priors(INPUT, INPUT)  # 8x8x2 + 4x4x2 + 2x2x2 = 168 anchors
VAR = PRIORS.variances
# A 200 x 100 image letterboxed into 64 x 64: scale 0.32, content in the top 32 rows.
_, BOX = letterbox(np.zeros((100, 200, 3), np.uint8), INPUT)


def anchor(row: int, col: int, size_index: int) -> int:
    """Index of a level-0 (step 8) prior: grid row-major, then min size 16 / 32."""
    return (row * 8 + col) * 2 + size_index


def outputs(scores: dict[int, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero regression everywhere; face probability 0.1 except at the given anchors."""
    count = len(PRIORS_64)
    loc = np.zeros((count, 4), np.float32)
    conf = np.tile(np.array([0.9, 0.1], np.float32), (count, 1))
    for index, score in scores.items():
        conf[index] = (1 - score, score)
    return loc, conf, np.zeros((count, 10), np.float32)


def run(loc, conf, landmarks, thresholds=Thresholds(score=0.5, nms_iou=0.4, top_k=750)):
    return postprocess_arrays(
        loc, conf, landmarks, PRIORS_64, BOX, INPUT, INPUT, thresholds, VAR
    )


def test_priors_layout_assumed_here():
    assert PRIORS_64.shape == (168, 4)
    np.testing.assert_allclose(PRIORS_64[anchor(1, 2, 0)], [20 / 64, 12 / 64, 16 / 64, 16 / 64])


def test_zero_regression_gives_the_prior_box_in_image_pixels():
    boxes, scores, landmarks = run(*outputs({anchor(1, 2, 0): 0.9}))
    # model pixels: centre (20, 12), 16 x 16 -> (12, 4, 28, 20); / 0.32 -> image pixels
    np.testing.assert_allclose(boxes, [[37.5, 12.5, 87.5, 62.5]], rtol=1e-6)
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    np.testing.assert_allclose(landmarks, [[62.5, 37.5] * 5], rtol=1e-6)
    assert boxes.dtype == scores.dtype == landmarks.dtype == np.float32


def test_regression_uses_the_variances():
    loc, conf, landmarks = outputs({anchor(1, 2, 0): 0.9})
    index = anchor(1, 2, 0)
    loc[index] = (1.0, 0.0, math.log(2) / VAR[1], 0.0)  # centre +0.1 * 16 px, width x2
    landmarks[index, :2] = (1.0, -1.0)  # first point moves (+1.6, -1.6) px
    boxes, _, points = run(loc, conf, landmarks)
    np.testing.assert_allclose(boxes[0], np.array([5.6, 4, 37.6, 20]) / 0.32, rtol=1e-5)
    np.testing.assert_allclose(points[0, :2], np.array([21.6, 10.4]) / 0.32, rtol=1e-5)


def test_scores_at_or_below_the_threshold_are_dropped():
    keep, at, below = anchor(1, 1, 0), anchor(1, 5, 0), anchor(5, 1, 0)
    _, scores, _ = run(*outputs({keep: 0.51, at: 0.5, below: 0.49}))
    np.testing.assert_allclose(scores, [0.51], rtol=1e-6)


def test_only_surviving_rows_are_decoded():
    loc, conf, landmarks = outputs({anchor(1, 2, 0): 0.9})
    loc[:] = 1e4  # exp overflow if any dropped row were decoded...
    loc[anchor(1, 2, 0)] = 0
    with np.errstate(all="raise"):
        boxes, _, _ = run(loc, conf, landmarks)
    np.testing.assert_allclose(boxes, [[37.5, 12.5, 87.5, 62.5]], rtol=1e-6)


def test_overlapping_anchors_are_suppressed_by_nms():
    # neighbouring 32-px anchors 8 px apart: IoU = 768 / 1280 = 0.6
    best, neighbour = anchor(1, 2, 1), anchor(1, 3, 1)
    _, scores, _ = run(*outputs({best: 0.9, neighbour: 0.8}))
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    loose = Thresholds(score=0.5, nms_iou=0.7, top_k=750)
    _, scores, _ = run(*outputs({best: 0.9, neighbour: 0.8}), thresholds=loose)
    np.testing.assert_allclose(scores, [0.9, 0.8], rtol=1e-6)


@pytest.mark.parametrize(("top_k", "expected"), [(2, [0.9, 0.8]), (0, [0.9, 0.8, 0.7, 0.6])])
def test_top_k_caps_the_best_detections(top_k, expected):
    # disjoint 16-px anchors, given in scrambled score order
    scores_in = {anchor(1, 1, 0): 0.7, anchor(1, 5, 0): 0.9, anchor(3, 1, 0): 0.6,
                 anchor(3, 5, 0): 0.8}
    thresholds = Thresholds(score=0.5, nms_iou=0.4, top_k=top_k)
    _, scores, _ = run(*outputs(scores_in), thresholds=thresholds)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_boxes_are_clipped_to_the_image_but_landmarks_are_not():
    corner, bottom_right = anchor(0, 0, 1), anchor(3, 7, 1)
    boxes, _, points = run(*outputs({corner: 0.9, bottom_right: 0.8}))
    # corner: model (-12, -12, 20, 20); bottom right: model (44, 12, 76, 44)
    np.testing.assert_allclose(boxes, [[0, 0, 62.5, 62.5], [137.5, 37.5, 200, 100]], rtol=1e-6)
    np.testing.assert_allclose(points[1, :2], [187.5, 87.5], rtol=1e-6)


def test_no_detection_gives_empty_arrays_and_list():
    boxes, scores, landmarks = run(*outputs({}))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and landmarks.shape == (0, 10)
    assert faces_from_arrays(*postprocess_arrays(*outputs({}), PRIORS_64, BOX, INPUT, INPUT, Thresholds(), VAR)) == []


def test_batch_axis_of_one_is_accepted():
    loc, conf, landmarks = outputs({anchor(1, 2, 0): 0.9})
    batched = run(loc[None], conf[None], landmarks[None])
    for a, b in zip(batched, run(loc, conf, landmarks)):
        np.testing.assert_array_equal(a, b)


def test_mismatched_anchor_counts_are_an_error():
    loc, conf, landmarks = outputs({})
    with pytest.raises(ValueError, match="anchor count"):
        run(loc, conf[:-1], landmarks)
    with pytest.raises(ValueError, match=r"conf must be \[A, 2\]"):
        run(loc, conf[:, :1], landmarks)


def test_postprocess_returns_faces_matching_the_arrays():
    arrays = outputs({anchor(1, 2, 0): 0.9, anchor(5, 5, 0): 0.7})
    faces = faces_from_arrays(*postprocess_arrays(*arrays, PRIORS_64, BOX, INPUT, INPUT, Thresholds(), VAR))
    boxes, scores, landmarks = run(*arrays)
    assert [face.score for face in faces] == pytest.approx(scores.tolist())
    for face, box, points in zip(faces, boxes, landmarks):
        assert face.box == pytest.approx(box.tolist())
        assert len(face.landmarks) == 5
        assert [v for point in face.landmarks for v in point] == pytest.approx(points.tolist())


def test_face_to_dict_is_plain_json_at_full_precision():
    face = Face(box=(1.123456, 2.0, 3.0, 4.0), score=0.987654321,
                landmarks=((1.0, 2.0),) * 5)
    as_dict = face.to_dict()
    assert as_dict == {"box": [1.123456, 2.0, 3.0, 4.0], "score": 0.987654321,
                       "landmarks": [[1.0, 2.0]] * 5}
    assert json.loads(json.dumps(as_dict)) == as_dict
    faces = faces_from_arrays(*postprocess_arrays(*outputs({anchor(1, 2, 0): 0.9}), PRIORS_64, BOX, INPUT, INPUT,
                                                  Thresholds(), VAR))
    serialised = json.dumps([f.to_dict() for f in faces])  # no numpy scalars left
    assert type(faces[0].score) is float and type(faces[0].box[0]) is float
    assert "37.5" in serialised
    with pytest.raises(dataclasses.FrozenInstanceError):
        face.score = 0.0  # type: ignore[misc]


def test_sdk_modules_import_without_torch_or_tensorflow():
    code = (
        "import sys\n"
        "import featherface.sdk.image_io, featherface.sdk.preprocess, featherface.sdk.faces\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow'))\n"
        "print(heavy)\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
