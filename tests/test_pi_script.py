"""`featherface-pi` (issue 19): FPS and stage times even on runs shorter than a second, an
average over the run, saved frames named after their source files, and a missing camera
reported in one line naming the --source the user gave.

Runs on the tiny random-weight ONNX bundle of conftest and generated images; cameras are
simulated (picamera2 absent, OpenCV failing to open), so no device is needed."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface.sdk import pi
from featherface.sdk.sources import SourceError

FPS_LINE = re.compile(r"^fps\s+[\d.]+ \| pre\s+[\d.]+ ms \| model\s+[\d.]+ ms \| post\s+[\d.]+ ms$")
AVERAGE_LINE = re.compile(r"^average over (\d+) frames in [\d.]+ s: fps\s+[\d.]+ \| pre\s+[\d.]+ ms \| "
                          r"model\s+[\d.]+ ms \| post\s+[\d.]+ ms$")


def write_photo(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_photo(root / "alice.png", 1)
    write_photo(root / "bob.jpg", 2)
    write_photo(root / "trip" / "alice.png", 3)  # same stem in a subfolder
    return root


def test_short_folder_run_prints_fps_and_stage_times_then_an_average(tiny_onnx_bundle, folder, capsys):
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", str(folder), "--threads", "1"]) == 0
    lines = capsys.readouterr().err.splitlines()
    fps_lines = [i for i, line in enumerate(lines) if FPS_LINE.match(line)]
    averages = [(i, AVERAGE_LINE.match(line)) for i, line in enumerate(lines) if AVERAGE_LINE.match(line)]
    assert fps_lines, lines  # the run takes well under a second: the last window is printed at the end
    assert len(averages) == 1, lines
    index, average = averages[0]
    assert int(average.group(1)) == 3
    assert max(fps_lines) < index < lines.index("featherface-pi: 3 frames, 0 skipped")


@pytest.mark.parametrize("score, expected", [("0", 5), ("1", 0)])
def test_score_replaces_the_bundles_threshold_for_every_frame(score, expected, tiny_onnx_bundle, folder, capsys):
    """An untrained network scores every prior between 0 and 1: --score 0 keeps the top-k
    (the bundle's, set to 5 here), --score 1 keeps none."""
    bundle = Path(shutil.copytree(tiny_onnx_bundle, folder.parent / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["thresholds"]["top_k"] = 5
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert pi.main(["--bundle", str(bundle), "--source", str(folder), "--score", score, "--json"]) == 0
    frames = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(frame["faces"]) for frame in frames] == [expected] * 3


def test_saved_frames_keep_their_source_file_names(tiny_onnx_bundle, folder, tmp_path):
    saved = tmp_path / "annotated"
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", str(folder), "--save", str(saved)]) == 0
    assert sorted(p.name for p in saved.iterdir()) == ["alice.jpg", "alice_2.jpg", "bob.jpg"]
    assert all(Image.open(p).size == (64, 48) for p in saved.iterdir())  # the source's own size


def cannot_open(index, name):
    """OpenCV's VideoCapture failing, as on a machine with no camera."""
    raise SourceError(f"cannot open video {name}")
    yield  # a generator, like the real one


@pytest.mark.parametrize("source, expected", [
    ("camera", "--source camera: no Pi camera (picamera2 is not installed) and no USB camera at index 0"),
    ("usb:3", "--source usb:3: no USB camera at index 3"),
])
def test_missing_camera_is_one_line_naming_the_source_given(source, expected, tiny_onnx_bundle, monkeypatch, capsys):
    pytest.importorskip("cv2")
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import picamera2 -> ImportError
    monkeypatch.setattr(pi, "video_frames", cannot_open)
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", source]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"featherface-pi: error: {expected}")
    if source == "camera":
        assert "usb:0" not in errors[0]  # a source the user never gave


def test_camera_without_opencv_says_what_to_install(tiny_onnx_bundle, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    monkeypatch.setitem(sys.modules, "cv2", None)
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", "camera"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("featherface-pi: error: --source camera: no Pi camera") and "opencv-python-headless" in line


@pytest.mark.parametrize("failure, expected", [
    # apt's picamera2 under a venv's numpy 2: its simplejpeg import raises ValueError
    ('raise ValueError("numpy.dtype size changed, may indicate binary incompatibility")', "(ValueError"),
    # picamera2 from pip in a plain venv: libcamera (apt only) is missing
    ('raise ModuleNotFoundError("No module named \'libcamera\'", name="libcamera")', "(ModuleNotFoundError"),
])
def test_broken_picamera2_is_one_line_not_a_usb_fallback(failure, expected, tiny_onnx_bundle, tmp_path, monkeypatch, capsys):
    (tmp_path / "picamera2.py").write_text(failure + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setattr(pi, "video_frames", cannot_open)
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", "camera"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"featherface-pi: error: --source camera: picamera2 is installed but fails to import {expected}")
    assert ("pip install --force-reinstall simplejpeg" in line) == ("numpy" in failure) and "usb" not in line.lower()


def test_usb_source_without_a_camera_index_is_refused(tiny_onnx_bundle, capsys):
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", "usb:front"]) == 2
    assert "--source usb:front: expected usb:N" in capsys.readouterr().err


class _HeadlessCv2:
    """opencv-python-headless as `--show` meets it: no window can open."""

    class error(Exception):
        pass

    def namedWindow(self, name):
        raise self.error("The function is not implemented. Rebuild the library with GUI support")


@pytest.mark.parametrize("cv2_module, expected", [(None, "pip install opencv-python"), (_HeadlessCv2(), "not opencv-python-headless")])
def test_show_without_a_window_is_one_line_before_any_frame(cv2_module, expected, tiny_onnx_bundle, folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cv2", cv2_module)
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", str(folder), "--show"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [captured.err.strip()]
    assert captured.err.startswith("featherface-pi: error: --show needs") and expected in captured.err
    assert "fps" not in captured.out + captured.err  # refused before the first frame


def test_an_unexpected_error_is_one_line_with_exit_1_not_a_traceback(tiny_onnx_bundle, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("nonexistent_tensor")

    monkeypatch.setattr(pi.Detector, "load", broken)
    monkeypatch.delenv("FEATHERFACE_DEBUG", raising=False)
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", "camera"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == ["featherface-pi: error: unexpected KeyError: 'nonexistent_tensor' (set FEATHERFACE_DEBUG=1 for the traceback)"]
