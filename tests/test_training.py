"""Training: annotation parsing, augmentation, MultiBoxLoss, distillation terms, the
training loop (one step, resume, time budget), two-process data parallelism, CLI."""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import noise_image
from featherface.config import DEFAULT_INPUT_SIZE, MEAN_BGR
from featherface.model.box_coding import make_priors
from featherface.model.checkpoint import load_weights, save_weights
from featherface.model.registry import get_variant
from featherface.model.v2_ultra import FeatherFaceV2Ultra, FeatherFaceV2UltraConfig
from featherface.training.augment import AugmentConfig, augment, mirror, mosaic, random_square_crop
from featherface.training.cli import add_ablate_parser, add_distill_parser, add_train_parser, train_config_from_args
from featherface.training.data import WiderFaceDataset, parse_label_txt, parse_wider_gt, resolve_training_data
from featherface.training.distill import (
    DistillConfig,
    attention_transfer_loss,
    distillation_loss,
    feature_alignment_loss,
    freeze_teacher,
    kd_kl_loss,
    same_backbone,
    teacher_outputs,
    temperature,
)
from featherface.training.distill_config import SEED_3PHASE, Phase, settings_at
from featherface.training.loss import LossConfig, MultiBoxLoss, match, mine_hard_negatives
from featherface.training.outputs import detector_outputs
from featherface.training.teacher_cache import expand
from featherface.training.trainer import (
    RESUME_FILE,
    RUN_FILE,
    TeacherConfig,
    TrainConfig,
    build_student,
    learning_rate_schedule,
    train,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


def _write_image(path: Path, width: int, height: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise_image(height, width, seed)).save(path)


@pytest.fixture
def tiny_label_txt(tmp_path: Path) -> Path:
    """Eight 64x64 noise images in RetinaFace label.txt layout, two faces each, the first
    face of each image with landmarks."""
    lines = []
    for i in range(8):
        name = f"event/img_{i}.png"
        _write_image(tmp_path / "images" / name, 64, 64, seed=i)
        lines.append(f"# {name}")
        lines.append("8 8 24 24 14 16 0.0 26 16 0.0 20 22 0.0 15 27 0.0 25 27 0.0 0.9")
        lines.append("36 30 20 22 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1")
    label = tmp_path / "label.txt"
    label.write_text("\n".join(lines) + "\n")
    return label


def _tiny_config(data: Path, out: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        data=str(data), out_dir=str(out), epochs=1, batch_size=2, input_size=64, threads=1,
        log_every=1000, augment=AugmentConfig(size=64),
    )
    return dataclasses.replace(base, **changes)


def _quiet(_message: str) -> None:
    pass


# --------------------------------------------------------------------------- data


def test_wider_gt_parser_drops_invalid_and_zero_size_boxes_and_counts_them(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text(textwrap.dedent("""\
        0--Parade/a.jpg
        3
        10 20 30 40 0 0 0 0 0 0
        5 5 0 12 0 0 0 0 0 0
        50 60 10 10 0 0 0 1 0 0
        0--Parade/empty.jpg
        0
        0 0 0 0 0 0 0 0 0 0
        1--Handshaking/b.jpg
        2
        1 2 3 -4 0 0 0 0 0 0
        100 100 8 9 2 0 0 0 1 0
        1--Handshaking/only_invalid.jpg
        1
        7 7 7 7 0 0 0 1 0 0
    """))
    annotations, stats = parse_wider_gt(gt, tmp_path / "images")
    assert [a.path.name for a in annotations] == ["a.jpg", "b.jpg"]
    np.testing.assert_array_equal(annotations[0].boxes, [[10, 20, 40, 60]])
    np.testing.assert_array_equal(annotations[1].boxes, [[100, 100, 108, 109]])
    assert not annotations[0].has_landmarks.any()
    assert (stats.images, stats.faces, stats.dropped_invalid, stats.dropped_zero_size, stats.images_without_faces) == (2, 2, 2, 2, 2)
    assert "dropped 2 invalid and 2 zero-size boxes" in stats.summary()


def test_a_face_count_that_overruns_its_rows_names_the_file_image_and_row(tmp_path):
    gt = tmp_path / "gt.txt"
    gt.write_text("0--Parade/a.jpg\n2\n10 20 30 40 0 0 0 0 0 0\n0--Parade/b.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    with pytest.raises(ValueError) as caught:
        parse_wider_gt(gt, tmp_path / "images")
    assert str(caught.value) == f"{gt}: 0--Parade/a.jpg: face row '0--Parade/b.jpg' is not at least 4 numbers (x y w h ...)"
    label = tmp_path / "label.txt"
    label.write_text("# a.jpg\n10 20 30 x\n")
    with pytest.raises(ValueError, match=r"label.txt: a.jpg: face row '10 20 30 x'"):
        parse_label_txt(label)


def test_label_txt_parser_reads_landmarks_and_drops_zero_size(tmp_path, tiny_label_txt):
    extra = tmp_path / "extra.txt"
    extra.write_text(tiny_label_txt.read_text() + "# event/more.png\n3 3 0 5\n1 1 4 4\n")
    annotations, stats = parse_label_txt(extra)
    assert len(annotations) == 9 and stats.dropped_zero_size == 1
    first = annotations[0]
    assert first.path == tmp_path / "images" / "event" / "img_0.png"
    np.testing.assert_array_equal(first.has_landmarks, [True, False])
    np.testing.assert_array_equal(first.landmarks[0], [14, 16, 26, 16, 20, 22, 15, 27, 25, 27])
    assert (first.landmarks[1] == -1).all()
    assert stats.faces_with_landmarks == 8


def test_real_wider_train_annotations_parse(widerface_root):
    data = resolve_training_data(widerface_root / "WIDER_train")
    assert data.stats.images == len(data.annotations) == 1239
    assert data.stats.faces > 0 and data.stats.dropped_invalid > 0
    for item in data.annotations[:50]:
        assert (item.boxes[:, 2:] > item.boxes[:, :2]).all()


# --------------------------------------------------------------------------- augmentation


def _scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 40, 50], [120, 30, 180, 100], [60, 70, 75, 90]], dtype=np.float32)
    landmarks = np.array([
        [18, 25, 32, 25, 25, 32, 20, 40, 30, 40],
        [-1] * 10,
        [63, 76, 72, 76, 67, 80, 64, 85, 71, 85],
    ], dtype=np.float32)
    return image, boxes, landmarks


