"""Typed records for the report's tests: a valid manifest holding the files a test names, each
file with parity figures that pass unless told otherwise, and the bundle view that carries the
latencies measured on this machine. No model is run."""
from __future__ import annotations

from featherface.config import OUTPUT_NAMES
from featherface.converters.manifest import new_manifest
from featherface.converters.report_golden import BundleView, FileRun, GoldenRun
from featherface.records import (
    Checkpoint,
    DetectionAgreement,
    FileEntry,
    Manifest,
    ManifestAP,
    OutputError,
    ParityRecord,
    QuantizationRecord,
)


def file_entry(name: str, precision: str = "fp32", size_bytes: int = 1_000_000, status: str = "pass",
               accuracy: ManifestAP | None = None, quantization: QuantizationRecord | None = None) -> FileEntry:
    reasons = [] if status == "pass" else ["robust recall 0.90 < 0.95"]
    parity = ParityRecord(status, reasons, thresholds={"min_recall": 0.95, "min_precision": 0.95},
                          tensor={"conf": OutputError(0.1, 0.01, 1.0, True)},
                          detections=DetectionAgreement(10, 10, 10, 1.0, 1.0, 1.0, 1.0, 0.9, 0.01))
    return FileEntry(file=name, sha256="0" * 64, output_map={output: output for output in OUTPUT_NAMES}, format="tflite",
                     precision=precision, size_bytes=size_bytes, parity=parity, quantization=quantization, accuracy=accuracy)


def manifest(files: list[FileEntry], target: str = "pi4", preferred: str | None = None) -> Manifest:
    """A manifest as the build makes it (v2-ultra from v2_ultra.pth, 640 px), holding `files`."""
    made = new_manifest(target, "v2-ultra", None, 640, "NCHW")
    made.checkpoint = Checkpoint("v2_ultra.pth", "0" * 64)
    made.files = files
    made.preferred_file = preferred or (files[0].file if files else None)
    return made


def bundle_view(manifest: Manifest, p50_ms: dict[str, float] | None = None) -> BundleView:
    """`manifest` as the report sees it, the files in `p50_ms` timed here (file -> ms), no golden images."""
    runs = {file: FileRun({}, [], latency={"p50_ms": ms, "runs": 15, "threads": 1}) for file, ms in (p50_ms or {}).items()}
    return BundleView(manifest.target, manifest, GoldenRun([], [], [], runs) if runs else None)
