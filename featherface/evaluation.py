"""WIDER FACE evaluation of any detector (a torch network or a bundle's model file).

A detector is a function from an RGB image to (boxes [K, 4] xyxy in image pixels,
scores [K]); predictions are written in the standard layout (`write_predictions`, boxes
truncated to integers as the published RetinaFace script does) and scored with the
official Easy / Medium / Hard protocol on exactly the images given.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from featherface.config import ORIENTATIONS, WIDER_EVAL_THRESHOLDS
from featherface.sdk.image_io import load_image
from featherface.widerface import (
    GroundTruth,
    Key,
    WiderAP,
    evaluate,
    load_ground_truth,
    paired_ap_difference,
    read_predictions,
    write_predictions,
)

if TYPE_CHECKING:
    from featherface.sdk.detector import Detector

DetectFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def detector_detect_fn(detector: "Detector") -> DetectFn:
    """A model file's detect function: the path `Detector.detect` takes on a device
    (`frame_input`, `run_input`), decoded at the evaluation thresholds (WIDER_EVAL_THRESHOLDS).
    `featherface eval --bundle` and the build's AP check both measure it."""

    def detect(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor, letterbox = detector.frame_input(rgb)
        boxes, scores, _ = detector.decode_arrays(detector.run_input(tensor), 0, letterbox, WIDER_EVAL_THRESHOLDS)
        return boxes, scores

    return detect


def val_images(widerface_root: str | Path) -> list[tuple[str, str, Path]]:
    """(event, image name without extension, path) of every WIDER_val image, sorted."""
    images = Path(widerface_root) / "WIDER_val" / "images"
    if not images.is_dir():
        raise ValueError(f"no WIDER_val/images under {widerface_root}")
    found = [(p.parent.name, p.stem, p) for p in sorted(images.glob("*/*.jpg"))]
    if not found:
        raise ValueError(f"no validation images (*.jpg) in {images}")
    return found


def oriented(images: list[tuple[str, str, Path]], orientation: str | None) -> list[tuple[str, str, Path]]:
    """The images wider than tall ("landscape"), taller than wide ("portrait"), or all (None);
    sizes as stored, read from the file headers (WIDER FACE photos carry no EXIF rotation)."""
    if orientation is None:
        return images
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")

    def wide(path: Path) -> bool:
        with Image.open(path) as image:
            width, height = image.size
        return width > height if orientation == "landscape" else height > width

    return [image for image in images if wide(image[2])]


def protocol_name(input_size: int | None) -> str:
    return "original size" if not input_size else f"letterboxed {input_size}"


def _event_ap(predictions: dict[Key, np.ndarray], gt: GroundTruth, event: str) -> WiderAP:
    """`evaluate` of one event's images alone, without the precision-recall curves."""
    return replace(evaluate({key: boxes for key, boxes in predictions.items() if key[0] == event}, gt), curves={})


def evaluate_detector(
    detect: DetectFn, widerface_root: str | Path, pred_dir: str | Path, *, limit: int = 0, orientation: str | None = None,
    progress: Callable[[str], None] | None = None, on_image: Callable[[int, int], None] | None = None,
    by_event: bool = False, against: str | Path | None = None,
) -> WiderAP:
    """AP of `detect` on WIDER_val (the first `limit` images; 0 = all; of one `orientation`
    when given: `oriented`), predictions kept in `pred_dir`, with its wall time.

    Progress: `on_image(done, total)` after every image (a progress bar), else a `progress`
    line every 50 images; `progress` also says when the scoring, the last step, starts.

    by_event: also score each WIDER event (the images' folder, e.g. 0--Parade) alone, in
    `events` (without curves); a gap that sits in one event tells a domain shift (a scene
    absent from training) from a weakness everywhere.

    against: a baseline's prediction folder (an earlier `featherface eval --out`) covering
    the same images; `against` in the result is this AP minus the baseline's, with a 95 %
    interval from a paired bootstrap over the images (`paired_ap_difference`). It is read
    before any inference, so a folder that lacks an image fails at once.

    Predictions go to a staging folder beside `pred_dir` and move in only once every image
    was read, so an unreadable image (ImageError) leaves `pred_dir` as it was.
    """
    if limit < 0:
        raise ValueError(f"the image limit must be 0 (all) or positive, got {limit}")
    root, out = Path(widerface_root), Path(pred_dir)
    images = oriented(val_images(root), orientation)[: limit or None]
    if not images:
        raise ValueError(f"{root}: no WIDER_val images{f' in {orientation} orientation' if orientation else ''} to evaluate")
    gt = load_ground_truth(root / "ground_truth")
    unknown = [f"{event}/{name}" for event, name, _ in images if (event, name) not in gt.images]
    if unknown:  # found before minutes of inference, not after
        raise ValueError(f"{root}: {len(unknown)} WIDER_val images are not in the ground truth: {', '.join(unknown[:5])}")
    wanted = {(event, name) for event, name, _ in images}
    baseline = _baseline(Path(against), wanted) if against is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    started = time.perf_counter()
    try:
        for i, (event, name, path) in enumerate(images, start=1):
            boxes, scores = detect(load_image(path))
            write_predictions(stage, event, name, boxes, scores)
            if on_image:
                on_image(i, len(images))
            elif progress and (i % 50 == 0 or i == len(images)):
                progress(f"{i}/{len(images)} images in {time.perf_counter() - started:.0f}s")
        for staged in stage.glob("*/*.txt"):
            (out / staged.parent.name).mkdir(parents=True, exist_ok=True)
            os.replace(staged, out / staged.parent.name / staged.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if progress:
        progress(f"scoring Easy / Medium / Hard AP of {len(images)} images")
    predictions = {k: v for k, v in read_predictions(out).items() if k in wanted}
    events = {event: _event_ap(predictions, gt, event) for event in dict.fromkeys(e for e, _, _ in images)} if by_event else None
    result = replace(evaluate(predictions, gt), events=events, seconds=round(time.perf_counter() - started, 1))
    if baseline is None:
        return result
    if progress:
        progress(f"paired bootstrap against {against} over the {len(images)} images")
    return replace(result, against=paired_ap_difference(predictions, baseline, gt))


def _baseline(folder: Path, wanted: set[Key]) -> dict[Key, np.ndarray]:
    """A baseline's predictions for exactly the `wanted` images; ValueError naming the
    folder when it is not a prediction folder or lacks one of them."""
    if not folder.is_dir():
        raise ValueError(f"baseline {folder}: not a prediction folder (the --out of an earlier featherface eval)")
    predictions = read_predictions(folder)
    missing = sorted(wanted - set(predictions))
    if missing:
        shown = ", ".join(f"{event}/{name}" for event, name in missing[:3])
        raise ValueError(f"baseline {folder}: no predictions for {len(missing)} of the {len(wanted)} images "
                         f"evaluated ({shown}): a paired comparison needs the same images")
    return {key: predictions[key] for key in wanted}
