"""Build verified bundles: export every file of a target, check each against PyTorch on
real face images, and move the bundle into place only when every file passed."""
from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from featherface.atomic import staging_directory, write_text_atomic
from featherface.config import (
    CHANNEL_ORDER,
    GOLDEN_IMAGES,
    IMAGE_INPUT_NAME,
    OUTPUT_NAMES,
    PARITY_THRESHOLDS,
    TARGET_SPECS,
    TARGETS,
    InputSize,
)
from featherface.records import Manifest, ParityRecord
from featherface.sdk.bundle import write_manifest
from featherface.sdk.image_io import load_image
from featherface.sdk.preprocess import preprocess
from featherface.sdk.sources import image_files, spread
from featherface.verify import files as verify_files
from featherface.verify.check import detections_of, judge
from featherface.verify.files import ModelFile, OutputMapError, build_spec
from featherface.verify.golden import write_golden
from featherface.verify.parity import Detections

from .export import BuildError, ExportRequest, exporters
from .manifest import embedded_metadata, file_entry, new_manifest
from .mil_eval import open_for_verification
from .preference import preferred_here

if TYPE_CHECKING:
    from featherface.quantization.accuracy import AccuracyCheck
    from featherface.quantization.pipeline import Int8Options

    from .coreml_export import Compression

Progress = Callable[[str], None]


@dataclass
class ParitySet:
    """Real preprocessed images and PyTorch's outputs and detections on them."""

    names: list[str]
    inputs: np.ndarray  # [N, 3, H, W] float32, BGR minus mean
    letterboxes: list
    reference: dict[str, np.ndarray]  # output name -> [N, A, w]
    detections: list[Detections]
    float32_noise: dict[str, float]  # max |torch FP32 - torch FP64| per output


def find_images(directory: Path, count: int) -> list[Path]:
    """`count` images spread evenly over the sorted images below `directory` (deterministic)."""
    if not directory.is_dir():
        raise BuildError(f"image directory not found: {directory}")
    images = image_files(directory)
    if not images:
        raise BuildError(f"no images (*.jpg, *.png, ...) found below {directory}")
    return spread(images, count)


def make_parity_set(model: nn.Module, image_paths: list[Path], size: InputSize) -> ParitySet:
    inputs, letterboxes = [], []
    for path in image_paths:
        batch, letterbox = preprocess(load_image(path), size)
        inputs.append(batch[0])
        letterboxes.append(letterbox)
    stacked = np.stack(inputs).astype(np.float32)
    reference = _run_torch(model, stacked)
    exact = _run_torch(copy.deepcopy(model).double(), stacked.astype(np.float64))
    noise = {name: float(np.abs(reference[name] - exact[name]).max()) for name in OUTPUT_NAMES}
    detections = detections_of(reference, letterboxes, build_spec(size, {}))
    return ParitySet([p.name for p in image_paths], stacked, letterboxes, reference, detections, noise)


