"""`python -m featherface.bench.export_golden BUNDLE OUT`: a bundle's golden vectors as raw
little-endian float32 files plus a JSON index, for harnesses without NumPy (the Swift one
in device_bench/ios).

OUT/golden.json names every array (file, shape), the input convention, the deployment
thresholds and, per model file, its precision, output map and the tensor error bound the
bench applies (null where only detection agreement is judged).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from featherface.config import OUTPUT_NAMES, PARITY_THRESHOLDS
from featherface.errors import run_reporting
from featherface.records import priors_to_json
from featherface.verify.golden import load_golden, recorded_float32_noise
from featherface.verify.parity import error_bound

INDEX_FORMAT = "featherface-golden/1"


def _write_array(out: Path, name: str, array: np.ndarray) -> dict:
    path = out / f"{name}.f32"
    path.write_bytes(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return {"file": path.name, "shape": list(array.shape), "dtype": "float32", "byte_order": "little"}


def export_golden(bundle: str | Path, out: str | Path) -> Path:
    """Write OUT/golden.json, OUT/input.f32 and OUT/{loc,conf,landmarks}.f32; returns the index."""
    from featherface.sdk.bundle import read_manifest

    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    golden = load_golden(bundle, manifest)
    if golden is None:
        raise ValueError(f"{bundle}: the bundle has no golden vectors to export")
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for entry in manifest.files:
        thresholds = PARITY_THRESHOLDS.get(entry.precision)
        noise = recorded_float32_noise(entry, [])
        files.append({
            "file": entry.file,
            "format": entry.format,
            "precision": entry.precision,
            "output_map": entry.output_map,
            "input": entry.input,  # e.g. Core ML image input: {"type": "image", ...}
            "error_bounds": {n: error_bound(thresholds, noise[n]) for n in OUTPUT_NAMES} if thresholds else None,
            "min_recall": thresholds.min_recall if thresholds else None,
            "min_precision": thresholds.min_precision if thresholds else None,
        })
    index = {
        "format": INDEX_FORMAT,
        "bundle": bundle.name,
        "arch": manifest.arch,
        "target": manifest.target,
        "images": golden.names,
        "input": {
            **_write_array(out, "input", golden.inputs),
            "layout": "NCHW",
            "channel_order": manifest.input.channel_order,
            "mean": list(manifest.input.mean),
            "values": "pixel minus mean, BGR, letterboxed (top-left, padding 0)",
        },
        "reference": {name: _write_array(out, name, golden.reference[name]) for name in OUTPUT_NAMES},
        "thresholds": asdict(manifest.thresholds),
        "priors": priors_to_json(manifest.priors),
        "files": files,
    }
    path = out / "golden.json"
    path.write_text(json.dumps(index, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featherface.bench.export_golden", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle directory (has manifest.json and golden.npz)")
    parser.add_argument("out", help="output directory (created)")
    args = parser.parse_args(argv)
    return run_reporting(parser.prog, lambda: _print_export(args.bundle, args.out))


def _print_export(bundle: str, out: str) -> int:
    print(export_golden(bundle, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
