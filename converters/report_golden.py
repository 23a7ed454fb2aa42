"""Each file of a bundle re-run on the bundle's golden images, for the report's error
histograms and detection pictures: the PyTorch side comes from golden.npz, so no torch
network is needed (only the runtimes that open the files)."""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, replace
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
    latency: dict | None = None  # {"p50_ms", "runs", "threads"}; None where the file cannot run natively


# The report's latency column: the model alone, one thread, on the machine writing the
# report. A first look, not a benchmark (`featherface bench` interleaves files, more runs).
LATENCY_WARMUP = 3
LATENCY_RUNS = 15


def model_latency(path: Path, batch_nchw: np.ndarray) -> dict:
    """p50 of the model alone on one golden input, one thread."""
    from featherface.sdk.runtimes import open_runtime

    runtime = open_runtime(path, num_threads=1)
    batch = np.ascontiguousarray(batch_nchw.transpose(0, 2, 3, 1) if runtime.input_layout == "NHWC" else batch_nchw)
    for _ in range(LATENCY_WARMUP):
        runtime.run(batch)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        runtime.run(batch)
        times.append(1000 * (time.perf_counter() - start))
    return {"p50_ms": round(statistics.median(times), 2), "runs": LATENCY_RUNS, "threads": 1}


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
    run = FileRun(errors, [detections_of(outputs, i, identity, priors, size) for i in range(len(inputs))])
    if entry["format"] == "coreml" and platform.system() != "Darwin":
        return run  # our MIL evaluator checks numbers, its speed says nothing about Core ML
    return replace(run, latency=model_latency(model_file.path, inputs[:1]))


def with_latency(manifest: dict, golden: "GoldenRun | None") -> dict:
    """The manifest with each file's measured `latency` (for the report; not written back)."""
    if golden is None:
        return manifest
    files = [dict(entry, latency=golden.files[entry["file"]].latency) if entry["file"] in golden.files else entry
             for entry in manifest["files"]]
    return dict(manifest, files=files)


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