def _run_torch(model: nn.Module, inputs: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        outputs = [model(torch.from_numpy(inputs[i : i + 1])) for i in range(len(inputs))]
    return {name: np.concatenate([o[k].numpy() for o in outputs]) for k, name in enumerate(OUTPUT_NAMES)}


# ---------------------------------------------------------------- checking final files


def check_file(model_file: ModelFile, parity: ParitySet, size: InputSize) -> ParityRecord:
    """Parity record of one final file against PyTorch (tensor and detection level); the
    file's output map, found by shape, goes into `model_file.output_map`."""
    try:
        detector, outputs = verify_files.open_detector(model_file, parity.inputs, verify_files.build_spec(size, {}),
                                                       open_for_verification)
    except OutputMapError as err:
        raise BuildError(str(err)) from None
    except Exception as err:  # a broken file fails the runtime in its own way
        raise BuildError(f"{model_file.path.name} does not run: {type(err).__name__}: {str(err).strip()[:200]}") from None
    record = judge(parity.reference, outputs, parity.letterboxes, detector.spec, PARITY_THRESHOLDS[model_file.precision],
                   parity.float32_noise, reference_detections=parity.detections)
    detector.close()
    model_file.output_map = dict(detector.spec.output_map)
    record.images, record.conversion_seconds = list(parity.names), round(model_file.seconds, 1)
    return record


# Files built only to compare with (never preferred): one that fails parity is left out of
# the bundle, with the reason in the full-INT8 file's record, instead of failing the build.
# Dynamic-range INT8 quantizes every activation, stem included, on the fly, where full
# INT8's search may keep the stem float: it can lose a face full INT8 keeps (docs/measurements.md).
COMPARISON_PRECISIONS = {"dynamic_int8"}


def _leave_out_failed_comparison_files(files: list[ModelFile], progress: Progress) -> list[ModelFile]:
    dropped = [f for f in files if f.precision in COMPARISON_PRECISIONS and not f.record.passed]
    if not dropped:
        return files
    kept = [f for f in files if f not in dropped]
    notes = {f.path.name: {"left_out": "failed parity", "reasons": f.record.reasons} for f in dropped}
    for model_file in dropped:
        progress(f"leaving out {model_file.path.name} (a comparison file): " + "; ".join(model_file.record.reasons))
        model_file.path.unlink()
    for model_file in kept:
        if model_file.quantization is not None:
            model_file.quantization.details["comparison_files"] = notes
    return kept
@contextmanager
def output_lock(out_dir: Path) -> Iterator[None]:
    """One build at a time per output directory: a second one fails clearly."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"another build is writing to {out_dir}; wait for it or choose another --out") from None
        recover_interrupted(out_dir)
        yield


def recover_interrupted(out_dir: Path) -> None:
    """Clear what killed builds left in `out_dir` (only under the lock): staging directories
    go; a bundle retired for a rebuild that died before the new one moved in comes back."""
    for staging in out_dir.glob(".*.partial"):
        shutil.rmtree(staging, ignore_errors=True)
    for retired in out_dir.glob(".*.old-*"):
        bundle = out_dir / retired.name[1:].rsplit(".old-", 1)[0]
        if bundle.exists():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(retired, bundle)


def build_bundle(
    target: str, model: nn.Module, arch: str, checkpoint: Path | None, parity: ParitySet,
    size: InputSize, out_dir: Path, progress: Progress, int8: "Int8Options | None" = None,
    accuracy: "AccuracyCheck | None" = None, compression: "Compression | None" = None,
) -> Manifest:
    """Build one target's bundle into `out_dir/target`; returns its manifest.

    `int8`: how to make the pi4 INT8 files (None: FP32 and FP16 only). `accuracy`: WIDER
    FACE AP of every file that runs here, against PyTorch (None: parity only). `compression`:
    the optional a14 files (None: none). The target's exporter comes from `export.exporters()`."""
    if target not in TARGETS:
        raise BuildError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    bundle_dir = out_dir / target
    failure_report = out_dir / f"{target}.parity-failed.json"
    manifest = new_manifest(target, arch, checkpoint, size, TARGET_SPECS[target].layout)
    with staging_directory(bundle_dir) as stage:
        exporter = exporters()[target]
        files = exporter(ExportRequest(model, stage, size, embedded_metadata(manifest), progress, int8, accuracy, compression))
        for model_file in files:
            progress(f"checking {model_file.path.name} against PyTorch on {len(parity.names)} images")
            model_file.record = check_file(model_file, parity, size)
        files = _leave_out_failed_comparison_files(files, progress)
        failed = [f for f in files if not f.record.passed]
        if failed:
            records = {f.path.name: {**f.record.to_json(), "output_map": f.output_map} for f in files}
            write_text_atomic(failure_report, json.dumps(records, indent=2))
            lines = [f"  {f.path.name}: " + "; ".join(f.record.reasons) for f in failed]
            raise BuildError(f"{target}: parity failed, no bundle written (details: {failure_report}):\n" + "\n".join(lines))
        for model_file in files:
            image_input = {"name": IMAGE_INPUT_NAME, "type": "image", "channel_order": CHANNEL_ORDER, "bias": [-m for m in manifest.input.mean]}
            entry = file_entry(model_file.path, model_file.format, model_file.precision, model_file.output_map,
                                  image_input if model_file.image_input else None)
            entry.parity = model_file.record
            entry.quantization = model_file.quantization
            if accuracy is not None:
                entry.accuracy = accuracy.of_file(model_file, progress)
            manifest.files.append(entry)
        if accuracy is not None:
            manifest.reference_accuracy = accuracy.manifest_reference(progress)
        golden = GOLDEN_IMAGES
        manifest.golden = write_golden(stage, parity.inputs[:golden], parity.names[:golden],
                                       {name: parity.reference[name][:golden] for name in OUTPUT_NAMES})
        candidates = [f for f in files if f.precision not in COMPARISON_PRECISIONS]
        manifest.preferred_file, manifest.preferred_by = preferred_here(
            target, candidates, parity.inputs, size, open_for_verification, progress)
        progress(f"preferred file {manifest.preferred_file}"
                 + (" (fastest here; on the device `featherface bench --pick` may choose another)" if manifest.preferred_by else ""))
        from .report import write_parity_report

        write_parity_report(stage, manifest)
        write_manifest(stage, manifest)
    failure_report.unlink(missing_ok=True)
    return manifest


def print_table(manifest: Manifest, stream=sys.stdout) -> None:
    from .report import summary_rows

    print(f"\n{manifest.target}: {manifest.arch} @ {manifest.input.size}", file=stream)
    for row in summary_rows(manifest):
        print("  " + row, file=stream)
