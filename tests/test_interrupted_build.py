"""Interrupted and concurrent builds: a build killed mid-way leaves nothing that looks like a
bundle (and a killed rebuild leaves the previous bundle intact); the next build succeeds;
of two builds into one directory at once, one fails clearly and the other's bundle is whole."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import noise_image
from featherface.sdk.detector import Detector


def _build_command(images, out) -> list[str]:
    return [sys.executable, "-m", "featherface.cli", "build", "--target", "onnx", "--arch", "v2-ultra",
            "--input-size", "64", "--images", str(images), "--out", str(out), "--no-eval"]


def _images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(noise_image(50, 70, seed=2 + i)).save(images / f"{i}.png")
    return images


def _start_and_wait_for_staging(images: Path, out: Path, inside: str = "", **streams) -> subprocess.Popen:
    """A build process, returned once it is writing its staging directory (holding the lock)
    and, with `inside`, once that file exists in it."""
    process = subprocess.Popen(_build_command(images, out), **streams)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(f".onnx.*.partial/{inside}")) and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, f"the build ended before its staging directory held {inside or 'anything'}"
    return process


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


# Moments of a build: staging created, model exported (parity running), golden vectors
# written (the report is being made; the manifest and the rename come next).
@pytest.mark.parametrize("inside", ["", "model.onnx", "golden.npz"])
def test_sigkill_during_build_leaves_no_bundle_and_the_next_build_succeeds(inside, tmp_path):
    images, out = _images(tmp_path), tmp_path / "dist"
    _kill(_start_and_wait_for_staging(images, out, inside, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    assert not (out / "onnx").exists()
    assert not list(out.glob("*/manifest.json"))

    result = subprocess.run(_build_command(images, out), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest_text = (out / "onnx" / "manifest.json").read_text()
    assert json.loads(manifest_text)["files"][0]["parity"]["status"] == "pass"

    # A rebuild killed mid-way leaves the previous bundle as it was, and loadable.
    _kill(_start_and_wait_for_staging(images, out, inside, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert (out / "onnx" / "manifest.json").read_text() == manifest_text
    assert Detector.load(out / "onnx").model_file == "model.onnx"  # every sha256 still matches


def test_two_builds_into_one_directory_at_once_one_fails_clearly_and_one_bundle_is_whole(tmp_path):
    images, out = _images(tmp_path), tmp_path / "dist"
    first = _start_and_wait_for_staging(images, out, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Paused, the first build keeps its lock however long the second takes to start (a tiny
    # build can otherwise finish before the second one has imported torch).
    first.send_signal(signal.SIGSTOP)
    try:
        second = subprocess.run(_build_command(images, out), capture_output=True, text=True, timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
        first_out, first_err = first.communicate(timeout=300)
    assert second.returncode == 2 and second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"featherface: error: another build is writing to {out}"), second.stderr
    assert first.returncode == 0, first_err
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    assert manifest["files"][0]["parity"]["status"] == "pass"
    assert Detector.load(out / "onnx").model_file == "model.onnx"
    assert sorted(p.name for p in out.iterdir()) == [".build.lock", "onnx"]  # no stray staging


def test_next_build_clears_what_killed_builds_left(tmp_path):
    """Staging directories go; a bundle retired by a rebuild killed between its two renames
    comes back; a retired copy beside a whole bundle goes."""
    from featherface.converters.build import output_lock

    out = tmp_path / "dist"
    (out / ".onnx.x1y2.partial").mkdir(parents=True)
    (out / ".onnx.x1y2.partial" / "model.onnx").write_bytes(b"half")
    (out / ".pi4.old-4242").mkdir()
    (out / ".pi4.old-4242" / "manifest.json").write_text("{}")
    (out / "a14").mkdir()
    (out / ".a14.old-99").mkdir()
    with output_lock(out):
        names = sorted(p.name for p in out.iterdir())
    assert names == [".build.lock", "a14", "pi4"]
    assert (out / "pi4" / "manifest.json").read_text() == "{}"