def test_augment_is_deterministic_under_a_seed():
    image, boxes, landmarks = _scene()
    config = AugmentConfig(size=64)
    first = augment(image, boxes, landmarks, np.random.default_rng(7), config)
    again = augment(image, boxes, landmarks, np.random.default_rng(7), config)
    other = augment(image, boxes, landmarks, np.random.default_rng(8), config)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_dataset_sample_depends_only_on_seed_epoch_and_index(tiny_label_txt):
    annotations, _ = parse_label_txt(tiny_label_txt)
    dataset = WiderFaceDataset(annotations, AugmentConfig(size=64), seed=3)
    image, target = dataset[2]
    assert image.shape == (3, 64, 64) and target.shape[1] == 15
    torch.testing.assert_close(dataset[2][0], image, rtol=0, atol=0)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[2][0], image)


@pytest.mark.parametrize("seed", range(20))
def test_crop_keeps_only_faces_centred_inside_and_clips_them(seed):
    image, boxes, landmarks = _scene(seed)
    crop, kept, points = random_square_crop(image, boxes, landmarks, np.random.default_rng(seed))
    side = crop.shape[0]
    assert crop.shape[1] == side and len(kept) >= 1
    assert (kept >= 0).all() and (kept <= side).all()
    assert (kept[:, 2:] > kept[:, :2]).all()
    assert len(points) == len(kept)
    out, out_boxes, out_points = augment(image, boxes, landmarks, np.random.default_rng(seed), AugmentConfig(size=48))
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    assert (out_boxes >= 0).all() and (out_boxes <= 48).all()


def test_crop_falls_back_to_the_whole_image_padded_with_the_mean():
    image, boxes, landmarks = _scene()
    crop, kept, _ = random_square_crop(image, boxes, landmarks, np.random.default_rng(0), scales=(0.01,), tries=3)
    assert crop.shape == (200, 200, 3)
    np.testing.assert_array_equal(crop[150, 10], [round(v) for v in MEAN_BGR[::-1]])
    np.testing.assert_array_equal(kept, boxes)


@pytest.mark.parametrize("seed", range(10))
def test_zoom_out_crop_keeps_pixels_and_faces_where_they_were(seed):
    image, boxes, landmarks = _scene(seed)
    crop, kept, points = random_square_crop(image, boxes, landmarks, np.random.default_rng(seed), scales=(2.0,))
    assert crop.shape == (240, 240, 3)
    # The whole 200x120 image lies inside the 240 square: every face is kept, shifted by
    # the image's offset in the square, and the pixels under each face are the image's.
    assert len(kept) == len(boxes)
    dx, dy = kept[0, 0] - boxes[0, 0], kept[0, 1] - boxes[0, 1]
    np.testing.assert_allclose(kept, boxes + [dx, dy, dx, dy])
    np.testing.assert_allclose(points[0], landmarks[0] + np.tile([dx, dy], 5))
    np.testing.assert_array_equal(points[1], landmarks[1])
    x, y = int(dx), int(dy)
    np.testing.assert_array_equal(crop[y : y + 120, x : x + 200], image)
    outside = np.ones(crop.shape[:2], dtype=bool)
    outside[y : y + 120, x : x + 200] = False
    assert (crop[outside] == [round(v) for v in MEAN_BGR[::-1]]).all()


def test_mosaic_lays_tiles_row_by_row_and_shifts_their_faces():
    image, boxes, landmarks = _scene()
    tiles = [augment(image, boxes, landmarks, np.random.default_rng(seed), AugmentConfig(size=32)) for seed in range(4)]
    canvas, all_boxes, all_points = mosaic(tiles, 65)
    assert canvas.shape == (65, 65, 3) and len(all_boxes) == sum(len(t[1]) for t in tiles)
    np.testing.assert_array_equal(canvas[32:64, 32:64], tiles[3][0])  # bottom right: the fourth tile
    assert (canvas[64] == [round(v) for v in MEAN_BGR[::-1]]).all()  # the leftover row: mean colour
    first = len(tiles[0][1]) + len(tiles[1][1]) + len(tiles[2][1])
    np.testing.assert_allclose(all_boxes[first:], tiles[3][1] + 32)
    second = slice(len(tiles[0][1]), len(tiles[0][1]) + len(tiles[1][1]))  # top right: shifted right only
    np.testing.assert_allclose(all_boxes[second], tiles[1][1] + [32, 0, 32, 0])
    present = tiles[3][2][:, 0] >= 0
    np.testing.assert_allclose(all_points[first:][present], tiles[3][2][present] + 32)
    assert (all_points[first:][~present] == -1).all()
    with pytest.raises(ValueError, match="square number"):
        mosaic(tiles[:3], 64)


def test_dataset_mosaic_samples_are_grids_drawn_from_the_seed(tiny_label_txt):
    annotations, _ = parse_label_txt(tiny_label_txt)
    plain = WiderFaceDataset(annotations, AugmentConfig(size=66), seed=3)
    grids = WiderFaceDataset(annotations, AugmentConfig(size=66, mosaic=1.0, mosaic_grids=(3,)), seed=3)
    image, target = grids[1]
    torch.testing.assert_close(grids[1][0], image, rtol=0, atol=0)
    assert image.shape == (3, 66, 66) and not torch.equal(plain[1][0], image)
    # Every face lies inside one 22 px tile of the 3x3 grid.
    tile = np.floor(target[:, :2].numpy() * 66 / 22)
    np.testing.assert_array_less(target[:, 2:4].numpy() * 66, (tile + 1) * 22 + 1e-3)
    # mosaic=0 draws nothing extra from the sample's generator: earlier runs replay exactly.
    torch.testing.assert_close(WiderFaceDataset(annotations, AugmentConfig(size=66, mosaic=0.0), seed=3)[1][0], plain[1][0])


def test_a_point_cropped_off_keeps_the_faces_landmarks():
    """A face near the left edge whose eye falls left of the crop still has its five points
    (the eye at a negative x, or past the right edge once mirrored)."""
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    boxes = np.array([[0, 10, 40, 50]], dtype=np.float32)
    landmarks = np.array([[2, 20, 30, 20, 16, 30, 10, 40, 26, 40]], dtype=np.float32)
    config = AugmentConfig(size=50, crop_scales=(0.6,), photometric=False)
    off_crop = 0
    for seed in range(12):
        _, kept, points = augment(image, boxes, landmarks, np.random.default_rng(seed), config)
        assert len(kept) == 1 and (points != -1).all(), seed
        off_crop += bool((points[0, 0::2] < 0).any() or (points[0, 0::2] > 50).any())
    assert off_crop  # the case at stake happened


def test_mirror_swaps_left_and_right_landmarks():
    image = np.zeros((10, 100, 3), dtype=np.uint8)
    image[:, 0] = 255
    boxes = np.array([[10, 2, 30, 8]], dtype=np.float32)
    # left eye (12, 3), right eye (28, 3), nose (20, 5), left mouth (14, 7), right mouth (26, 7)
    landmarks = np.array([[12, 3, 28, 3, 20, 5, 14, 7, 26, 7], [-1] * 10], dtype=np.float32)
    flipped, fboxes, fpoints = mirror(image, np.vstack([boxes, boxes]), landmarks)
    assert flipped[0, 99, 0] == 255
    np.testing.assert_array_equal(fboxes[0], [70, 2, 90, 8])
    # the new left eye is the mirrored right eye: 100 - 28 = 72 (still left of the right eye)
    np.testing.assert_array_equal(fpoints[0], [72, 3, 88, 3, 80, 5, 74, 7, 86, 7])
    assert (fpoints[1] == -1).all()


