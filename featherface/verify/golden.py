"""A bundle's golden vectors: real preprocessed images and PyTorch FP32's outputs on them,
stored in golden.npz so parity can be checked where torch is absent (report, device)."""
from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featherface.config import INPUT_NAME, OUTPUT_NAMES
from featherface.records import FileEntry, Manifest
from featherface.sdk.bundle import BundleError, resolve_in_bundle, sha256_of

GOLDEN_FILE = "golden.npz"
GOLDEN_KEYS = (INPUT_NAME, *OUTPUT_NAMES)


@dataclass(frozen=True)
class Golden:
    """A bundle's golden vectors: preprocessed real images and PyTorch FP32's outputs."""

    inputs: np.ndarray  # [G, 3, S, S] float32, BGR minus mean
    reference: dict[str, np.ndarray]  # loc / conf / landmarks, [G, A, w]
    names: list[str]


def write_golden(bundle: Path, inputs: np.ndarray, names: list[str], reference: dict[str, np.ndarray]) -> dict:
    """golden.npz into the bundle; returns the manifest's `golden` entry, which `load_golden` reads."""
    path = bundle / GOLDEN_FILE
    np.savez_compressed(path, names=np.array(names), **{INPUT_NAME: inputs}, **{name: reference[name] for name in OUTPUT_NAMES})
    return {"file": GOLDEN_FILE, "sha256": sha256_of(path), "images": list(names)}


def load_golden(bundle: Path, manifest: Manifest) -> Golden | None:
    """The bundle's golden.npz, its sha256 checked against the manifest (None: no golden)."""
    golden = manifest.golden
    if not golden:
        return None
    if not isinstance(golden, dict) or "file" not in golden or "sha256" not in golden:
        raise BundleError(f"{bundle}/manifest.json: golden entry {golden!r} needs a `file` and its `sha256`")
    path = resolve_in_bundle(bundle, golden["file"])
    if sha256_of(path) != golden["sha256"]:
        raise BundleError(f"{path}: sha256 differs from the manifest (modified or truncated file); refusing it")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in GOLDEN_KEYS if k not in data.files]
            if missing:
                raise BundleError(f"{path}: golden vectors lack {missing}")
            arrays = {k: np.asarray(data[k], np.float32) for k in GOLDEN_KEYS}
            names = [str(n) for n in data["names"]] if "names" in data.files else list(golden.get("images", []))
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if isinstance(err, BundleError):
            raise
        raise BundleError(f"{path}: unreadable golden vectors ({err})") from None
    height, width = manifest.input.height, manifest.input.width
    inputs = arrays.pop(INPUT_NAME)
    if inputs.ndim != 4 or inputs.shape[1:] != (3, height, width):
        raise BundleError(f"{path}: golden input shape {inputs.shape} is not [G, 3, {height}, {width}] (the manifest's input)")
    if any(len(a) != len(inputs) for a in arrays.values()):
        raise BundleError(f"{path}: golden inputs and outputs disagree on the image count")
    return Golden(inputs, arrays, names or [f"golden[{i}]" for i in range(len(inputs))])


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


def recorded_float32_noise(entry: FileEntry, notes: list[str]) -> dict[str, float]:
    """PyTorch FP32's error against FP64 recorded by the build for this file (0 if absent)."""
    recorded = entry.parity.torch_fp32_vs_fp64 if entry.parity else {}
    noise = {}
    for name in OUTPUT_NAMES:
        value = recorded.get(name)
        noise[name] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else 0.0
    if len(recorded) < len(OUTPUT_NAMES):
        notes.append("the manifest records no torch_fp32_vs_fp64 noise for some outputs; their bound is the abs tolerance")
    return noise
