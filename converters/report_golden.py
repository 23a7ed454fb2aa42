"""Each file of a bundle re-run on the bundle's golden images, for the report's error
histograms and detection pictures: the PyTorch side comes from golden.npz, so no torch
network is needed (only the runtimes that open the files)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featherface.config import OUTPUT_NAMES
from featherface.sdk.preprocess import Letterbox

from .parity import Detections


@dataclass(frozen=True)
class FileRun:
    """One model file on the golden inputs; `problem` says why there are no figures."""

    abs_errors: dict[str, np.ndarray]  # output name -> |file - PyTorch|, flattened
    detections: list[Detections]  # per golden image, model-input pixels, down to the robust floor
    problem: str | None = None


@dataclass(frozen=True)
class GoldenRun:
    names: list[str]
    images_rgb: list[np.ndarray]  # HxWx3 uint8: the letterboxed content, padding cropped
    reference: list[Detections]  # PyTorch FP32's detections, as `FileRun.detections`
    files: dict[str, FileRun]  # by file name, in manifest order


def content_rgb(chw: np.ndarray, mean_bgr) -> np.ndarray:
    """A golden input (BGR minus mean, CHW) back as RGB pixels, letterbox padding cropped.

    The padding is exactly zero after the mean is subtracted and lies bottom and right,
    so the content is the bounding range of pixels where any channel is non-zero.
    """
    content = np.abs(chw).max(axis=0) > 0
    rows, cols = np.flatnonzero(content.any(axis=1)), np.flatnonzero(content.any(axis=0))
    height = int(rows[-1]) + 1 if rows.size else chw.shape[1]
    width = int(cols[-1]) + 1 if cols.size else chw.shape[2]
    bgr = chw[:, :height, :width] + np.asarray(mean_bgr, np.float32).reshape(3, 1, 1)
    return np.ascontiguousarray(np.clip(np.rint(bgr[::-1].transpose(1, 2, 0)), 0, 255).astype(np.uint8))


def _run_file(bundle_dir: Path, entry: dict, inputs: np.ndarray, reference: dict[str, np.ndarray], size: int) -> FileRun:
    # converters.build imports torch; only the report of a bundle needs these helpers.
    from featherface.sdk.box_coding import make_priors

    from . import manifest as mf
    from .build import ModelFile, detections_of, map_outputs, run_model_file

    image_input = (entry.get("input") or {}).get("type") == "image"
    model_file = ModelFile(bundle_dir / entry["file"], entry["format"], entry["precision"], 0.0, image_input=image_input)
    try:
        raw = run_model_file(model_file, inputs)
        outputs = {name: raw[tensor] for name, tensor in map_outputs(raw, mf.anchor_count(size)).items()}
    except Exception as err:  # a runtime missing on this machine must not cost the whole report
        return FileRun({}, [], f"could not run here: {type(err).__name__}: {str(err).strip()[:160]}")
    errors = {name: np.abs(outputs[name].astype(np.float64) - reference[name]).ravel() for name in OUTPUT_NAMES}
    identity = Letterbox(1.0, 0, 0, size, size)
    priors = make_priors(size, size)
    return FileRun(errors, [detections_of(outputs, i, identity, priors, size) for i in range(len(inputs))])


def run_golden(bundle_dir: Path, manifest: dict) -> GoldenRun | None:
    """Every file of the bundle on its golden inputs; None when the bundle has none."""
    from featherface.bench.targets import load_golden
    from featherface.sdk.box_coding import make_priors

    from .build import detections_of

    golden = load_golden(bundle_dir, manifest)
    if golden is None:
        return None
    size = int(manifest["input"]["height"])
    identity = Letterbox(1.0, 0, 0, size, size)
    priors = make_priors(size, size)
    reference = [detections_of(golden.reference, i, identity, priors, size) for i in range(len(golden.inputs))]
    images = [content_rgb(chw, manifest["input"]["mean"]) for chw in golden.inputs]
    files = {entry["file"]: _run_file(bundle_dir, entry, golden.inputs, golden.reference, size) for entry in manifest["files"]}
    return GoldenRun(list(golden.names), images, reference, files)
