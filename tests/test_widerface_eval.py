"""The WIDER FACE evaluator reproduces the official protocol, on hand-built and real data."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import require_shared
from featherface.widerface import (
    SETTINGS,
    GroundTruth,
    GTImage,
    WiderAP,
    bbox_overlaps,
    evaluate,
    load_ground_truth,
    norm_scores,
    paired_ap_difference,
    read_predictions,
    write_predictions,
)


def _image(name: str, boxes, keep=None, event: str = "0--Parade") -> GTImage:
    """A test image whose faces all count in every setting unless ``keep`` says otherwise."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if keep is None:
        keep = {s: np.arange(len(boxes)) for s in SETTINGS}
    return GTImage(event, name, boxes, keep)


def _with_scores(boxes, scores) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.column_stack([boxes, np.broadcast_to(scores, len(boxes))])


FOUR_FACES = [[0, 0, 10, 10], [100, 0, 20, 20], [0, 100, 30, 30], [100, 100, 40, 40]]


@pytest.fixture(scope="module")
def wider_dir() -> Path:
    return require_shared("data/widerface")


@pytest.fixture(scope="module")
def official_gt(wider_dir: Path) -> GroundTruth:
    return load_ground_truth(wider_dir / "ground_truth")


# --------------------------------------------------------------------------- synthetic


def test_perfect_predictions_give_ap_one_on_every_setting():
    gt = GroundTruth.from_images(
        [
            _image("a", FOUR_FACES),
            _image("b", FOUR_FACES[:2], keep={"easy": [0], "medium": [0], "hard": [0, 1]}),
        ]
    )
    preds = {k: _with_scores(im.boxes, 1.0) for k, im in gt.images.items()}
    result = evaluate(preds, gt)
    assert list(result.by_setting().values()) == [1.0, 1.0, 1.0]
    assert result.images == 2
    assert result.faces == {"easy": 5, "medium": 5, "hard": 6}


def test_dropping_half_the_faces_halves_ap():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    # Two of four faces found, no false positive: precision 1 up to recall 1/2.
    result = evaluate({("0--Parade", "a"): _with_scores(FOUR_FACES[:2], [0.9, 0.8])}, gt)
    assert list(result.by_setting().values()) == pytest.approx([0.5] * 3)


def test_false_positive_between_hits_gives_hand_computed_ap():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    boxes = [FOUR_FACES[0], [300, 300, 10, 10], FOUR_FACES[1]]  # hit, false positive, hit
    result = evaluate({("0--Parade", "a"): _with_scores(boxes, [1.0, 0.5, 0.0])}, gt)
    # recall 1/4 at precision 1, then recall 2/4 at precision 2/3: AP = 1/4 + 1/4 * 2/3.
    assert result.easy == pytest.approx(0.25 + 0.25 * 2 / 3)


