"""RetinaFace's training augmentation in NumPy + Pillow, deterministic under a seed.

Steps (`augment`): a random square crop whose side is 0.3-1.0 of the image's short side
(RetinaFace's scales; larger scales zoom out, see `random_square_crop`),
keeping the faces whose centre lies inside it (up to 250 tries, else the whole image
padded to a square with the mean colour); resize to the training size; photometric
distortion; horizontal mirror with left/right landmarks swapped.

With probability `mosaic`, a sample is instead a grid of 2x2 or 3x3 tiles, each one
photo augmented as above at the tile's size (`mosaic`): crowds of small faces, which the
training events (handshakes, interviews, couples, families, dancing) hardly have.

Differences from RetinaFace's `data_augment.py`, each on purpose: the distortion runs
after the resize (same distribution, far cheaper on large crops), and faces smaller than
`min_face_size` pixels at the training size are dropped (they cannot match any prior and
only add noise at small training sizes; 0 keeps them all, as RetinaFace does).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from featherface.config import DEFAULT_INPUT_SIZE, NUM_LANDMARKS
from featherface.sdk.preprocess import fill_rgb

__all__ = ["ABSENT", "AugmentConfig", "augment", "distort", "landmarks_present", "mirror", "mosaic", "random_square_crop", "MIRROR_ORDER"]

# After a mirror the left eye is where the right eye was: swap points 0<->1 and 3<->4.
MIRROR_ORDER = (1, 0, 2, 4, 3)
ABSENT = -1.0  # every landmark value of a face without landmarks


def landmarks_present(landmarks: np.ndarray) -> np.ndarray:
    """[K] bool: which faces have their points. Not "x >= 0": after a crop a real point
    can lie left of or above the crop, at a negative coordinate."""
    return (landmarks != ABSENT).any(axis=1)


MEAN_RGB = fill_rgb()  # the SDK's letterbox padding, so that training crops pad alike
RESAMPLERS = (
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.BOX,
    Image.Resampling.NEAREST,
    Image.Resampling.LANCZOS,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Settings of `augment`; defaults are RetinaFace's.

    size: square training size in pixels. crop_scales: crop side as a fraction of the
    image's short side, one drawn uniformly per try (above 1: zoom out). crop_tries: tries before falling back
    to the whole image. min_face_size: faces smaller (min of width, height) at the
    training size are dropped. brightness: max |delta| added to pixel values. contrast,
    saturation: multiplicative ranges. hue: max |shift| in degrees. Each photometric step
    and the mirror happen with probability 0.5. mosaic: probability that a sample is a
    grid of tiles (see `mosaic`), the grid's side drawn from mosaic_grids.
    """

    size: int = DEFAULT_INPUT_SIZE
    crop_scales: tuple[float, ...] = (0.3, 0.45, 0.6, 0.8, 1.0)
    crop_tries: int = 250
    min_face_size: float = 1.0
    brightness: float = 32.0
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.5, 1.5)
    hue: float = 18.0
    mirror: bool = True
    photometric: bool = True
    mosaic: float = 0.0
    mosaic_grids: tuple[int, ...] = (2, 3)