def test_a_sample_whose_faces_all_fall_below_the_minimum_size_is_an_empty_sample():
    """A zoomed-out mosaic tile can shrink every face below `min_face_size`; mirrored or
    not, the sample is the image with no faces (it used to stop training at the mirror)."""
    image = np.full((200, 200, 3), 90, dtype=np.uint8)
    boxes = np.array([[50, 50, 60, 60]], dtype=np.float32)
    landmarks = np.full((1, 10), -1, dtype=np.float32)
    config = AugmentConfig(size=20, crop_scales=(1.0,), min_face_size=2.0, photometric=False)
    for seed in range(8):  # both sides of the mirror's coin
        resized, kept_boxes, kept_landmarks = augment(image, boxes, landmarks, np.random.default_rng(seed), config)
        assert resized.shape == (20, 20, 3) and kept_boxes.shape == (0, 4) and kept_landmarks.shape == (0, 10)


# --------------------------------------------------------------------------- loss


def _target(box_xyxy, landmarks=None) -> torch.Tensor:
    points = landmarks if landmarks is not None else [-1.0] * 10
    return torch.tensor([[*box_xyxy, *points, 0.0 if landmarks is None else 1.0]], dtype=torch.float32)


def test_face_exactly_on_a_prior_gets_that_prior_with_zero_loc_target():
    priors = make_priors(64, 64)
    index = 37
    cx, cy, w, h = priors[index].tolist()
    matches = match(_target([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]), priors)
    assert matches.positive[index]
    torch.testing.assert_close(matches.loc[index], torch.zeros(4), atol=1e-5, rtol=0)
    assert not matches.with_landmarks.any()


def test_each_face_gets_its_best_prior_even_below_the_threshold():
    priors = make_priors(64, 64)
    matches = match(_target([0.40, 0.40, 0.43, 0.50]), priors, LossConfig(force_min_iou=0.0))
    assert matches.positive.sum() == 1


def test_hard_negative_mining_keeps_seven_negatives_per_positive():
    generator = torch.Generator().manual_seed(0)
    background_loss = torch.rand(2, 100, generator=generator)
    positive = torch.zeros(2, 100, dtype=torch.bool)
    positive[0, [3, 50]] = True
    positive[1, 7] = True
    background_loss[0, 3] = 10.0  # a positive's loss never makes it a negative
    negative = mine_hard_negatives(background_loss, positive, ratio=7)
    assert negative.sum(dim=1).tolist() == [14, 7]
    assert not (negative & positive).any()
    for i in range(2):
        chosen = background_loss[i][negative[i]]
        others = background_loss[i][~negative[i] & ~positive[i]]
        assert chosen.min() >= others.max()


def test_multibox_loss_on_a_hand_made_case():
    priors = make_priors(64, 64)
    count = priors.shape[0]
    loc = torch.zeros(1, count, 4, requires_grad=True)
    conf = torch.zeros(1, count, 2, requires_grad=True)
    landmarks = torch.zeros(1, count, 10, requires_grad=True)
    # prior 36: a 16 px anchor at (20, 20); its neighbours overlap it with IoU <= 1/3 < 0.35
    cx, cy, w, h = priors[36].tolist()
    face = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
    terms = MultiBoxLoss()(loc, conf, landmarks, [_target(face)], priors)
    assert terms.positive.nonzero()[:, 1].tolist() == [36]
    assert terms.loc.item() == pytest.approx(0.0, abs=1e-6)  # loc target is zero there
    assert terms.landmarks.item() == 0.0  # no landmarks in the data: no landmark loss
    # uniform logits: CE is log 2 on the positive and its 7 hard negatives, over 1 positive
    assert terms.conf.item() == pytest.approx(math.log(2) * 8, rel=1e-5)
    terms.total.backward()
    assert conf.grad.abs().sum() > 0


def test_landmark_loss_counts_only_faces_with_landmarks():
    priors = make_priors(64, 64)
    count = priors.shape[0]

    def face_on(index: int) -> tuple[list[float], list[float]]:
        cx, cy, w, h = priors[index].tolist()
        return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], [cx, cy] * 5

    with_points, points = face_on(36)  # every point on the prior centre: zero landmark target
    without_points, _ = face_on(90)  # a 16 px anchor at (44, 44), no landmarks
    targets = torch.cat([_target(with_points, points), _target(without_points)])
    predicted = torch.ones(1, count, 10)
    terms = MultiBoxLoss()(torch.zeros(1, count, 4), torch.zeros(1, count, 2), predicted, [targets], priors)
    assert terms.positive.nonzero()[:, 1].tolist() == [36, 90]
    assert terms.landmarks.item() == pytest.approx(0.5 * 10, rel=1e-5)  # smooth L1 of 1.0 on 10 values, 1 face


# --------------------------------------------------------------------------- distillation


def test_temperature_schedule_matches_the_formula():
    for epoch, max_epochs in [(0, 10), (5, 10), (9, 10), (0, 1), (123, 400)]:
        assert temperature(epoch, max_epochs) == pytest.approx(4.0 * (1 - epoch / max_epochs) + 2.0)
    assert temperature(0, 10, DistillConfig(temperature_range=1.0, temperature_min=0.5)) == 1.5
    with pytest.raises(ValueError):
        temperature(0, 0)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 50, 2, generator=generator)
    assert kd_kl_loss(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    student = teacher + torch.randn(2, 50, 2, generator=generator)
    assert kd_kl_loss(student, teacher, 4.0).item() > 0
    # scaled by T^2: at the same T, doubling the gap raises the loss
    assert kd_kl_loss(teacher + 2 * (student - teacher), teacher, 4.0) > kd_kl_loss(student, teacher, 4.0)


def test_per_face_kd_is_the_summed_kl_over_the_teachers_expected_face_priors():
    """Hand-made case: 2 images x 3 priors, one prior each where the teacher is sure of a
    face (p = 0.9), background elsewhere."""
    teacher = torch.tensor([[[0.0, 2.1972246], [3.0, 0.0], [3.0, 0.0]]] * 2)  # p(face) 0.9, 0.0474, 0.0474
    student = torch.zeros_like(teacher)  # p = 0.5 everywhere
    p_face = torch.softmax(teacher, dim=-1)[..., 1]
    kl = (p_face * torch.log(p_face / 0.5) + (1 - p_face) * torch.log((1 - p_face) / 0.5)).sum()
    expected = kl / p_face.sum()
    assert kd_kl_loss(student, teacher, 1.0, per="face").item() == pytest.approx(expected.item(), rel=1e-5)
    assert kd_kl_loss(student, teacher, 1.0, per="prior").item() == pytest.approx((kl / 6).item(), rel=1e-5)
    # no face anywhere: the normaliser stays at least 1 instead of exploding
    background = torch.tensor([[[9.0, 0.0]] * 3])
    assert kd_kl_loss(torch.zeros_like(background), background, 1.0, per="face") < 3 * math.log(2)
    with pytest.raises(ValueError, match="per must be"):
        kd_kl_loss(student, teacher, 1.0, per="anchor")


def test_feature_terms_need_no_adapter_and_vanish_when_the_maps_agree():
    generator = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 32, s, s, generator=generator) for s in (8, 4, 2)]
    teacher = [torch.cat([f, f], dim=1) for f in student]  # 64 channels, same per-pixel summaries
    assert feature_alignment_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-5)
    assert attention_transfer_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    other = [torch.randn(2, 64, s, s, generator=generator) for s in (8, 4, 2)]
    assert feature_alignment_loss(student, other).item() > 0.1
    assert attention_transfer_loss(student, other).item() > 0.01


