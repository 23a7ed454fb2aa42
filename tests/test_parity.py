"""Unit tests of featherface/verify/parity.py: tensor errors, greedy detection matching, detection
agreement (plain and robust), the FP32 error bound and the verdict. Pure NumPy, no files."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featherface.config import (
    DEPLOY_THRESHOLDS,
    FLOAT32_NOISE_FACTOR,
    OUTPUT_NAMES,
    PARITY_THRESHOLDS,
    PRIORS,
    ParityThresholds,
)
from featherface.records import DetectionAgreement, OutputError
from featherface.sdk.box_coding import encode_boxes, encode_landmarks, iou_matrix, make_priors
from featherface.sdk.faces import postprocess_arrays
from featherface.sdk.preprocess import Letterbox
from featherface.verify.parity import (
    ROBUST_MARGIN,
    Detections,
    detection_agreement,
    error_bound,
    match_detections,
    tensor_errors,
    verdict,
)

SCORE = DEPLOY_THRESHOLDS.score
FP32 = PARITY_THRESHOLDS["fp32"]
FP16 = PARITY_THRESHOLDS["fp16"]
NOISE = {name: 1e-6 for name in OUTPUT_NAMES}


def dets(boxes, scores, landmarks=None) -> Detections:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if landmarks is None:  # five points at the box centre
        centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        landmarks = np.tile(centre, 5)
    return Detections(boxes, scores, np.asarray(landmarks, np.float64).reshape(-1, 10))


def outputs(seed: int = 0, anchors: int = 50, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    conf = rng.random((batch, anchors, 1))
    return {
        "loc": rng.normal(size=(batch, anchors, 4)).astype(np.float32),
        "conf": np.concatenate([1 - conf, conf], axis=-1).astype(np.float32),
        "landmarks": rng.normal(size=(batch, anchors, 10)).astype(np.float32),
    }


GOOD_AGREEMENT = DetectionAgreement(reference_faces=4, candidate_faces=4, matched=4, recall=1.0, precision=1.0,
                                    robust_recall=1.0, robust_precision=1.0, mean_iou=1.0, landmark_error=0.0)


# ---------------------------------------------------------------- tensor_errors


def test_tensor_errors_of_identical_outputs():
    ref = outputs()
    errors = tensor_errors(ref, {k: v.copy() for k, v in ref.items()})
    assert set(errors) == set(OUTPUT_NAMES)
    for figures in errors.values():
        assert figures.max_abs_error == 0.0 and figures.mean_abs_error == 0.0
        assert figures.cosine == pytest.approx(1.0, abs=1e-12)
        assert figures.finite is True


def test_tensor_errors_max_mean_and_cosine_are_exact():
    ref = outputs()
    cand = {k: v.copy() for k, v in ref.items()}
    cand["loc"][1, 7, 2] += 0.5  # one element off by 0.5
    cand["landmarks"] = -ref["landmarks"]  # anti-parallel
    cand["conf"] = 3.0 * ref["conf"]  # parallel, scaled
    errors = tensor_errors(ref, cand)
    assert errors["loc"].max_abs_error == pytest.approx(0.5, abs=1e-6)
    assert errors["loc"].mean_abs_error == pytest.approx(0.5 / ref["loc"].size, rel=1e-5)
    assert errors["landmarks"].cosine == pytest.approx(-1.0, abs=1e-9)
    assert errors["landmarks"].max_abs_error == pytest.approx(2 * np.abs(ref["landmarks"]).max(), rel=1e-6)
    assert errors["conf"].cosine == pytest.approx(1.0, abs=1e-9)
    assert errors["conf"].max_abs_error == pytest.approx(2 * np.abs(ref["conf"]).max(), rel=1e-6)


def test_tensor_errors_accumulate_in_float64():
    """A float32 sum over many elements must not lose the error of one element."""
    ref = {name: np.zeros((1, 200_000, w), np.float32) for name, w in (("loc", 4), ("conf", 2), ("landmarks", 10))}
    cand = {k: v.copy() for k, v in ref.items()}
    cand["loc"][...] = 1e-4
    assert tensor_errors(ref, cand)["loc"].mean_abs_error == pytest.approx(1e-4, rel=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_tensor_errors_flag_non_finite_values(bad):
    ref = outputs()
    cand = {k: v.copy() for k, v in ref.items()}
    cand["conf"][0, 3, 1] = bad
    errors = tensor_errors(ref, cand)
    assert errors["conf"].finite is False
    assert math.isinf(errors["conf"].max_abs_error) and math.isinf(errors["conf"].mean_abs_error)
    assert errors["conf"].cosine == 0.0
    assert errors["loc"].finite is True  # only the broken output is flagged


def test_tensor_errors_refuse_a_shape_mismatch_naming_the_output():
    ref = outputs()
    cand = dict(ref, landmarks=ref["loc"])  # an output swapped for another of a different width
    with pytest.raises(ValueError, match="landmarks"):
        tensor_errors(ref, cand)


def test_tensor_errors_cosine_of_a_zero_candidate_is_zero_not_nan():
    ref = outputs()
    cand = dict(ref, loc=np.zeros_like(ref["loc"]))
    figures = tensor_errors(ref, cand)["loc"]
    assert figures.cosine == 0.0 and not math.isnan(figures.cosine)


# ---------------------------------------------------------------- match_detections


def test_match_detections_empty_sides():
    some = dets([[0, 0, 10, 10]], [0.9])
    none = dets(np.zeros((0, 4)), [])
    assert match_detections(none, some, 0.5) == []
    assert match_detections(some, none, 0.5) == []


def test_match_detections_threshold_is_inclusive_at_iou_0_5():
    ref = dets([[0, 0, 10, 10]], [0.9])
    half = dets([[0, 0, 10, 5]], [0.9])  # IoU exactly 0.5
    less = dets([[0, 0, 10, 4.9]], [0.9])  # IoU 0.49
    assert iou_matrix(ref.boxes, half.boxes)[0, 0] == pytest.approx(0.5)
    assert match_detections(ref, half, 0.5) == [(0, 0, pytest.approx(0.5))]
    assert match_detections(ref, less, 0.5) == []


def test_match_detections_is_one_to_one():
    """Two candidates on one reference face: only one of them is matched."""
    ref = dets([[0, 0, 10, 10]], [0.9])
    cand = dets([[0, 0, 10, 10], [0, 0, 10, 9]], [0.8, 0.7])
    pairs = match_detections(ref, cand, 0.5)
    assert pairs == [(0, 0, pytest.approx(1.0))]


def test_match_detections_is_greedy_in_descending_candidate_score():
    """The higher-scoring candidate claims its best reference first, even when a
    lower-scoring candidate overlaps that reference better."""
    ref = dets([[0, 0, 10, 10], [6, 0, 16, 10]], [0.9, 0.9])
    # cand 0 (low score) is identical to ref 0; cand 1 (high score) overlaps ref 0
    # (IoU 0.8) more than ref 1 (IoU ~0.43), so it takes ref 0 and cand 0 is left unmatched.
    cand = dets([[0, 0, 10, 10], [1, 0, 11, 10]], [0.6, 0.95])
    ious = iou_matrix(ref.boxes, cand.boxes)
    assert ious[0, 1] > ious[1, 1] and ious[1, 0] < 0.5
    pairs = match_detections(ref, cand, 0.5)
    assert pairs == [(0, 1, pytest.approx(ious[0, 1]))]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(2, 30), st.integers(2, 30)), max_size=8),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(2, 30), st.integers(2, 30),
                       st.floats(0.0, 1.0)), max_size=8),
    st.sampled_from([0.3, 0.5, 0.7]),
)
def test_match_detections_properties(ref_boxes, cand_rows, threshold):
    ref = dets([[x, y, x + w, y + h] for x, y, w, h in ref_boxes] or np.zeros((0, 4)), [0.9] * len(ref_boxes))
    cand = dets([[x, y, x + w, y + h] for x, y, w, h, _ in cand_rows] or np.zeros((0, 4)), [s for *_, s in cand_rows])
    pairs = match_detections(ref, cand, threshold)
    refs, cands = [r for r, _, _ in pairs], [c for _, c, _ in pairs]
    assert len(set(refs)) == len(refs) and len(set(cands)) == len(cands)  # one-to-one
    ious = iou_matrix(ref.boxes, cand.boxes) if len(ref_boxes) and len(cand_rows) else None
    for r, c, iou in pairs:
        assert iou >= threshold and iou == pytest.approx(float(ious[r, c]))
    # Greedy maximality: an unmatched candidate has no free reference above the threshold.
    free = set(range(len(ref_boxes))) - set(refs)
    for c in set(range(len(cand_rows))) - set(cands):
        assert all(ious[r, c] < threshold for r in free)


# ---------------------------------------------------------------- detection_agreement


def test_agreement_of_identical_detections():
    ref = [dets([[0, 0, 20, 20], [40, 40, 60, 70]], [0.9, 0.8]), dets(np.zeros((0, 4)), [])]
    agreement = detection_agreement(ref, ref, SCORE)
    assert agreement.reference_faces == agreement.candidate_faces == agreement.matched == 2
    for key in ("recall", "precision", "robust_recall", "robust_precision", "mean_iou"):
        assert getattr(agreement, key) == 1.0
    assert agreement.landmark_error == 0.0


def test_agreement_recall_and_precision_count_over_all_images():
    ref = [dets([[0, 0, 20, 20], [40, 40, 60, 60]], [0.9, 0.9]), dets([[0, 0, 20, 20]], [0.9])]
    cand = [dets([[0, 0, 20, 20]], [0.9]), dets([[0, 0, 20, 20], [100, 100, 120, 120]], [0.9, 0.9])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert (agreement.reference_faces, agreement.candidate_faces, agreement.matched) == (3, 3, 2)
    assert agreement.recall == pytest.approx(2 / 3) and agreement.precision == pytest.approx(2 / 3)


def test_agreement_with_no_faces_is_vacuously_perfect():
    empty = [dets(np.zeros((0, 4)), [])] * 2
    agreement = detection_agreement(empty, empty, SCORE)
    assert agreement.recall == agreement.precision == agreement.robust_recall == agreement.robust_precision == 1.0


def test_agreement_needs_as_many_candidate_images_as_reference_images():
    with pytest.raises(ValueError):
        detection_agreement([dets([[0, 0, 9, 9]], [0.9])] * 2, [dets([[0, 0, 9, 9]], [0.9])], SCORE)


def test_robust_recall_forgives_a_score_that_merely_crosses_the_threshold():
    """A clear face (0.5 + margin + ...) found just below the threshold (above the floor)
    is lost for the plain recall, found for the robust one."""
    ref = [dets([[0, 0, 20, 20]], [SCORE + ROBUST_MARGIN + 0.05])]
    cand = [dets([[0, 0, 20, 20]], [SCORE - ROBUST_MARGIN + 0.05])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.recall == 0.0
    assert agreement.robust_recall == 1.0


def test_robust_recall_counts_a_vanished_clear_face():
    ref = [dets([[0, 0, 20, 20], [50, 50, 80, 80]], [0.95, 0.95])]
    cand = [dets([[0, 0, 20, 20]], [0.95])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.robust_recall == 0.5 and agreement.recall == 0.5


def test_robust_recall_ignores_faces_that_are_not_clear():
    """A reference face below threshold + margin may vanish without hurting the robust recall."""
    ref = [dets([[0, 0, 20, 20]], [SCORE + ROBUST_MARGIN - 0.02])]
    cand = [dets(np.zeros((0, 4)), [])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.recall == 0.0
    assert agreement.robust_recall == 1.0


def test_robust_precision_counts_a_clear_face_invented_by_the_file():
    ref = [dets([[0, 0, 20, 20]], [0.9])]
    cand = [dets([[0, 0, 20, 20], [60, 60, 90, 90]], [0.9, 0.9])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.precision == 0.5 and agreement.robust_precision == 0.5
    # ... but not one whose reference score sits just under the threshold.
    ref = [dets([[0, 0, 20, 20], [60, 60, 90, 90]], [0.9, SCORE - 0.05])]
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.precision == 0.5 and agreement.robust_precision == 1.0


def test_landmark_error_is_relative_to_the_face_size():
    box = [[0, 0, 10, 10]]
    points = np.tile([5.0, 5.0], 5)
    ref = [dets(box, [0.9], [points])]
    cand = [dets(box, [0.9], [points + np.tile([3.0, 4.0], 5)])]  # every point 5 px off
    agreement = detection_agreement(ref, cand, SCORE)
    assert agreement.landmark_error == pytest.approx(5.0 / 10.0)
    assert agreement.mean_iou == pytest.approx(1.0)


# ---------------------------------------------------------------- error_bound and verdict


@pytest.mark.parametrize("noise", [0.0, 1e-6, 3e-5, 1e-4, 3e-3])
def test_fp32_error_bound_is_the_tolerance_or_a_multiple_of_the_float32_noise(noise):
    """max(abs_tolerance, FLOAT32_NOISE_FACTOR x PyTorch FP32's own error against FP64)."""
    assert FP32.abs_tolerance == 1e-4 and FLOAT32_NOISE_FACTOR >= 2.0
    expected = 1e-4 if FLOAT32_NOISE_FACTOR * noise <= 1e-4 else FLOAT32_NOISE_FACTOR * noise
    assert error_bound(FP32, noise) == pytest.approx(expected)
    assert error_bound(FP32, noise) == max(FP32.abs_tolerance, FLOAT32_NOISE_FACTOR * noise)


@pytest.mark.parametrize("precision", ["fp16", "w8", "int8"])
def test_reduced_precision_has_no_tensor_bound(precision):
    assert error_bound(PARITY_THRESHOLDS[precision], 1e-3) is None


def errors_with(max_errors: dict[str, float], finite: dict[str, bool] | None = None) -> dict[str, OutputError]:
    return {name: OutputError(value, value / 10, 1.0, (finite or {}).get(name, True)) for name, value in max_errors.items()}


def test_verdict_passes_within_the_bound():
    status, reasons = verdict(errors_with({"loc": 9e-5, "conf": 1e-6, "landmarks": 0.0}), GOOD_AGREEMENT, FP32, NOISE)
    assert (status, reasons) == ("pass", [])


def test_verdict_uses_the_noise_of_each_output():
    """2e-4 on landmarks passes when PyTorch FP32 itself is 1.5e-4 off FP64 there, not elsewhere."""
    noise = {"loc": 1e-6, "conf": 1e-6, "landmarks": 1.5e-4}
    assert verdict(errors_with({"loc": 0.0, "conf": 0.0, "landmarks": 2e-4}), GOOD_AGREEMENT, FP32, noise)[0] == "pass"
    status, reasons = verdict(errors_with({"loc": 2e-4, "conf": 0.0, "landmarks": 0.0}), GOOD_AGREEMENT, FP32, noise)
    assert status == "fail" and len(reasons) == 1 and reasons[0].startswith("loc max abs error 2.00e-04 > 1.00e-04")


def test_verdict_flags_non_finite_outputs_even_without_a_tensor_bound():
    errors = errors_with({"loc": 0.0, "conf": float("inf"), "landmarks": 0.0}, finite={"conf": False})
    status, reasons = verdict(errors, GOOD_AGREEMENT, FP16, NOISE)
    assert status == "fail" and any("conf" in r and "non-finite" in r for r in reasons)


def test_verdict_ignores_tensor_errors_for_fp16_but_not_detections():
    big = errors_with({"loc": 0.5, "conf": 0.05, "landmarks": 2.0})
    assert verdict(big, GOOD_AGREEMENT, FP16, NOISE) == ("pass", [])
    lost = replace(GOOD_AGREEMENT, robust_recall=0.9)
    status, reasons = verdict(big, lost, FP16, NOISE)
    assert status == "fail" and len(reasons) == 1 and "recall" in reasons[0] and "0.900" in reasons[0]


def test_verdict_judges_detections_on_the_robust_figures():
    """Plain figures hurt by threshold crossings alone do not fail a file; robust ones do."""
    plain_only = replace(GOOD_AGREEMENT, recall=0.5, precision=0.5)
    assert verdict(errors_with({n: 0.0 for n in OUTPUT_NAMES}), plain_only, FP32, NOISE)[0] == "pass"
    robust_bad = replace(GOOD_AGREEMENT, robust_precision=0.95)
    status, reasons = verdict(errors_with({n: 0.0 for n in OUTPUT_NAMES}), robust_bad, FP32, NOISE)
    assert status == "fail" and len(reasons) == 1 and "precision" in reasons[0]


def test_verdict_lists_every_failed_bar():
    errors = errors_with({"loc": 1.0, "conf": 1.0, "landmarks": 1.0})
    bad = replace(GOOD_AGREEMENT, recall=0.0, precision=0.0, robust_recall=0.0, robust_precision=0.0)
    status, reasons = verdict(errors, bad, FP32, NOISE)
    assert status == "fail" and len(reasons) == 5
    for word in ("loc", "conf", "landmarks", "recall", "precision"):
        assert any(word in r for r in reasons)


# ---------------------------------------------------------------- a swapped output fails


SIZE = 64


def _face_outputs() -> tuple[dict[str, np.ndarray], list[Letterbox], np.ndarray]:
    """Network-like outputs for 2 images with 2 and 1 known faces (all other anchors background)."""
    priors = make_priors(SIZE, SIZE)
    anchors = len(priors)
    faces = [[(4, 4, 30, 30), (36, 30, 60, 58)], [(10, 12, 50, 52)]]
    out = {
        "loc": np.zeros((2, anchors, 4), np.float32),
        "conf": np.tile(np.array([0.99, 0.01], np.float32), (2, anchors, 1)),
        "landmarks": np.zeros((2, anchors, 10), np.float32),
    }
    for image, boxes in enumerate(faces):
        for box in boxes:
            box = np.array(box, np.float64) / SIZE
            k = int(iou_matrix(box[None], np.c_[priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2])[0].argmax())
            out["loc"][image, k] = encode_boxes(box[None], priors[k : k + 1], PRIORS.variances)[0]
            centre = np.tile([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], 5)
            out["landmarks"][image, k] = encode_landmarks(centre[None], priors[k : k + 1], PRIORS.variances)[0]
            out["conf"][image, k] = (0.05, 0.95)
    return out, [Letterbox(1.0, 0, 0, SIZE, SIZE)] * 2, priors


def _detections(out, letterboxes, priors) -> list[Detections]:
    floor = type(DEPLOY_THRESHOLDS)(score=SCORE - ROBUST_MARGIN, nms_iou=DEPLOY_THRESHOLDS.nms_iou, top_k=DEPLOY_THRESHOLDS.top_k)
    return [
        Detections(*postprocess_arrays(out["loc"][i], out["conf"][i], out["landmarks"][i], priors, lb, SIZE, SIZE, floor, PRIORS.variances))
        for i, lb in enumerate(letterboxes)
    ]


def _judge(reference, candidate, letterboxes, priors, thresholds: ParityThresholds = FP32):
    errors = tensor_errors(reference, candidate)
    agreement = detection_agreement(_detections(reference, letterboxes, priors), _detections(candidate, letterboxes, priors), SCORE)
    return verdict(errors, agreement, thresholds, NOISE), agreement


def test_hand_built_outputs_pass_against_themselves():
    reference, letterboxes, priors = _face_outputs()
    assert [len(d.scores) for d in _detections(reference, letterboxes, priors)] == [2, 1]
    (status, reasons), agreement = _judge(reference, {k: v.copy() for k, v in reference.items()}, letterboxes, priors)
    assert status == "pass", reasons
    assert agreement.reference_faces == 3 and agreement.matched == 3


def test_swapped_conf_columns_fail_parity():
    """A converter that swapped the background / face columns of conf: every anchor becomes a face."""
    reference, letterboxes, priors = _face_outputs()
    candidate = dict(reference, conf=reference["conf"][..., ::-1].copy())
    (status, reasons), agreement = _judge(reference, candidate, letterboxes, priors, FP16)
    assert status == "fail"
    # Background anchors become faces: far more faces than PyTorch's three.
    assert agreement.candidate_faces > 10 * agreement.reference_faces
    assert agreement.robust_precision < 0.5
    assert any("precision" in r for r in reasons)
    (status, reasons), _ = _judge(reference, candidate, letterboxes, priors, FP32)
    assert status == "fail" and any(r.startswith("conf max abs error") for r in reasons)


def test_swapped_images_fail_parity():
    """Outputs of the right shape but of the other image of the batch."""
    reference, letterboxes, priors = _face_outputs()
    candidate = {k: v[::-1].copy() for k, v in reference.items()}
    (status, reasons), agreement = _judge(reference, candidate, letterboxes, priors, FP16)
    assert status == "fail" and agreement.robust_recall < 1.0 and agreement.robust_precision < 1.0


def test_swapped_loc_and_landmarks_cannot_pass():
    reference, _, _ = _face_outputs()
    candidate = dict(reference, loc=reference["landmarks"], landmarks=reference["loc"])
    with pytest.raises(ValueError, match="shape"):
        tensor_errors(reference, candidate)