def random_square_crop(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    scales: tuple[float, ...] = AugmentConfig.crop_scales,
    tries: int = AugmentConfig.crop_tries,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Square crop keeping faces whose centre is strictly inside; boxes are clipped to it,
    landmarks shifted (not clipped; absent ones stay -1). A scale above 1 zooms out: the
    square is larger than the short side and what lies outside the image is the mean
    colour, so faces shrink as they do when a whole photo is letterboxed to the input.
    Falls back to the whole image padded bottom/right to a square when no try keeps a face."""
    height, width = image.shape[:2]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    for _ in range(tries):
        side = int(float(rng.choice(scales)) * min(height, width))
        if side < 1:
            continue
        left = int(rng.integers(min(0, width - side), max(0, width - side) + 1))
        top = int(rng.integers(min(0, height - side), max(0, height - side) + 1))
        inside = (
            (centres[:, 0] > left) & (centres[:, 0] < left + side)
            & (centres[:, 1] > top) & (centres[:, 1] < top + side)
        )
        if not inside.any():
            continue
        offset = np.array([left, top, left, top], dtype=np.float32)
        kept = np.clip(boxes[inside] - offset, 0, side)
        points = landmarks[inside].copy()
        present = landmarks_present(points)
        points[present] -= np.tile(offset[:2], points.shape[1] // 2)
        return _window(image, left, top, side), kept.astype(np.float32), points
    side = max(height, width)
    return _window(image, 0, 0, side), boxes.astype(np.float32).copy(), landmarks.copy()


def _window(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The side x side square at (left, top), mean-coloured where it leaves the image."""
    height, width = image.shape[:2]
    if left >= 0 and top >= 0 and left + side <= width and top + side <= height:
        return image[top : top + side, left : left + side]
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[...] = MEAN_RGB
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, width), min(top + side, height)
    canvas[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
    return canvas


def distort(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """RetinaFace's photometric distortion on an RGB uint8 image: brightness, then
    contrast either before or after saturation and hue (each step with probability 0.5)."""
    out = image.astype(np.float32)

    def contrast(x: np.ndarray) -> np.ndarray:
        return x * rng.uniform(*config.contrast) if rng.random() < 0.5 else x

    if rng.random() < 0.5:
        out += rng.uniform(-config.brightness, config.brightness)
    contrast_first = rng.random() < 0.5
    if contrast_first:
        out = contrast(out)
    saturate, shift = rng.random() < 0.5, rng.random() < 0.5
    if saturate or shift:
        hsv = np.asarray(Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).convert("HSV")).astype(np.float32)
        if saturate:
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(*config.saturation), 0, 255)
        if shift:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue, config.hue) * 256.0 / 360.0) % 256.0
        out = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")).astype(np.float32)
    if not contrast_first:
        out = contrast(out)
    return np.clip(out, 0, 255).astype(np.uint8)


def mirror(image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flip left-right: x -> width - x; box corners and left/right landmarks swap roles."""
    width = image.shape[1]
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    points = landmarks.reshape(len(landmarks), NUM_LANDMARKS, 2).copy()  # explicit: a crop may keep no face
    present = landmarks_present(landmarks)
    points[present, :, 0] = width - points[present, :, 0]
    points[present] = points[present][:, list(MIRROR_ORDER)]
    return np.ascontiguousarray(image[:, ::-1]), flipped, points.reshape(landmarks.shape)


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    rng: np.random.Generator,
    config: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB uint8 image, xyxy pixel boxes [K, 4], landmarks [K, 10] with -1 = absent) ->
    the same at config.size x config.size; faces below `min_face_size` are dropped."""
    crop, boxes, landmarks = random_square_crop(image, boxes, landmarks, rng, config.crop_scales, config.crop_tries)
    scale = config.size / crop.shape[0]
    resample = RESAMPLERS[int(rng.integers(len(RESAMPLERS)))]
    resized = np.asarray(Image.fromarray(crop).resize((config.size, config.size), resample))
    boxes = boxes * scale
    present = landmarks_present(landmarks)
    landmarks = np.where(present[:, None], landmarks * scale, ABSENT).astype(np.float32)
    large = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= config.min_face_size
    boxes, landmarks = boxes[large], landmarks[large]
    if config.photometric:
        resized = distort(resized, rng, config)
    if config.mirror and rng.random() < 0.5:
        resized, boxes, landmarks = mirror(resized, boxes, landmarks)
    return resized, boxes.astype(np.float32), landmarks.astype(np.float32)


Sample = tuple[np.ndarray, np.ndarray, np.ndarray]


def mosaic(tiles: list[Sample], size: int) -> Sample:
    """Square tiles (each an `augment` output of the same side) laid row by row on a
    size x size mean-coloured canvas, their boxes and present landmarks shifted with them."""
    grid = int(round(len(tiles) ** 0.5))
    side = tiles[0][0].shape[0]
    if grid * grid != len(tiles) or grid * side > size or any(t[0].shape[:2] != (side, side) for t in tiles):
        raise ValueError(f"mosaic needs a square number of {side}x{side} tiles fitting in {size}, got {len(tiles)}")
    canvas = np.empty((size, size, 3), dtype=np.uint8)
    canvas[...] = MEAN_RGB
    all_boxes, all_landmarks = [], []
    for k, (image, boxes, landmarks) in enumerate(tiles):
        top, left = (k // grid) * side, (k % grid) * side
        canvas[top : top + side, left : left + side] = image
        all_boxes.append(boxes + np.array([left, top, left, top], dtype=np.float32))
        present = landmarks_present(landmarks)[:, None]
        all_landmarks.append(np.where(present, landmarks + np.tile(np.float32([left, top]), landmarks.shape[1] // 2), ABSENT))
    return canvas, np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_landmarks).astype(np.float32)