@pytest.mark.parametrize(
    ("epoch", "frozen", "feature_and_attention"),
    [(0, True, True), (99, True, True), (100, False, True), (299, False, True), (300, False, False), (399, False, False)],
)
def test_seed_three_phase_schedule_gives_each_epochs_weights_and_freezing(epoch, frozen, feature_and_attention):
    config = DistillConfig(phases=SEED_3PHASE)
    settings = settings_at(epoch, config)
    assert settings.freeze_backbone is frozen
    loss = settings.loss
    assert (loss.task_weight, loss.kd_weight) == (0.3, 0.7)
    assert (loss.feature_weight, loss.attention_weight) == ((0.1, 0.05) if feature_and_attention else (0.0, 0.0))
    assert (loss.temperature_range, loss.temperature_min) == (4.0, 2.0)


def test_phase_table_bounds_and_an_unphased_config():
    with pytest.raises(ValueError, match="outside the phase table"):
        settings_at(400, DistillConfig(phases=SEED_3PHASE))
    assert settings_at(1234, DistillConfig()) == (DistillConfig(), False)
    with pytest.raises(ValueError, match="increasing"):
        DistillConfig(phases=(Phase(2), Phase(2)))
    with pytest.raises(ValueError, match="unknown loss term"):
        Phase(1, terms_off=("feature",))


@pytest.mark.parametrize("name", ["v2-ultra", "v1"])
def test_detector_outputs_are_the_forward_outputs_with_logits(name):
    torch.manual_seed(0)
    model = get_variant(name).build().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        loc, conf, landmarks = model(x)
        raw = detector_outputs(model, x)
    torch.testing.assert_close(raw.loc, loc)
    torch.testing.assert_close(torch.softmax(raw.conf_logits, dim=-1), conf)
    torch.testing.assert_close(raw.landmarks, landmarks)
    assert [f.shape[-1] for f in raw.levels] == [8, 4, 2]


# --------------------------------------------------------------------------- training loop


def test_one_training_step_gives_a_finite_loss_and_changes_the_parameters(tiny_label_txt, tmp_path):
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in get_variant("v2-ultra").build().state_dict().items()}
    result = train(_tiny_config(tiny_label_txt, tmp_path / "run", max_images=2), _quiet)
    assert result.epochs_done == 1 and len(result.history) == 1
    row = result.history[0]
    assert row["steps"] == 1 and math.isfinite(row["loss"]) and row["loss"] > 0
    assert row["landmarks"] > 0  # label.txt faces have landmarks
    after = load_weights(get_variant("v2-ultra").build(), tmp_path / "run" / "last.pth").state_dict()
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2
    assert (tmp_path / "run" / "log.csv").read_text().startswith("epoch,")


def test_distillation_step_uses_a_frozen_teacher_and_its_backbone(tiny_label_txt, tmp_path):
    torch.manual_seed(1)
    teacher = get_variant("v1").build()
    teacher_file = save_weights(teacher, tmp_path / "teacher.pth")
    config = _tiny_config(
        tiny_label_txt, tmp_path / "run", max_images=2, lr=1e-12, save=str(tmp_path / "student.pth"),
        teacher=TeacherConfig(arch="v1", weights=str(teacher_file), loss=DistillConfig(landmark_weight=0.3, box_weight=0.1)),
    )
    result = train(config, _quiet)
    row = result.history[0]
    assert math.isfinite(row["loss"]) and row["kd"] > 0 and row["feature"] > 0 and row["attention"] > 0
    assert row["temperature"] == pytest.approx(6.0)
    # with a vanishing learning rate the student's backbone is still the teacher's
    student = load_weights(get_variant("v2-ultra").build(), tmp_path / "student.pth")
    for key, value in teacher.body.state_dict().items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(student.body.state_dict()[key], value, atol=1e-6, rtol=0)


def test_phased_distillation_freezes_the_backbone_then_trains_it(tiny_label_txt, tmp_path):
    """The seed's three phases scaled to 1 / 1 / 1 epoch of one step each."""
    torch.manual_seed(2)
    teacher = get_variant("v1").build()
    teacher_file = save_weights(teacher, tmp_path / "teacher.pth")
    phases = (Phase(1, freeze_backbone=True), Phase(2), Phase(3, terms_off=("feature_weight", "attention_weight")))
    config = _tiny_config(
        tiny_label_txt, tmp_path / "run", epochs=3, max_images=2,
        teacher=TeacherConfig(arch="v1", weights=str(teacher_file), loss=DistillConfig(phases=phases)),
    )
    torch.manual_seed(config.seed)
    initial = build_student("v2-ultra")  # the run's student before training
    first = train(dataclasses.replace(config, max_minutes=1e-6), _quiet)  # budget: stop after phase 1
    assert first.epochs_done == 1
    after_phase_1 = load_weights(get_variant("v2-ultra").build(), tmp_path / "run" / "last.pth")
    for key, value in teacher.body.state_dict().items():  # weights and BN statistics
        torch.testing.assert_close(after_phase_1.body.state_dict()[key], value, rtol=0, atol=0, msg=key)
    rest = {k: v for k, v in initial.state_dict().items() if not k.startswith("body.") and v.is_floating_point()}
    assert any(not torch.equal(after_phase_1.state_dict()[k], v) for k, v in rest.items())  # the rest trained

    done = train(dataclasses.replace(config, resume=True), _quiet)
    assert done.epochs_done == 3
    assert all(p.requires_grad for p in done.model.parameters())
    body = done.model.body.state_dict()
    assert any(not torch.equal(body[k], v) for k, v in teacher.body.state_dict().items() if v.is_floating_point())
    phase_1, phase_2, phase_3 = done.history  # the whole run, its first process's epoch included
    assert phase_1 == pytest.approx(first.history[0], nan_ok=True)
    assert phase_2["feature"] > 0 and phase_2["attention"] > 0
    assert phase_3["feature"] == phase_3["attention"] == 0 and phase_3["kd"] > 0
    with pytest.raises(ValueError, match="epochs must be 3"):
        train(dataclasses.replace(config, epochs=4), _quiet)


