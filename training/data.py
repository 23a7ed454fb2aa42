"""Training annotations (official WIDER FACE ground truth or RetinaFace `label.txt`) and the
torch Dataset that turns them into augmented, normalised samples.

Conventions: boxes are xyxy pixels of the original image; landmarks are five (x, y)
pixel points (left eye, right eye, nose, left mouth corner, right mouth corner, "left"
as seen in the image), or -1 everywhere for a face without landmarks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from featherface.config import NUM_LANDMARKS
from featherface.sdk.image_io import load_image
from featherface.sdk.preprocess import normalize

from .augment import ABSENT, AugmentConfig, augment, landmarks_present, mosaic

__all__ = [
    "ImageAnnotation",
    "ParseStats",
    "TrainingData",
    "WiderFaceDataset",
    "collate",
    "parse_label_txt",
    "parse_wider_gt",
    "resolve_training_data",
]

LANDMARK_WIDTH = 2 * NUM_LANDMARKS
# Official WIDER attribute columns after x y w h: blur expression illumination invalid occlusion pose.
WIDER_INVALID_COLUMN = 7


@dataclass(frozen=True)
class ImageAnnotation:
    """One training image: faces as xyxy pixels [K, 4] and landmarks [K, 10] (-1 = absent)."""

    path: Path
    boxes: np.ndarray
    landmarks: np.ndarray

    @property
    def has_landmarks(self) -> np.ndarray:
        """[K] bool: whether each face has its five points."""
        return landmarks_present(self.landmarks)


@dataclass
class ParseStats:
    """What a parser kept and dropped; `summary()` is the line for the training log."""

    images: int = 0
    faces: int = 0
    faces_with_landmarks: int = 0
    dropped_invalid: int = 0  # WIDER's `invalid` flag set
    dropped_zero_size: int = 0  # width or height <= 0, or non-finite coordinates
    images_without_faces: int = 0  # nothing left to learn from: not used for training

    def summary(self) -> str:
        return (
            f"{self.images} images, {self.faces} faces ({self.faces_with_landmarks} with landmarks); "
            f"dropped {self.dropped_invalid} invalid and {self.dropped_zero_size} zero-size boxes, "
            f"{self.images_without_faces} images left without faces"
        )


def _keep_face(x: float, y: float, w: float, h: float, stats: ParseStats) -> bool:
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        stats.dropped_zero_size += 1
        return False
    return True


def _finish(path: Path, boxes: list, landmarks: list, stats: ParseStats, out: list[ImageAnnotation]) -> None:
    if not boxes:
        stats.images_without_faces += 1
        return
    lm = np.asarray(landmarks, dtype=np.float32).reshape(-1, LANDMARK_WIDTH)
    out.append(ImageAnnotation(path, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), lm))
    stats.images += 1
    stats.faces += len(boxes)
    stats.faces_with_landmarks += int(landmarks_present(lm).sum())


def _label_text(path: Path) -> str:
    """A label file's text; a binary file given by mistake is named, not a decoder's message."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text label file (WIDER FACE's bbx_gt.txt or RetinaFace's label.txt)") from None


def parse_wider_gt(gt_file: str | Path, image_root: str | Path) -> tuple[list[ImageAnnotation], ParseStats]:
    """Parse an official `wider_face_*_bbx_gt.txt` (image path, face count, then per face
    `x y w h blur expression illumination invalid occlusion pose`).

    Drops faces flagged invalid and boxes of zero or negative size, and images left
    without a face; every drop is counted in the returned `ParseStats`. An image with
    0 faces is followed by one placeholder line of zeros, which is skipped.
    """
    gt_file, image_root = Path(gt_file), Path(image_root)
    lines = [line.strip() for line in _label_text(Path(gt_file)).splitlines()]
    lines = [line for line in lines if line]
    stats, out, i = ParseStats(), [], 0
    while i < len(lines):
        name = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise ValueError(f"{gt_file}: line after {name!r} must be a face count") from None
        rows = lines[i + 2 : i + 2 + max(count, 1)]  # a count of 0 still has one placeholder row
        i += 2 + max(count, 1)
        boxes: list[list[float]] = []
        for row in rows[:count]:
            values = _face_numbers(row, f"{gt_file}: {name}")
            x, y, w, h = values[:4]
            if len(values) > WIDER_INVALID_COLUMN and values[WIDER_INVALID_COLUMN] == 1:
                stats.dropped_invalid += 1
                continue
            if _keep_face(x, y, w, h, stats):
                boxes.append([x, y, x + w, y + h])
        _finish(image_root / name, boxes, [[ABSENT] * LANDMARK_WIDTH] * len(boxes), stats, out)
    return out, stats


def _face_numbers(row: str, where: str) -> list[float]:
    """A face row's numbers; ValueError naming `where` and the row when it is not one (a
    face count that does not match the rows puts the next image's name here)."""
    try:
        values = [float(v) for v in row.split()]
    except ValueError:
        values = []
    if len(values) < 4:
        raise ValueError(f"{where}: face row {row!r} is not at least 4 numbers (x y w h ...)")
    return values


