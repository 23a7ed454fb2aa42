"""The published checkpoints find the annotated faces of real WIDER FACE val photos.

Full pipeline at the photo's original size: BGR float minus MEAN_BGR, NCHW, network,
NumPy prior decoding, score 0.5, NMS 0.4; compared with the official annotations of the
same image in wider_face_split/wider_face_val_bbx_gt.txt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require_shared
from featherface.config import DEPLOY_THRESHOLDS, MEAN_BGR, PRIORS
from featherface.model.registry import create_model
from featherface.sdk.box_coding import decode_boxes, iou_matrix, make_priors, nms

Image = pytest.importorskip("PIL.Image")

PHOTOS = (
    "0--Parade/0_Parade_Parade_0_102.jpg",  # a crowd: 39 annotated faces, 7 of them >= 20 px wide
    "13--Interview/13_Interview_Interview_2_People_Visible_13_189.jpg",  # 33 faces, 9 >= 20 px
)
CHECKPOINTS = {
    "v1": "featherface_v1_paper.pth",
    "v1-489k": "featherface_v1_489k.pth",
    "retinaface-mnet025": "retinaface_mnet025.pth",
}
MIN_FACE_WIDTH = 20
MATCH_IOU = 0.5
SCORE = 0.5
NMS_IOU = 0.4


def read_wider_gt(annotation_file: Path, image: str) -> np.ndarray:
    """Boxes [K, 4] as (x, y, w, h) pixels of `image` from an official *_bbx_gt.txt.

    Format: the image path, the face count, then one `x y w h blur expression
    illumination invalid occlusion pose` line per face (one line of zeros when 0 faces).
    """
    lines = annotation_file.read_text().splitlines()
    i = 0
    while i < len(lines):
        name, count = lines[i].strip(), int(lines[i + 1])
        rows = lines[i + 2 : i + 2 + max(count, 1)]
        if name == image:
            return np.array([[float(v) for v in row.split()[:4]] for row in rows[:count]]).reshape(-1, 4)
        i += 2 + max(count, 1)
    raise KeyError(f"{image} not in {annotation_file}")


def to_network_input(path: Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    bgr = rgb[..., ::-1] - np.asarray(MEAN_BGR, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]


def detect(model: torch.nn.Module, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Pixel xyxy boxes and scores after score filter and NMS."""
    _, _, height, width = image.shape
    with torch.inference_mode():
        loc, conf, _ = model(image)
    priors = make_priors(height, width)
    assert loc.shape[1] == priors.shape[0]
    boxes = decode_boxes(loc[0].numpy(), priors, PRIORS.variances) * np.array([width, height, width, height])
    scores = conf[0, :, 1].numpy()
    keep = scores > SCORE
    boxes, scores = boxes[keep], scores[keep]
    order = nms(boxes, scores, NMS_IOU)
    return boxes[order], scores[order]


def greedy_match(gt_xyxy: np.ndarray, det_xyxy: np.ndarray, threshold: float) -> np.ndarray:
    """One-to-one matching by descending IoU; returns the matched detection per GT or -1."""
    matched = np.full(len(gt_xyxy), -1)
    if len(gt_xyxy) == 0 or len(det_xyxy) == 0:
        return matched
    iou = iou_matrix(gt_xyxy, det_xyxy)
    used = set()
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        g, d = np.unravel_index(flat, iou.shape)
        if iou[g, d] < threshold:
            break
        if matched[g] < 0 and d not in used:
            matched[g] = d
            used.add(d)
    return matched


@pytest.fixture(scope="module")
def wider_root() -> Path:
    return require_shared("data/widerface")


@pytest.fixture(scope="module")
def weights_dir() -> Path:
    return require_shared("weights")


@pytest.fixture(scope="module")
def photos(wider_root: Path) -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    annotations = wider_root / "wider_face_split" / "wider_face_val_bbx_gt.txt"
    return {
        rel: (to_network_input(wider_root / "WIDER_val" / "images" / rel), read_wider_gt(annotations, rel))
        for rel in PHOTOS
    }


def test_thresholds_are_the_deployment_defaults():
    assert (SCORE, NMS_IOU) == (DEPLOY_THRESHOLDS.score, DEPLOY_THRESHOLDS.nms_iou)


def test_gt_reader_reads_the_official_format(photos):
    _, gt = photos[PHOTOS[0]]
    assert gt.shape == (39, 4)
    np.testing.assert_array_equal(gt[0], [806, 442, 24, 32])


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
@pytest.mark.parametrize("photo", PHOTOS)
def test_checkpoint_finds_the_annotated_faces_at_original_size(arch, photo, photos, weights_dir):
    image, gt_xywh = photos[photo]
    model = create_model(arch, weights_dir / CHECKPOINTS[arch])
    boxes, scores = detect(model, image)

    gt_xyxy = np.concatenate([gt_xywh[:, :2], gt_xywh[:, :2] + gt_xywh[:, 2:]], axis=1)
    large = gt_xywh[:, 2] >= MIN_FACE_WIDTH
    assert large.sum() >= 5  # the photo really tests something

    matched = greedy_match(gt_xyxy[large], boxes, MATCH_IOU)
    recall = (matched >= 0).mean()
    assert recall >= 0.8, f"{arch} on {photo}: {int((matched >= 0).sum())}/{int(large.sum())} large faces found"

    # Detections overlapping no annotated face at all (any size, IoU < 0.3) are false alarms.
    if len(boxes):
        unmatched = int((iou_matrix(boxes, gt_xyxy).max(axis=1) < 0.3).sum())
    else:
        unmatched = 0
    assert unmatched <= 2 + 0.1 * len(boxes), f"{arch} on {photo}: {unmatched} of {len(boxes)} detections match no face"
    assert len(boxes) <= 2 * len(gt_xywh)
    assert np.all((scores > SCORE) & (scores <= 1.0))


@pytest.mark.parametrize("arch", ["retinaface-mnet025"])  # the cheapest of the three
def test_the_documented_bgr_mean_normalisation_is_what_makes_it_work(arch, photos, weights_dir):
    """Control: on the crowd photo the same network finds far fewer faces when fed RGB
    order or 0..1 scaled pixels, so the test above really checks the preprocessing."""
    image, gt_xywh = photos[PHOTOS[0]]
    model = create_model(arch, weights_dir / CHECKPOINTS[arch])
    mean = torch.tensor(MEAN_BGR).reshape(1, 3, 1, 1)
    rgb = (image + mean).flip(1) - mean
    unit_scaled = (image + mean) / 255.0
    gt_xyxy = np.concatenate([gt_xywh[:, :2], gt_xywh[:, :2] + gt_xywh[:, 2:]], axis=1)

    def faces_found(x: torch.Tensor) -> int:
        return int((greedy_match(gt_xyxy, detect(model, x)[0], MATCH_IOU) >= 0).sum())

    found = faces_found(image)
    assert faces_found(rgb) < found / 2
    assert faces_found(unit_scaled) < found / 2