def test_teacher_cache_stores_what_the_teacher_computes_and_a_second_run_reads_it(tiny_label_txt, tmp_path, monkeypatch):
    torch.manual_seed(3)
    teacher = freeze_teacher(get_variant("retinaface-mnet025").build())
    teacher_file = save_weights(teacher, tmp_path / "teacher.pth")
    loss = DistillConfig(task_weight=1, kd_weight=1, feature_weight=0, attention_weight=0, box_weight=0.5,
                         landmark_weight=0.1, kd_per="face", regression_min_score=0.49)
    config = _tiny_config(tiny_label_txt, tmp_path / "first", max_images=4, teacher=TeacherConfig(
        arch="retinaface-mnet025", weights=str(teacher_file), loss=loss, cache=str(tmp_path / "cache")))
    first = train(config, _quiet)
    stored = sorted(p.name for p in (tmp_path / "cache").glob("*.pt"))
    assert stored == ["e000_r0_s00001.pt", "e000_r0_s00002.pt"]
    # The matching rules in the cache's key, named as in the first caches (2026-12-05), which still load.
    match = json.loads((tmp_path / "cache" / "fingerprint.json").read_text())["match"]
    assert match == {"iou_threshold": 0.35, "force_min_iou": 0.2, "negative_ratio": 7, "loc_weight": 2.0,
                     "conf_weight": 1.0, "landmark_weight": 1.0, "variances": [0.1, 0.2]}

    # The stored targets of step 1 against the teacher recomputed on that batch.
    dataset = WiderFaceDataset(parse_label_txt(tiny_label_txt)[0][:4], dataclasses.replace(config.augment, size=64), seed=config.seed)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=config.seed, drop_last=True)
    images = torch.stack([dataset[i][0] for i in list(sampler)[:2]])
    fresh = teacher_outputs(teacher, images)
    cached = expand(torch.load(tmp_path / "cache" / stored[0], weights_only=True))
    margin = fresh.conf_logits[..., 1] - fresh.conf_logits[..., 0]
    torch.testing.assert_close(cached.conf_logits[..., 1], margin, rtol=1e-3, atol=1e-3)
    confident = F.softmax(fresh.conf_logits, dim=-1)[..., 1] > 0.49  # about half of them
    assert 0 < confident.sum() < confident.numel()
    torch.testing.assert_close(cached.loc[confident], fresh.loc[confident], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(cached.landmarks[confident], fresh.landmarks[confident], rtol=1e-3, atol=1e-3)
    student = detector_outputs(build_student("v2-ultra").eval(), images)
    priors = make_priors(64, 64)
    targets = [dataset[i][1] for i in list(sampler)[:2]]
    task = MultiBoxLoss(config.loss)(student.loc, student.conf_logits, student.landmarks, targets, priors)
    for term in ("total", "kd", "box", "landmarks"):
        want = getattr(distillation_loss(student, fresh, task.total, task.positive, 1.0, loss), term)
        got = getattr(distillation_loss(student, cached, task.total, task.positive, 1.0, loss), term)
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4, msg=term)

    # A second run with the same settings never calls the teacher and trains the same.
    def no_teacher(*_args):
        raise AssertionError("the teacher ran although its outputs were cached")

    monkeypatch.setattr("featherface.training.trainer.teacher_outputs", no_teacher)
    second = train(dataclasses.replace(config, out_dir=str(tmp_path / "second")), _quiet)
    assert second.history[0]["loss"] == pytest.approx(first.history[0]["loss"], rel=1e-3)
    with pytest.raises(ValueError, match=r"other settings \(seed\)"):
        train(dataclasses.replace(config, seed=1), _quiet)
    with pytest.raises(ValueError, match="no feature maps"):
        train(dataclasses.replace(config, teacher=dataclasses.replace(config.teacher, loss=DistillConfig())), _quiet)


def test_resume_restores_epoch_and_optimizer_state_and_matches_an_uninterrupted_run(tiny_label_txt, tmp_path):
    config = _tiny_config(tiny_label_txt, tmp_path / "split", epochs=2, max_images=4)
    first = train(dataclasses.replace(config, max_minutes=1e-6), _quiet)  # budget: stop after epoch 1
    assert first.stopped_early and first.epochs_done == 1
    state = torch.load(tmp_path / "split" / RESUME_FILE, weights_only=True)
    assert state["epoch"] == 0 and state["scheduler"]["last_epoch"] == 2
    resumed = train(dataclasses.replace(config, resume=True), _quiet)
    assert resumed.start_epoch == 1 and resumed.epochs_done == 2
    record = json.loads((tmp_path / "split" / RUN_FILE).read_text())  # the whole run, not its last process
    assert [row["epoch"] for row in record["history"]] == [1, 2]
    assert record["history"][0] == pytest.approx(first.history[0], nan_ok=True)
    assert record["seconds"] >= sum(row["seconds"] for row in record["history"]) > first.history[0]["seconds"]
    state = torch.load(tmp_path / "split" / RESUME_FILE, weights_only=True)
    assert state["epoch"] == 1 and state["scheduler"]["last_epoch"] == 4
    assert all(s["step"] == 4 for s in state["optimizer"]["state"].values())

    straight = train(dataclasses.replace(config, out_dir=str(tmp_path / "straight")), _quiet)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    with pytest.raises(ValueError, match="epochs"):
        train(dataclasses.replace(config, epochs=3, resume=True), _quiet)


DDP_SCRIPT = """
import os, sys, torch
from featherface.training.augment import AugmentConfig
from featherface.training.trainer import TrainConfig, train
data, out = sys.argv[1], sys.argv[2]
config = TrainConfig(data=data, out_dir=out, epochs=1, batch_size=2, input_size=64, threads=1,
                     log_every=1000, augment=AugmentConfig(size=64))
result = train(config, lambda m: None)
torch.save(result.model.state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
"""


