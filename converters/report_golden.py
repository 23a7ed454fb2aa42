"""Each file of a bundle re-run on the bundle's golden images, for the report's error
histograms and detection pictures: the PyTorch side comes from golden.npz, so no torch
network is needed (only the runtimes that open the files). `BundleView` is a bundle as the
report reads it: its manifest and this re-run, whose timings fill the latency column."""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featherface.config import OUTPUT_NAMES
from featherface.records import FileEntry, Manifest
from featherface.sdk.detector import Detector, ModelSpec
from featherface.verify.check import detections_of, identity_letterboxes
from featherface.verify.files import ModelFile, open_detector
from featherface.verify.golden import content_rgb, load_golden
from featherface.verify.parity import Detections

from .mil_eval import open_for_verification


@dataclass(frozen=True)
class FileRun:
    """One model file on the golden inputs; `problem` says why there are no figures."""

    abs_errors: dict[str, np.ndarray]  # output name -> |file - PyTorch|, flattened
    detections: list[Detections]  # per golden image, model-input pixels, down to the robust floor
    problem: str | None = None
    latency: dict | None = None  # {"p50_ms", "runs", "threads"}; None where the file cannot run natively


# The report's latency column and the build's choice of the pi4 file: the model alone, one
# thread, on this machine. A first look, not a benchmark (`featherface bench`: more runs, and
# the whole detect).
LATENCY_WARMUP = 3
LATENCY_RUNS = 15


def model_latency(detector: Detector, batch_nchw: np.ndarray) -> dict:
    """p50 of the model alone on one golden input (`detector` opened on one thread)."""
    return {"p50_ms": model_p50_ms({detector.model_file: detector}, batch_nchw)[detector.model_file], "runs": LATENCY_RUNS,
            "threads": 1}


def model_p50_ms(detectors: dict[str, Detector], batch_nchw: np.ndarray) -> dict[str, float]:
    """Median time of each detector's model alone, its runs taken in turns with the others'
    (as the bench does: a machine that slows down mid-way slows every file alike). Each runs
    on the input its runtime takes as it is (a full-INT8 file's INT8 tensor), as `frame_input`
    writes it on a device, so that no file is charged for a conversion in Python."""
    native = {name: detector.runtime.quantize(detector.runtime_batch(batch_nchw)) for name, detector in detectors.items()}
    for name, detector in detectors.items():
        for _ in range(LATENCY_WARMUP):
            detector.runtime.run(native[name])
    times: dict[str, list[float]] = {name: [] for name in detectors}
    for _ in range(LATENCY_RUNS):
        for name, detector in detectors.items():
            start = time.perf_counter()
            detector.runtime.run(native[name])
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: round(statistics.median(runs), 2) for name, runs in times.items()}


@dataclass(frozen=True)
class GoldenRun:
    names: list[str]
    images_rgb: list[np.ndarray]  # HxWx3 uint8: the letterboxed content, padding cropped
    reference: list[Detections]  # PyTorch FP32's detections, as `FileRun.detections`
    files: dict[str, FileRun]  # by file name, in manifest order


@dataclass(frozen=True)
class BundleView:
    """One bundle as the report sees it: its name (the directory; the target in the bundle's own
    report), its manifest and its golden re-run (None: no golden vectors)."""

    name: str
    manifest: Manifest
    golden: GoldenRun | None

    @property
    def network(self) -> tuple:
        """Bundles with the same network (arch, checkpoint, input size) share one PyTorch
        reference: one row in the table, one panel per golden image."""
        manifest = self.manifest
        return (manifest.arch, manifest.checkpoint and manifest.checkpoint.sha256, manifest.input.width, manifest.input.height)

    def latency_ms(self, file: str) -> float | None:
        """The file's p50 measured here by the golden re-run; None where it could not be timed."""
        run = self.golden.files.get(file) if self.golden else None
        return run.latency["p50_ms"] if run and run.latency else None


def _run_file(bundle_dir: Path, manifest: Manifest, entry: FileEntry, inputs: np.ndarray, reference: dict[str, np.ndarray]) -> FileRun:
    """One file on the golden inputs, decoded as the SDK would (its manifest's pipeline)."""
    model_file = ModelFile(bundle_dir / entry.file, entry.format, entry.precision, 0.0, image_input=entry.image_input)
    size = manifest.input.size
    try:
        detector, outputs = open_detector(model_file, inputs, ModelSpec.from_manifest(manifest, entry), open_for_verification)
    except Exception as err:  # a runtime missing on this machine must not cost the whole report
        return FileRun({}, [], f"could not run here: {type(err).__name__}: {str(err).strip()[:160]}")
    errors = {name: np.abs(outputs[name].astype(np.float64) - reference[name]).ravel() for name in OUTPUT_NAMES}
    run = FileRun(errors, detections_of(outputs, identity_letterboxes(size, len(inputs)), detector.spec))
    if entry.format == "coreml" and platform.system() != "Darwin":
        return run  # our MIL evaluator checks numbers, its speed says nothing about Core ML
    detector.close()
    with Detector(open_for_verification(model_file, 1), detector.spec, detector.model_file) as single_thread:
        return replace(run, latency=model_latency(single_thread, inputs[:1]))


def run_golden(bundle_dir: Path, manifest: Manifest) -> GoldenRun | None:
    """Every file of the bundle on its golden inputs; None when the bundle has none."""
    golden = load_golden(bundle_dir, manifest)
    if golden is None:
        return None
    size = manifest.input.size
    reference = detections_of(golden.reference, identity_letterboxes(size, len(golden.inputs)),
                              ModelSpec.from_manifest(manifest, manifest.files[0]))
    images = [content_rgb(chw, manifest.input.mean) for chw in golden.inputs]
    files = {entry.file: _run_file(bundle_dir, manifest, entry, golden.inputs, golden.reference) for entry in manifest.files}
    return GoldenRun(list(golden.names), images, reference, files)