def test_iou_uses_inclusive_pixel_plus_one_areas():
    # x1y1x2y2 (0,0,9,9) and (5,0,14,9): 10x10 boxes overlapping on 5x10 pixels.
    iou = bbox_overlaps(np.array([[0.0, 0, 9, 9]]), np.array([[5.0, 0, 14, 9], [20.0, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[50 / 150, 0.0]])


@pytest.mark.parametrize(
    "shift, expected_ap",
    [
        (3, 1.0),  # xywh (0,0,10,10) becomes x2 = 10, area 11*11: IoU 88/154 = 0.57 -> a hit
        (4, 0.5),  # IoU 77/165 = 0.47 < 0.5 -> a false positive, the face is missed
    ],
)
def test_jittered_box_below_iou_half_is_a_false_positive(shift: int, expected_ap: float):
    faces = [[0, 0, 10, 10], [100, 0, 10, 10]]
    gt = GroundTruth.from_images([_image("a", faces)])
    boxes = [faces[0], [100 + shift, 0, 10, 10]]
    result = evaluate({("0--Parade", "a"): _with_scores(boxes, [0.9, 0.8])}, gt)
    # With the miss: precision 1 at recall 1/2, then the false positive adds no recall.
    assert result.hard == pytest.approx(expected_ap)


def test_detection_of_ignored_face_is_not_a_false_positive():
    boxes = FOUR_FACES[:2]
    keep = {"easy": [1], "medium": [0, 1], "hard": [0, 1]}  # face 0 ignored in easy only
    gt = GroundTruth.from_images([_image("a", boxes, keep)])
    # The ignored face is detected first (score 1), the kept one second: still AP 1.
    result = evaluate({("0--Parade", "a"): _with_scores(boxes, [1.0, 0.5])}, gt)
    assert result.easy == 1.0
    assert result.faces["easy"] == 1
    # Once the face is gone from the ground truth, the same detection is a false positive.
    gt_without = GroundTruth.from_images([_image("a", boxes[1:])])
    result = evaluate({("0--Parade", "a"): _with_scores(boxes, [1.0, 0.5])}, gt_without)
    assert result.easy == pytest.approx(0.5)


def test_only_images_with_predictions_are_evaluated():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES), _image("b", FOUR_FACES[:1])])
    only_a = {("0--Parade", "a"): _with_scores(FOUR_FACES, 1.0)}
    result = evaluate(only_a, gt)
    assert result.easy == 1.0 and result.images == 1
    assert result.faces["easy"] == 4
    # An image given with no detections is evaluated: its face counts as missed.
    result = evaluate({**only_a, ("0--Parade", "b"): np.zeros((0, 5))}, gt)
    assert result.images == 2 and result.faces["easy"] == 5
    assert result.easy == pytest.approx(0.8)


def _twelve_images() -> GroundTruth:
    return GroundTruth.from_images([_image(f"i{k}", FOUR_FACES) for k in range(12)])


def test_paired_difference_is_the_difference_of_the_two_aps_and_zero_against_itself():
    gt = _twelve_images()
    found_all = {key: _with_scores(FOUR_FACES, [0.9, 0.8, 0.7, 0.6]) for key in gt.images}
    found_half = {key: _with_scores(FOUR_FACES[: 2 + k % 3], [0.9, 0.8, 0.7, 0.6][: 2 + k % 3])
                  for k, key in enumerate(gt.images)}
    diff = paired_ap_difference(found_half, found_all, gt, samples=200)
    for s in SETTINGS:
        assert diff.difference[s] == pytest.approx(getattr(evaluate(found_half, gt), s) - getattr(evaluate(found_all, gt), s))
        assert diff.low[s] < diff.difference[s] < 0  # never ahead on a photo, behind on two in three: never luck
        assert diff.low[s] <= diff.high[s] < 0
    same = paired_ap_difference(found_half, found_half, gt, samples=50)
    assert all(same.difference[s] == same.low[s] == same.high[s] == 0 for s in SETTINGS)
    assert (diff.images, diff.samples, diff.confidence) == (12, 200, 0.95)


def test_paired_interval_straddles_zero_when_each_set_wins_on_different_photos():
    gt = _twelve_images()
    scores = [0.9, 0.8, 0.7, 0.6]
    # Set a misses a face on the even photos, set b on the odd ones: equal AP, and which is
    # ahead on a resample depends only on which photos it drew.
    a = {key: _with_scores(FOUR_FACES[: 3 + k % 2], scores[: 3 + k % 2]) for k, key in enumerate(gt.images)}
    b = {key: _with_scores(FOUR_FACES[: 4 - k % 2], scores[: 4 - k % 2]) for k, key in enumerate(gt.images)}
    diff = paired_ap_difference(a, b, gt, samples=300)
    assert diff.difference["hard"] == pytest.approx(0)
    assert diff.low["hard"] < 0 < diff.high["hard"]
    assert paired_ap_difference(a, b, gt, samples=300) == diff  # seeded: the same interval every run