@pytest.mark.slow
def test_ddp_two_processes_keep_replicas_equal(tiny_label_txt, tmp_path):
    """torchrun (torch.distributed.run) with 2 CPU processes over gloo, 2 steps each."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone", str(script), str(tiny_label_txt), str(out)],
        capture_output=True, text=True, timeout=120, env=env, cwd=REPO,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0 = torch.load(out / "rank0.pt", weights_only=True)
    rank1 = torch.load(out / "rank1.pt", weights_only=True)
    for key, value in rank0.items():
        torch.testing.assert_close(rank1[key], value, rtol=0, atol=0, msg=key)
    torch.manual_seed(TrainConfig.seed)  # as the trainer seeds before it builds the student (DDP_SCRIPT keeps the default)
    initial = dict(get_variant("v2-ultra").build().named_parameters())  # parameters: BN buffers move even without learning
    assert any(not torch.equal(p, rank0[k]) for k, p in initial.items())  # the replicas trained
    history = (out / "log.csv").read_text().splitlines()
    assert len(history) == 2 and history[1].split(",")[1] == "2"  # 8 images / (2 per step x 2 processes)


# --------------------------------------------------------------------------- CLI


def test_cli_defaults_are_the_run_configs_own(monkeypatch):
    """The parser reads its defaults from TrainConfig and TeacherConfig (one copy): a changed
    default there is the CLI's default too, and a bare command builds the default config."""
    from dataclasses import dataclass, replace

    from featherface.training import run_config
    from featherface.training.run_config import TeacherConfig

    def parse(command):
        parser = argparse.ArgumentParser()
        commands = parser.add_subparsers(dest="command")
        for add in (add_train_parser, add_distill_parser):
            add(commands)
        return train_config_from_args(parser.parse_args([command]), distill=command == "distill")

    trained = parse("train")
    assert replace(trained, out_dir=TrainConfig.out_dir) == TrainConfig()
    assert parse("distill").teacher.arch == TeacherConfig.arch

    @dataclass(frozen=True)
    class Changed(run_config.TrainConfig):
        batch_size: int = 7
        lr: float = 0.005
        log_every: int = 3

    monkeypatch.setattr("featherface.training.cli.TrainConfig", Changed)
    changed = parse("train")
    assert (changed.batch_size, changed.lr, changed.log_every) == (7, 0.005, 3)


def test_cli_registers_subcommands_and_builds_the_configs(tmp_path):
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    for add in (add_train_parser, add_distill_parser, add_ablate_parser):
        add(commands)
    args = parser.parse_args(["distill", "--out", str(tmp_path), "--epochs", "12", "--input-size", "320",
                              "--max-minutes", "70", "--landmark-weight", "0.3", "--switch", "feature_reuse", "--channels", "64"])
    assert callable(args.run)
    config = train_config_from_args(args, distill=True)
    assert (config.epochs, config.input_size, config.augment.size, config.max_minutes) == (12, 320, 320, 70.0)
    assert config.teacher.arch == "v1" and config.teacher.loss.landmark_weight == 0.3
    assert config.teacher.loss.kd_weight == 0.7 and config.switched_innovations == ("feature_reuse",)
    assert config.channels == 64 and TrainConfig().channels == 0  # 0: the variant's own width
    train_args = parser.parse_args(["train", "--arch", "retinaface-mnet025"])
    assert train_config_from_args(train_args, distill=False).teacher is None
    assert callable(parser.parse_args(["ablate"]).run)
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--input-size", "100"])
    assert train_config_from_args(train_args, distill=False).epochs == TrainConfig.epochs
    # The teacher's backbone starts a fresh student, never one given by --init-weights
    # (unless asked for): stages that continue a trained student keep its backbone.
    def copies_backbone(*options):
        return train_config_from_args(parser.parse_args(["distill", *options]), distill=True).teacher.init_student_backbone

    assert copies_backbone() and not copies_backbone("--no-teacher-backbone")
    assert not copies_backbone("--init-weights", "w.pth") and copies_backbone("--init-weights", "w.pth", "--teacher-backbone")
    with pytest.raises(SystemExit):
        parser.parse_args(["distill", "--teacher-backbone", "--no-teacher-backbone"])
    assert train_config_from_args(parser.parse_args(["distill", "--mosaic", "0.5"]), distill=True).augment.mosaic == 0.5
    for bad in ("1.5", "-0.1", "x"):
        with pytest.raises(SystemExit):
            parser.parse_args(["distill", "--mosaic", bad])
    augment = train_config_from_args(parser.parse_args(["distill", "--mosaic-grids", "2,3,4"]), distill=True).augment
    assert augment.mosaic_grids == (2, 3, 4)
    assert train_config_from_args(parser.parse_args(["distill"]), distill=True).augment == AugmentConfig(size=DEFAULT_INPUT_SIZE)
    for option, bad in (("--mosaic-grids", "1,2"), ("--mosaic-grids", "2.5")):
        with pytest.raises(SystemExit):
            parser.parse_args(["distill", option, bad])
    preset = train_config_from_args(parser.parse_args(["distill", "--preset", "seed-3phase"]), distill=True)
    assert preset.epochs == 400 and preset.teacher.loss.phases == SEED_3PHASE


def test_cli_takes_shared_values_from_their_owners():
    from featherface.config import PRIORS

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_distill_parser(commands)
    add_ablate_parser(commands)
    args = parser.parse_args(["distill"])
    assert args.input_size == DEFAULT_INPUT_SIZE
    assert train_config_from_args(args, distill=True).teacher.loss == DistillConfig()
    ablate = parser.parse_args(["ablate"])
    assert ablate.eval_size == ablate.latency_size == DEFAULT_INPUT_SIZE
    assert parser.parse_args(["ablate", "--eval-size", "0", "--latency-size", "320"]).eval_size == 0
    stride = max(PRIORS.steps)
    for option in ("--eval-size", "--latency-size"):
        for bad in (str(stride + 1), "-32", "x"):
            with pytest.raises(SystemExit):
                parser.parse_args(["ablate", option, bad])
    with pytest.raises(SystemExit):
        parser.parse_args(["ablate", "--latency-size", "0"])


