"""A build killed mid-way leaves nothing that looks like a bundle; the next one succeeds."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image


def _build_command(images, out) -> list[str]:
    return [sys.executable, "-m", "featherface.cli", "build", "--target", "onnx", "--arch", "v2-ultra",
            "--input-size", "64", "--images", str(images), "--out", str(out)]


def test_sigkill_during_build_leaves_no_bundle_and_the_next_build_succeeds(tmp_path):
    images, out = tmp_path / "images", tmp_path / "dist"
    images.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(images / f"{i}.png")

    process = subprocess.Popen(_build_command(images, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(".onnx.*.partial")) and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the build ended before it could be interrupted"
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert not (out / "onnx").exists()
    assert not list(out.glob("*/manifest.json"))

    result = subprocess.run(_build_command(images, out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["files"][0]["parity"]["status"] == "pass"