def test_paired_difference_of_a_setting_without_faces_is_nan_without_a_warning(recwarn):
    gt = GroundTruth.from_images([_image(f"i{k}", FOUR_FACES, keep={"easy": [], "medium": [0, 1], "hard": [0, 1, 2, 3]})
                                  for k in range(6)])
    a = {key: _with_scores(FOUR_FACES, 1.0) for key in gt.images}
    b = {key: _with_scores(FOUR_FACES[:2], 1.0) for key in gt.images}
    diff = paired_ap_difference(a, b, gt, samples=20)
    assert np.isnan([diff.difference["easy"], diff.low["easy"], diff.high["easy"]]).all()
    assert diff.difference["medium"] == 0 and diff.difference["hard"] == pytest.approx(0.5)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_paired_difference_refuses_sets_of_different_images():
    gt = _twelve_images()
    a = {key: _with_scores(FOUR_FACES, 1.0) for key in gt.images}
    b = dict(list(a.items())[:-1])
    with pytest.raises(ValueError, match="cover different images .1 in one only, e.g. 0--Parade/i11"):
        paired_ap_difference(a, b, gt)


def test_predictions_for_unknown_image_raise_naming_it():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    with pytest.raises(ValueError, match="9--Press/nope"):
        evaluate({("9--Press", "nope"): _with_scores(FOUR_FACES, 1.0)}, gt)


def test_scores_are_min_max_normalised_over_all_images():
    box = [[0, 0, 1, 1]]
    preds = {("e", "a"): _with_scores(box * 2, [0.2, 0.6]), ("e", "b"): _with_scores(box, 0.4)}
    out = norm_scores(preds)
    np.testing.assert_allclose(out[("e", "a")][:, 4], [0.0, 1.0])
    np.testing.assert_allclose(out[("e", "b")][:, 4], [0.5])
    assert preds[("e", "a")][0, 4] == 0.2  # inputs untouched
    # As the official code, the range starts at [min 1, max 0]: scores above 1 keep min 1.
    above_one = norm_scores({("e", "a"): _with_scores(box * 2, [2.0, 4.0])})
    np.testing.assert_allclose(above_one[("e", "a")][:, 4], [1 / 3, 1])
    # All scores equal: the official code divides by zero; here they all rank at 1.
    equal = norm_scores({("e", "a"): _with_scores(box * 2, 0.7)})
    np.testing.assert_array_equal(equal[("e", "a")][:, 4], 1.0)


def test_ap_does_not_depend_on_score_scale_or_file_order():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    boxes = [FOUR_FACES[0], [300, 300, 10, 10], FOUR_FACES[1], FOUR_FACES[2]]
    scores = np.array([0.9, 0.7, 0.5, 0.3])
    base = evaluate({("0--Parade", "a"): _with_scores(boxes, scores)}, gt)
    scaled = evaluate({("0--Parade", "a"): _with_scores(boxes, scores / 10)}, gt)
    shuffled = evaluate({("0--Parade", "a"): _with_scores(boxes, scores)[[3, 1, 0, 2]]}, gt)
    for s in SETTINGS:
        assert getattr(scaled, s) == pytest.approx(getattr(base, s)) and getattr(shuffled, s) == getattr(base, s)


def test_write_read_round_trip_truncates_corners_like_original_script(tmp_path: Path):
    xyxy = np.array([[10.7, 20.2, 50.9, 80.99], [-3.5, 4.0, 9.99, 12.5]])
    scores = np.array([0.25, 0.875])
    path = write_predictions(tmp_path, "0--Parade", "0_Parade_x_1", xyxy, scores)
    assert path == tmp_path / "0--Parade" / "0_Parade_x_1.txt"
    assert path.read_text().splitlines()[:2] == ["0_Parade_x_1", "2"]
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    preds = read_predictions(tmp_path)
    assert list(preds) == [("0--Parade", "0_Parade_x_1")]
    # Highest score first; x = int(x1), w = int(x2) - int(x1) (int() truncates toward zero).
    expected = [[-3, 4, 12, 8, 0.875], [10, 20, 40, 60, 0.25]]
    np.testing.assert_array_equal(preds[("0--Parade", "0_Parade_x_1")], expected)