def test_standalone_cli_reports_bad_data_in_one_line(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "featherface.training.cli", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("python -m featherface.training.cli: error: no training data at")


def test_evaluate_helper_scores_wider_val_images(widerface_root, shared_weights):
    from featherface.training.evaluate import evaluate_model

    model = load_weights(get_variant("retinaface-mnet025").build(), shared_weights / "retinaface_mnet025.pth")
    result = evaluate_model(model, widerface_root, input_size=320, limit=4)
    assert result.images == 4 and result.protocol == "letterboxed 320"
    assert 0.3 < result.easy <= 1.0


def test_default_ablation_flips_each_innovation_from_the_default_once():
    from featherface.training.ablate import default_runs

    runs = default_runs()
    assert [r.name for r in runs] == [
        "default", "no_feature_reuse", "with_attention_multiplication", "no_progressive_enhancement",
        "with_multiscale_context", "with_dynamic_weight_sharing", "no_distillation",
    ]
    assert all(len(r.switched) == 1 for r in runs[1:-1]) and not runs[-1].distill


def test_ablate_trains_each_switch_with_one_budget_and_writes_the_table(tiny_label_txt, tmp_path, widerface_root):
    from featherface.training.ablate import AblationRun, ablate

    teacher_file = save_weights(get_variant("v1").build(), tmp_path / "teacher.pth")
    base = _tiny_config(tiny_label_txt, tmp_path / "unused", max_images=2, teacher=TeacherConfig(weights=str(teacher_file)))
    runs = [AblationRun("full"), AblationRun("no_feature_reuse", ("feature_reuse",)), AblationRun("no_distillation", distill=False)]
    rows = ablate(base, runs, tmp_path / "ablation", eval_size=64, eval_limit=1, latency_size=64, widerface_root=widerface_root, progress=_quiet)
    assert [r["run"] for r in rows] == ["full", "no_feature_reuse", "no_distillation"]
    assert rows[0]["params"] == rows[1]["params"]  # innovations are parameter-free
    assert all(r["epochs"] == 1 and r["latency_ms"] > 0 and 0 <= r["hard"] <= 1 for r in rows)
    table = (tmp_path / "ablation" / "ablation.md").read_text()
    assert "| no_feature_reuse | feature_reuse | yes |" in table and "| no_distillation | - | no |" in table
    assert (tmp_path / "ablation" / "full" / "last.pth").is_file()


def test_ablation_variant_starts_from_the_full_networks_checkpoint(tmp_path):
    """`ablate --init-weights`: a variant with the level gate switched on takes every weight
    the default network has, and keeps its own gate's initialisation."""
    from featherface.model.checkpoint import CheckpointError, save_weights
    from featherface.training.trainer import build_student, init_from_checkpoint

    torch.manual_seed(0)
    full = build_student("v2-ultra", ())
    path = tmp_path / "full.pth"
    save_weights(full, path)
    variant = build_student("v2-ultra", ("dynamic_weight_sharing",))
    gate = {k: v.clone() for k, v in variant.state_dict().items() if k.startswith("gate.")}
    init_from_checkpoint(variant, path, "v2-ultra", ("dynamic_weight_sharing",))
    reference = full.state_dict()
    assert sorted(gate) == ["gate.bias", "gate.scale"]
    assert all(torch.equal(v, reference[k] if k in reference else gate[k]) for k, v in variant.state_dict().items())
    assert len(variant.state_dict()) == len(reference) + 2
    with pytest.raises(CheckpointError):  # without the switch the load stays strict
        init_from_checkpoint(build_student("v2-ultra", ("dynamic_weight_sharing",)), path, "v2-ultra", ())


def _trained_looking_default_network(seed: int) -> torch.nn.Module:
    """The default v2-ultra in eval mode with BN statistics a trained network could have,
    so that its outputs are not trivial."""
    from featherface.training.trainer import build_student

    torch.manual_seed(seed)
    network = build_student("v2-ultra", ()).eval()
    with torch.no_grad():
        for bn in (m for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.running_mean.normal_(0, 0.1)
            bn.bias.normal_(0, 0.1)
    return network


def _assert_same_outputs_then_backpropagate(reference: torch.nn.Module, grown: torch.nn.Module, seed: int) -> None:
    """`grown` (initialised from `reference`'s checkpoint) computes exactly its outputs; then
    a loss over all outputs is backpropagated through `grown` in training mode."""
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(seed))
    grown.eval()
    with torch.no_grad():
        for a, b in zip(reference(x), grown(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
    grown.train()
    loc, conf, landmarks = grown(x)
    (loc.square().sum() + conf.sum() + landmarks.square().sum()).backward()


def test_deep_context_added_to_trained_weights_starts_as_the_network_it_joins(tmp_path):
    """`--switch deep_context --init-weights W`: the residual dilated blocks begin at zero
    (their last BN's scale), so the first step sees W's own outputs, and they then train."""
    from featherface.model.checkpoint import save_weights
    from featherface.training.trainer import build_student, init_from_checkpoint

    trained = _trained_looking_default_network(seed=3)
    path = save_weights(trained, tmp_path / "trained.pth")
    deep = build_student("v2-ultra", ("deep_context",))
    init_from_checkpoint(deep, path, "v2-ultra", ("deep_context",))
    added = [k for k in deep.state_dict() if k not in trained.state_dict()]
    assert added and all(k.startswith("deep_context.") for k in added)
    _assert_same_outputs_then_backpropagate(trained, deep, seed=5)
    for level in deep.deep_context:  # the zero scale still learns
        assert level[-1].weight.grad.abs().sum() > 0


def test_level_heads_start_as_copies_of_the_shared_head_then_train_apart(tmp_path):
    """A shared-head checkpoint (every stage before level heads) starts the default network,
    whose heads are per level: each starts as the shared head, so the first step sees the
    checkpoint's own outputs; the levels' heads then get their own gradients. With
    `--switch level_heads` the same file loads back into a shared-head network exactly."""
    from featherface.model.checkpoint import CheckpointError, save_weights
    from featherface.training.trainer import build_student, init_from_checkpoint

    torch.manual_seed(4)
    shared = build_student("v2-ultra", ("level_heads",)).eval()
    path = save_weights(shared, tmp_path / "shared.pth")
    split = build_student("v2-ultra", ())
    assert len(shared.BboxHead) == 1 and len(split.BboxHead) == 3
    added = sum(p.numel() for p in split.parameters()) - sum(p.numel() for p in shared.parameters())
    assert added == 2 * shared.config.channels * 2 * (2 + 4 + 10) + 2 * 2 * (2 + 4 + 10)  # two more 1x1 heads per task
    init_from_checkpoint(split, path, "v2-ultra", ())
    again = build_student("v2-ultra", ("level_heads",))
    init_from_checkpoint(again, path, "v2-ultra", ("level_heads",))
    split.eval()
    again.eval()
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        for a, b, c in zip(shared(x), split(x), again(x)):
            torch.testing.assert_close(b, a, rtol=0, atol=0)
            torch.testing.assert_close(c, a, rtol=0, atol=0)
    split.train()
    loc, conf, landmarks = split(x)
    (loc.square().sum() + conf.sum() + landmarks.square().sum()).backward()
    grads = [head.conv1x1.weight.grad for head in split.BboxHead]
    assert all(g.abs().sum() > 0 for g in grads) and not torch.equal(grads[0], grads[1])
    with pytest.raises(CheckpointError):  # an undeclared extra module is still refused
        init_from_checkpoint(build_student("v2-ultra", ("dynamic_weight_sharing",)), path, "v2-ultra", ())


def test_a_wider_pyramid_starts_as_the_narrower_checkpoint_then_trains_its_new_channels(tmp_path):
    """`--channels 2C --init-weights W` (W with C channels): the old channels keep W's
    weights and no old output reads a new channel, so the first step sees W's own outputs;
    the weights that join new channels to old outputs then get gradients. A checkpoint
    wider than the network is refused in one line."""
    from featherface.model.checkpoint import CheckpointError, save_weights
    from featherface.training.trainer import build_student, init_from_checkpoint

    narrow = _trained_looking_default_network(seed=7)
    path = save_weights(narrow, tmp_path / "narrow.pth")
    width = 2 * narrow.config.channels
    wide = build_student("v2-ultra", (), width)
    init_from_checkpoint(wide, path, "v2-ultra", ())
    assert wide.config.channels == width and wide.lateral[0][0].weight.shape[0] == width
    _assert_same_outputs_then_backpropagate(narrow, wide, seed=8)
    old = narrow.config.channels
    assert wide.BboxHead[0].conv1x1.weight.grad[:, old:].abs().sum() > 0  # the zeros learn
    with pytest.raises(CheckpointError, match="cannot narrow"):
        init_from_checkpoint(build_student("v2-ultra", (), old // 2), path, "v2-ultra", ())


# --------------------------------------------------------------------------- V2 Ultra's recipe


# The switches that give V2 Ultra the teacher's LeakyReLU backbone, which sharing needs.
LEAKY_BACKBONE = ("relu_backbone",) if FeatherFaceV2UltraConfig().relu_backbone else ()


def _student_sharing_the_teachers_backbone(seed: int):
    torch.manual_seed(seed)
    teacher = freeze_teacher(get_variant("retinaface-mnet025").build())
    student = build_student("v2-ultra", LEAKY_BACKBONE).eval()
    student.body.load_state_dict(teacher.body.state_dict())
    return student, teacher


def test_shared_backbone_teacher_outputs_equal_a_separate_teacher_pass():
    student, teacher = _student_sharing_the_teachers_backbone(seed=11)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(12))
    assert same_backbone(student, teacher)
    with torch.no_grad():
        backbone_levels = student.body(x)
    separate, shared = teacher_outputs(teacher, x), teacher_outputs(teacher, None, backbone_levels)
    for a, b in zip(separate[:3], shared[:3]):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    own, from_levels = detector_outputs(student, x), detector_outputs(student, None, backbone_levels)
    for a, b in zip(own[:3], from_levels[:3]):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_a_backbone_differing_in_one_bn_statistic_is_not_shared():
    student, teacher = _student_sharing_the_teachers_backbone(seed=13)
    student.body.stage1[0][1].running_mean[0] += 1e-3
    assert not same_backbone(student, teacher)


def test_a_relu_backbone_with_the_teachers_weights_is_not_shared():
    teacher = freeze_teacher(get_variant("retinaface-mnet025").build())
    student = FeatherFaceV2Ultra(FeatherFaceV2UltraConfig(relu_backbone=True)).eval()
    student.body.load_state_dict(teacher.body.state_dict())
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in student.body.modules())
    assert not same_backbone(student, teacher)


def test_weights_of_a_leaky_backbone_load_only_by_deliberate_transfer(tmp_path):
    """The keys are the same either way: the recorded activation keeps a LeakyReLU-trained
    checkpoint out of a ReLU network, except through `init_from_checkpoint` (ultra-relu)."""
    from featherface.model.checkpoint import CheckpointError, load_weights, save_weights
    from featherface.training.trainer import init_from_checkpoint

    torch.manual_seed(1)
    leaky = save_weights(FeatherFaceV2Ultra(FeatherFaceV2UltraConfig(relu_backbone=False)), tmp_path / "leaky.pth")
    with pytest.raises(CheckpointError, match="trained with a LeakyReLU backbone"):
        load_weights(FeatherFaceV2Ultra(FeatherFaceV2UltraConfig(relu_backbone=True)), leaky)
    student = FeatherFaceV2Ultra(FeatherFaceV2UltraConfig(relu_backbone=True))
    init_from_checkpoint(student, leaky, "v2-ultra", ())
    saved = torch.load(leaky, weights_only=True)
    assert bool(student.relu_backbone) and not bool(saved["relu_backbone"])
    assert all(torch.equal(v, saved[k]) for k, v in student.state_dict().items() if k != "relu_backbone")


def test_ultra_frozen_recipe_shares_one_backbone_pass_and_keeps_it_bit_identical(tiny_label_txt, tmp_path):
    torch.manual_seed(14)
    teacher = get_variant("retinaface-mnet025").build()
    teacher_file = save_weights(teacher, tmp_path / "teacher.pth")
    loss = DistillConfig(task_weight=1, kd_weight=2, feature_weight=0, attention_weight=0, box_weight=0.5,
                         landmark_weight=0.1, temperature_range=0, temperature_min=1, phases=(Phase(2, freeze_backbone=True),))
    config = _tiny_config(tiny_label_txt, tmp_path / "run", epochs=2, max_images=4, lr=1e-2, switched_innovations=LEAKY_BACKBONE,
                          teacher=TeacherConfig(arch="retinaface-mnet025", weights=str(teacher_file), loss=loss))
    messages: list[str] = []
    result = train(config, messages.append)
    assert any("share one frozen backbone pass" in m for m in messages)
    for key, value in teacher.body.state_dict().items():  # weights and BN statistics
        torch.testing.assert_close(result.model.body.state_dict()[key], value, rtol=0, atol=0, msg=key)
    neck = {k: v for k, v in result.model.state_dict().items() if not k.startswith("body.") and v.is_floating_point()}
    torch.manual_seed(config.seed)  # the trainer's seeding before it builds the student: `fresh` is the run's start
    fresh = dict(build_student("v2-ultra", LEAKY_BACKBONE).named_parameters())  # BN buffers move even at lr 0
    assert any(not torch.equal(p, neck[k]) for k, p in fresh.items() if k in neck)  # the neck and heads trained
    assert all(math.isfinite(row["loss"]) and row["kd"] > 0 and row["box_kd"] >= 0 for row in result.history)


@pytest.mark.parametrize("total_steps", [1, 2, 3, 5, 10, 11, 1000])
def test_the_learning_rate_schedule_runs_any_number_of_steps(total_steps):
    """OneCycleLR divides by zero when its warm-up rounds to no step (10 steps at 10 %)."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1e-3)
    schedule = learning_rate_schedule(optimizer, 1e-3, total_steps, 0.1)
    for _ in range(total_steps):
        optimizer.step()
        schedule.step()
    assert all(math.isfinite(lr) and 0 < lr <= 1e-3 for lr in schedule.get_last_lr())


@pytest.mark.parametrize("parser", ["parse_label_txt", "parse_wider_gt"])
def test_a_binary_file_given_as_labels_is_one_error_naming_it(parser, tmp_path):
    from featherface.training import data

    photo = tmp_path / "face.jpg"
    photo.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=f"{photo}: not a text label file"):
        getattr(data, parser)(photo, tmp_path)