def parse_label_txt(label_file: str | Path, image_root: str | Path | None = None) -> tuple[list[ImageAnnotation], ParseStats]:
    """Parse RetinaFace's `label.txt`: `# <image path>` then one row per face,
    `x y w h` optionally followed by five `(x, y, visibility)` landmark triples and a score.

    A face has landmarks when its first landmark x is >= 0 (the files write -1 when
    absent). Images are looked up under `image_root` (default: `images/` beside the file).
    Zero-size boxes and images left without faces are dropped and counted.
    """
    label_file = Path(label_file)
    image_root = Path(image_root) if image_root is not None else label_file.parent / "images"
    stats, out = ParseStats(), []
    name: str | None = None
    boxes: list[list[float]] = []
    landmarks: list[list[float]] = []
    for raw in _label_text(label_file).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if name is not None:
                _finish(image_root / name, boxes, landmarks, stats, out)
            name, boxes, landmarks = line[1:].strip(), [], []
            continue
        if name is None:
            raise ValueError(f"{label_file}: face row {line!r} before any '# image' line")
        values = _face_numbers(line, f"{label_file}: {name}")
        x, y, w, h = values[:4]
        if not _keep_face(x, y, w, h, stats):
            continue
        boxes.append([x, y, x + w, y + h])
        if len(values) >= 4 + 3 * NUM_LANDMARKS - 1 and values[4] >= 0:
            points = [values[4 + 3 * k + d] for k in range(NUM_LANDMARKS) for d in (0, 1)]
            landmarks.append(points)
        else:
            landmarks.append([ABSENT] * LANDMARK_WIDTH)
    if name is not None:
        _finish(image_root / name, boxes, landmarks, stats, out)
    return out, stats


@dataclass(frozen=True)
class TrainingData:
    annotations: list[ImageAnnotation]
    stats: ParseStats
    source: str


def resolve_training_data(path: str | Path) -> TrainingData:
    """Annotations from any of: a RetinaFace `label.txt`; a WIDER FACE root holding
    `WIDER_train/images` and `wider_face_split/`; or the `WIDER_train` folder itself
    (its ground truth then sits in `../wider_face_split`)."""
    path = Path(path)
    if path.is_file():
        annotations, stats = parse_label_txt(path)
        return TrainingData(annotations, stats, f"RetinaFace label file {path}")
    candidates = [
        (path / "wider_face_split" / "wider_face_train_bbx_gt.txt", path / "WIDER_train" / "images"),
        (path.parent / "wider_face_split" / "wider_face_train_bbx_gt.txt", path / "images"),
    ]
    for gt_file, images in candidates:
        if gt_file.is_file() and images.is_dir():
            annotations, stats = parse_wider_gt(gt_file, images)
            return TrainingData(annotations, stats, f"WIDER FACE {gt_file} with images in {images}")
    if (path / "label.txt").is_file():
        return resolve_training_data(path / "label.txt")
    raise ValueError(
        f"no training data at {path}: expected a RetinaFace label.txt, a WIDER FACE root with "
        "WIDER_train/images and wider_face_split/wider_face_train_bbx_gt.txt, or its WIDER_train folder"
    )


@dataclass
class WiderFaceDataset(Dataset):
    """Augmented samples; sample i of epoch e is a pure function of (seed, e, i).

    Returns (image [3, S, S] float32 BGR minus mean, target [K, 15] float32) where a
    target row is normalised xyxy (4), normalised landmarks (10, -1 when absent) and a
    landmark flag (1 present, 0 absent).
    """

    annotations: list[ImageAnnotation]
    augment_config: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.annotations[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        config = self.augment_config
        if config.mosaic and rng.random() < config.mosaic:
            grid = int(rng.choice(config.mosaic_grids))
            tile = replace(config, size=config.size // grid)
            others = rng.integers(len(self.annotations), size=grid * grid - 1)
            tiles = [self._augment(self.annotations[i], rng, tile) for i in (index, *others)]
            image, boxes, landmarks = mosaic(tiles, config.size)
        else:
            image, boxes, landmarks = self._augment(item, rng, config)
        size = config.size
        flag = landmarks_present(landmarks)[:, None].astype(np.float32)
        landmarks = np.where(flag > 0, landmarks / size, ABSENT)
        target = np.concatenate([boxes / size, landmarks, flag], axis=1).astype(np.float32)
        return torch.from_numpy(normalize(image)[0]), torch.from_numpy(target)

    @staticmethod
    def _augment(item: ImageAnnotation, rng: np.random.Generator, config: AugmentConfig):
        return augment(load_image(item.path), item.boxes, item.landmarks, rng, config)


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stack images; keep targets as a list (faces per image vary)."""
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)