def test_read_rejects_truncated_file(tmp_path: Path):
    (tmp_path / "0--Parade").mkdir()
    (tmp_path / "0--Parade" / "a.txt").write_text("a\n3\n1 2 3 4 0.5\n")
    with pytest.raises(ValueError, match="header says 3"):
        read_predictions(tmp_path)


@pytest.mark.parametrize("body, message", [
    ("1\n1 2 3 4 nan\n", "not a finite number"),
    ("1\n1 2 3 4 inf\n", "not a finite number"),
    ("1\n1 2 3 4\n", "x y w h score"),
    ("2\n1 2 3 4 0.5\nb.jpg\n", "not a WIDER prediction file"),
    ("one\n", "not a WIDER prediction file"),
])
def test_read_rejects_what_would_score_wrong_naming_the_file(body, message, tmp_path: Path):
    """A NaN score would turn every normalised score into 1.0 (min/max ignore it)."""
    path = tmp_path / "0--Parade" / "a.txt"
    path.parent.mkdir()
    path.write_text("a\n" + body)
    with pytest.raises(ValueError, match=message) as caught:
        read_predictions(tmp_path)
    assert str(path) in str(caught.value)


def test_write_refuses_a_non_finite_score_or_box(tmp_path: Path):
    with pytest.raises(ValueError, match="0--Parade/a: a box or score is not a finite number"):
        write_predictions(tmp_path, "0--Parade", "a", np.array([[1, 2, 3, 4.0]]), np.array([np.nan]))
    with pytest.raises(ValueError, match="not a finite number"):
        write_predictions(tmp_path, "0--Parade", "a", np.array([[1, 2, np.inf, 4.0]]), np.array([0.5]))
    assert not (tmp_path / "0--Parade" / "a.txt").exists()


# --------------------------------------------------------------------------- official files


@pytest.mark.shared
def test_official_mat_files_hold_all_3226_validation_images_in_61_events(official_gt: GroundTruth):
    assert len(official_gt) == 3226
    assert len(official_gt.events) == 61
    faces = {s: sum(len(im.keep[s]) for im in official_gt.images.values()) for s in SETTINGS}
    all_faces = sum(len(im.boxes) for im in official_gt.images.values())
    assert faces["easy"] < faces["medium"] < faces["hard"] <= all_faces


@pytest.mark.shared
def test_subset_images_and_boxes_match_the_official_ground_truth(wider_dir: Path, official_gt: GroundTruth):
    images = sorted((wider_dir / "WIDER_val" / "images").glob("*/*.jpg"))
    assert len(images) == 315
    missing = [p for p in images if (p.parent.name, p.stem) not in official_gt.images]
    assert not missing
    lines = (wider_dir / "wider_face_split" / "wider_face_val_bbx_gt.txt").read_text().split("\n")
    i = 0
    while i < len(lines) and lines[i].strip():
        event, name = lines[i].strip().removesuffix(".jpg").split("/")
        n = int(lines[i + 1])
        boxes = np.array([line.split()[:4] for line in lines[i + 2 : i + 2 + n]], dtype=float).reshape(-1, 4)
        np.testing.assert_array_equal(boxes, official_gt.images[(event, name)].boxes)
        i += 2 + max(n, 1)  # an image without faces still has one all-zero line


@pytest.mark.shared
def test_ground_truth_as_predictions_scores_ap_one_on_real_subset(wider_dir: Path, official_gt: GroundTruth):
    subset = [(p.parent.name, p.stem) for p in (wider_dir / "WIDER_val" / "images").glob("*/*.jpg")]
    preds = {k: _with_scores(official_gt.images[k].boxes, 1.0) for k in subset}
    result = evaluate(preds, official_gt)
    assert list(result.by_setting().values()) == [1.0, 1.0, 1.0]
    assert result.images == 315
    assert 0 < result.faces["easy"] < result.faces["medium"] < result.faces["hard"]


