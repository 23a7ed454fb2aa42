"""The bundle manifest as the build writes it (featherface.records.Manifest): the single
source of truth the SDK and the bench read on a device."""
from __future__ import annotations

import json
from pathlib import Path

from featherface import __version__
from featherface.config import (
    CHANNEL_ORDER,
    DEPLOY_THRESHOLDS,
    INPUT_NAME,
    MANIFEST_VERSION,
    MEAN_BGR,
    OUTPUT_NAMES,
    OUTPUT_WIDTHS,
    PRIORS,
    InputSize,
)
from featherface.priors import anchor_count
from featherface.records import Checkpoint, FileEntry, InputSpec, Manifest, OutputSpec
from featherface.sdk.bundle import sha256_of
from featherface.versions import package_versions

__all__ = ["embedded_metadata", "file_entry", "new_manifest", "size_of"]

TOOLS = ("torch", "onnx", "onnxruntime", "onnxslim", "onnxsim", "onnx2tf", "tensorflow-cpu", "coremltools", "ai-edge-litert", "numpy")


def size_of(path: str | Path) -> int:
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def tool_versions() -> dict[str, str]:
    return {"featherface": __version__, **package_versions(TOOLS)}


def new_manifest(target: str, arch: str, checkpoint: Path | None, input_size: int | InputSize, layout: str) -> Manifest:
    """The manifest of a bundle about to be built (an int size N: N x N): no files, no golden vectors yet."""
    input_size = InputSize.of(input_size)
    anchors = anchor_count(input_size)
    return Manifest(
        format_version=MANIFEST_VERSION,
        target=target,
        arch=arch,
        checkpoint=Checkpoint(checkpoint.name, sha256_of(checkpoint)) if checkpoint else None,
        input=InputSpec(
            name=INPUT_NAME, height=input_size.height, width=input_size.width, layout=layout, dtype="float32",
            channel_order=CHANNEL_ORDER, mean=MEAN_BGR, scale=1.0,
            resize="letterbox, top-left, scaled by min(width ratio, height ratio) to fit the input, padding = mean colour",
        ),
        priors=PRIORS,
        outputs=[OutputSpec(name, [1, anchors, OUTPUT_WIDTHS[name]]) for name in OUTPUT_NAMES],
        thresholds=DEPLOY_THRESHOLDS,
        tools=tool_versions(),
    )


def file_entry(path: Path, fmt: str, precision: str, output_map: dict[str, str], input_map: dict | None = None) -> FileEntry:
    return FileEntry(file=path.name, format=fmt, precision=precision, sha256=sha256_of(path), size_bytes=size_of(path),
                     output_map=output_map, input=input_map or None)


def embedded_metadata(manifest: Manifest) -> dict[str, str]:
    """The essentials that travel inside each model file (ONNX metadata_props, Core ML
    user_defined_metadata), so a file separated from its bundle still says what it is."""
    data = manifest.to_json()
    return {
        "featherface.arch": manifest.arch,
        "featherface.input": json.dumps(data["input"]),
        "featherface.priors": json.dumps(data["priors"]),
        "featherface.outputs": json.dumps(data["outputs"]),
        "featherface.version": manifest.tools["featherface"],
    }