def test_curves_are_the_precision_envelope_spread_over_recall():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    boxes = [FOUR_FACES[0], [300, 300, 10, 10], FOUR_FACES[1]]  # hit, false positive, hit
    curve = evaluate({("0--Parade", "a"): _with_scores(boxes, [1.0, 0.5, 0.0])}, gt).curves["easy"]
    assert len(curve["recall"]) == len(curve["precision"]) <= 100
    assert curve["recall"] == sorted(curve["recall"]) and curve["recall"][-1] == 0.5
    assert curve["precision"] == sorted(curve["precision"], reverse=True)  # an envelope never rises
    # Recall 1/4 is reached at precision 1, recall 2/4 only at 2/3 (the hand-computed AP above).
    pairs = set(zip(curve["recall"], curve["precision"]))
    assert (0.25, 1.0) in pairs and (0.5, round(2 / 3, 5)) in pairs


@pytest.mark.shared
def test_keep_lists_select_faces_by_height_as_the_official_settings_do(official_gt: GroundTruth):
    """The .mat keep lists are 1-based; read one off and the "ignored" faces are no longer
    the small ones. Officially every face taller than 50 / 30 / 10 px counts in easy /
    medium / hard (the rest are ignored or kept by other criteria)."""
    for setting, height in {"easy": 50, "medium": 30, "hard": 10}.items():
        ignored, kept = [], []
        for image in official_gt.images.values():
            mask = np.zeros(len(image.boxes), bool)
            mask[image.keep[setting]] = True
            kept.append(image.boxes[mask, 3])
            ignored.append(image.boxes[~mask, 3])
        assert np.concatenate(ignored).max() <= height, setting
        assert np.percentile(np.concatenate(kept), 1) >= height, setting


def test_ap_records_read_back_from_the_json_they_write():
    gt = GroundTruth.from_images([_image("a", FOUR_FACES)])
    scored = evaluate({("0--Parade", "a"): _with_scores(FOUR_FACES[:2], [0.9, 0.8])}, gt)
    against = paired_ap_difference({("0--Parade", "a"): _with_scores(FOUR_FACES[:2], [0.9, 0.8])},
                                   {("0--Parade", "a"): _with_scores(FOUR_FACES, 1.0)}, gt, samples=5)
    full = replace(scored, protocol="letterboxed 640", seconds=1.5, events={"0--Parade": replace(scored, curves={})},
                   against=against)
    data = json.loads(json.dumps(full.to_json()))
    assert set(data) == {"easy", "medium", "hard", "images", "faces", "curves", "protocol", "seconds", "events", "against"}
    assert data["against"]["hard"] == {"difference": -0.5, "low": -0.5, "high": -0.5}
    assert "curves" not in data["events"]["0--Parade"]
    assert WiderAP.from_json(data) == full
    assert full.percent() == "50.0 / 50.0 / 50.0"
    assert "events" not in scored.to_json() and replace(scored, events={}).to_json()["events"] == {}  # none scored vs none found


@pytest.mark.parametrize("damage", ["not a mat file", "missing key"])
def test_a_damaged_ground_truth_file_is_named_in_one_error(damage, tmp_path):
    from scipy.io import savemat

    from featherface.widerface import load_ground_truth

    for name in ("face", "easy", "medium", "hard"):
        savemat(tmp_path / f"wider_{name}_val.mat", {"something_else": np.zeros(1)})
    if damage == "not a mat file":
        (tmp_path / "wider_face_val.mat").write_bytes(b"\xff" * 300)
    with pytest.raises(ValueError, match=r"wider_face_val\.mat: not an official WIDER FACE ground-truth file"):
        load_ground_truth(tmp_path)
