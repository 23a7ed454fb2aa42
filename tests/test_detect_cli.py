"""The user-facing commands on real bundles, run as the installed executables:
`featherface detect` (images, folders, videos; JSON lines; annotated images; bad files
reported and skipped) and `featherface-pi` (folder or video source)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface.sdk.detect_command import face_json
from featherface.sdk.detector import Detector

pytestmark = [pytest.mark.slow, pytest.mark.shared]

BIN = Path(sys.executable).parent
try:
    import cv2  # noqa: F401

    HAVE_CV2 = True
except ImportError:
    HAVE_CV2 = False
NO_CV2 = "video input needs OpenCV (cv2), which is not installed: pip install opencv-python-headless"
FPS_LINE = re.compile(r"^fps\s+[\d.]+ \| pre\s+[\d.]+ ms \| model\s+[\d.]+ ms \| post\s+[\d.]+ ms$")


@pytest.fixture(scope="module")
def photo_folder(shared, tmp_path_factory) -> Path:
    """Two good photos with a text file named .jpg sorted between them."""
    folder = tmp_path_factory.mktemp("photos")
    shutil.copyfile(shared.image_paths[1], folder / "a_portrait.jpg")
    (folder / "b_notes.jpg").write_text("these are my notes, not a photo\n")
    shutil.copyfile(shared.image_paths[2], folder / "c_landscape.jpg")
    return folder


def run(command: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def check_record(record: dict, video: bool = False) -> None:
    assert set(record) == ({"image", "timestamp_ms", "faces"} if video else {"image", "faces"})
    for face in record["faces"]:
        assert set(face) == {"box", "score", "landmarks"}
        assert len(face["box"]) == 4 and all(isinstance(v, (int, float)) for v in face["box"])
        assert isinstance(face["score"], float) and 0.0 <= face["score"] <= 1.0
        assert np.array(face["landmarks"]).shape == (5, 2)


# ---------------------------------------------------------------- featherface detect


def test_detect_folder_reports_a_bad_file_and_carries_on(onnx_bundle, photo_folder, tmp_path):
    out = tmp_path / "annotated"
    result = run("featherface", "detect", "--bundle", onnx_bundle, photo_folder, "--json", "--out", out)
    assert result.returncode == 1, result.stderr
    records = json_lines(result.stdout)
    assert [Path(r["image"]).name for r in records] == ["a_portrait.jpg", "c_landscape.jpg"]
    detector = Detector.load(onnx_bundle)
    for record in records:
        check_record(record)
        assert record["faces"], record["image"]
        assert record["faces"] == [face_json(f) for f in detector.detect(record["image"])]
    assert "b_notes.jpg" in result.stderr and "skipped" in result.stderr
    assert "2 images" in result.stderr and "1 failed" in result.stderr
    assert "Traceback" not in result.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_portrait.jpg", "c_landscape.jpg"]
    for name in written:
        with Image.open(out / name) as annotated, Image.open(photo_folder / name) as original:
            assert annotated.size == original.size
            assert not np.array_equal(np.asarray(annotated.convert("RGB")), np.asarray(original.convert("RGB")))


def test_detect_good_inputs_exit_zero(onnx_bundle, photo_folder):
    images = [photo_folder / "a_portrait.jpg", photo_folder / "c_landscape.jpg"]
    result = run("featherface", "detect", "--bundle", onnx_bundle, *images, "--json")
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert [r["image"] for r in records] == [str(p) for p in images]
    for record in records:
        check_record(record)
    assert "2 images" in result.stderr and "0 failed" in result.stderr


def test_detect_with_the_torch_runtime_finds_the_onnx_files_faces(onnx_bundle, photo_folder):
    images = [photo_folder / "a_portrait.jpg", photo_folder / "c_landscape.jpg"]
    onnx, torch = (run("featherface", "detect", "--bundle", onnx_bundle, *images, "--json", *extra)
                   for extra in ([], ["--runtime", "torch", "--threads", "1"]))
    assert torch.returncode == 0, torch.stderr
    assert "featherface_v1_489k.pth" in torch.stderr  # the summary names what ran
    for reference, record in zip(json_lines(onnx.stdout), json_lines(torch.stdout), strict=True):
        check_record(record)
        assert len(record["faces"]) == len(reference["faces"]) > 0
        for face, expected in zip(record["faces"], reference["faces"]):
            np.testing.assert_allclose(face["box"], expected["box"], atol=0.1)
            np.testing.assert_allclose(face["score"], expected["score"], atol=2e-4)


def test_detect_with_the_tflite_bundle(pi4_bundle, photo_folder):
    result = run("featherface", "detect", "--bundle", pi4_bundle, photo_folder / "c_landscape.jpg", "--json",
                 "--file", "model_fp16.tflite", "--threads", "1")
    assert result.returncode == 0, result.stderr
    (record,) = json_lines(result.stdout)
    check_record(record)
    assert len(record["faces"]) == 2
    assert "model_fp16.tflite" in result.stderr


@pytest.mark.parametrize("command", ["featherface", "featherface-pi"])
def test_a_corrupt_bundle_is_one_error_line(onnx_bundle, photo_folder, tmp_path, command):
    bundle = tmp_path / "bundle"
    shutil.copytree(onnx_bundle, bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    if command == "featherface":
        result = run(command, "detect", "--bundle", bundle, photo_folder, "--json")
    else:
        result = run(command, "--bundle", bundle, "--source", photo_folder, "--json")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command}: error:"), result.stderr
    assert "model.onnx" in lines[0] and "sha256" in lines[0]
    assert "Traceback" not in result.stderr


def test_detect_with_a_missing_bundle_is_one_error_line(photo_folder, tmp_path):
    result = run("featherface", "detect", "--bundle", tmp_path / "nothing-here", photo_folder)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featherface: error:") and "manifest.json" in lines[0]


# ---------------------------------------------------------------- featherface-pi


def test_pi_script_on_a_folder(pi4_bundle, shared, photo_folder, tmp_path):
    folder = tmp_path / "frames"
    shutil.copytree(photo_folder, folder)  # a, b (bad), c
    shutil.copyfile(shared.image_paths[0], folder / "d_square.jpg")
    shutil.copyfile(shared.image_paths[0], folder / "e_square.jpg")
    result = run("featherface-pi", "--bundle", pi4_bundle, "--source", folder, "--max-frames", "3", "--json", "--threads", "2")
    assert result.returncode == 1, result.stderr  # a file was skipped: as `featherface detect`
    records = json_lines(result.stdout)
    assert [Path(r["image"]).name for r in records] == ["a_portrait.jpg", "c_landscape.jpg", "d_square.jpg"]
    for record in records:
        check_record(record)
        assert record["faces"]
    assert f"featherface-pi: skipped: cannot read image {folder / 'b_notes.jpg'}" in result.stderr  # and the run went on
    for line in result.stderr.splitlines():
        if line.startswith("fps"):
            assert FPS_LINE.match(line), line
    summary, listed = result.stderr.strip().splitlines()[-2:]  # the bad file listed again at the end
    assert summary == "featherface-pi: 3 frames, 1 skipped"
    assert listed.startswith(f"  failed: cannot read image {folder / 'b_notes.jpg'}")
    assert "Traceback" not in result.stderr


def test_pi_script_with_a_missing_source_fails_cleanly(pi4_bundle, tmp_path):
    result = run("featherface-pi", "--bundle", pi4_bundle, "--source", tmp_path / "no-such-folder", "--json")
    assert result.returncode == 2
    assert "featherface-pi: error:" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- video files


@pytest.fixture(scope="module")
def video(shared, tmp_path_factory) -> Path:
    cv2 = pytest.importorskip("cv2", reason=NO_CV2)
    path = tmp_path_factory.mktemp("video") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (320, 240))
    assert writer.isOpened(), "OpenCV cannot write MJPG .avi here"
    for i in range(5):
        bgr = cv2.imread(str(shared.image_paths[i % len(shared.image_paths)]))
        writer.write(cv2.resize(bgr, (320, 240)))
    writer.release()
    assert path.stat().st_size > 1000
    return path


@pytest.mark.skipif(not HAVE_CV2, reason=NO_CV2)
def test_pi_script_on_a_video_file(pi4_bundle, video):
    result = run("featherface-pi", "--bundle", pi4_bundle, "--source", video, "--max-frames", "3", "--json", "--threads", "2")
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert [r["image"] for r in records] == [f"{video}#frame={i}" for i in range(3)]
    for record in records:
        check_record(record, video=True)
    times = [r["timestamp_ms"] for r in records]
    assert times[0] == 0 and times == sorted(set(times))  # the file's own clock, from its first frame
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not HAVE_CV2, reason=NO_CV2)
def test_detect_on_a_video_file(onnx_bundle, video, tmp_path):
    out = tmp_path / "annotated"
    result = run("featherface", "detect", "--bundle", onnx_bundle, video, "--json", "--out", out)
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    assert [r["image"] for r in records] == [f"{video}#frame={i}" for i in range(5)]
    for record in records:
        check_record(record)
        for face in record["faces"]:  # boxes in the frame's own 320x240 pixels
            x1, y1, x2, y2 = face["box"]
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
    assert sum(len(r["faces"]) for r in records) > 0
    assert sorted(p.name for p in out.iterdir()) == [f"clip_frame{i:06d}.jpg" for i in range(5)]


def test_detect_on_a_video_without_opencv_is_reported_and_the_images_still_run(onnx_bundle, photo_folder, tmp_path, monkeypatch, capsys):
    """In-process, as an install without OpenCV: cv2 made unimportable (the SDK imports it
    lazily) and the resizer such an install picks at import time."""
    from featherface import cli
    from featherface.sdk import preprocess

    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    monkeypatch.setattr(preprocess, "DEFAULT_RESIZER", "pillow")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\0" * 2048)
    status = cli.main(["detect", "--bundle", str(onnx_bundle), str(clip), str(photo_folder / "c_landscape.jpg"), "--json"])
    out, err = capsys.readouterr()
    assert status == 1
    assert "OpenCV" in err and "clip.mp4" not in out
    assert [Path(r["image"]).name for r in json_lines(out)] == ["c_landscape.jpg"]
    assert "Traceback" not in err


@pytest.mark.skipif(not HAVE_CV2, reason=NO_CV2)
def test_pi_script_stops_cleanly_on_ctrl_c(pi4_bundle, shared, tmp_path):
    """SIGINT mid-video: the frame in flight finishes, the summary is printed, exit 0."""
    import signal

    import cv2

    path = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    frame = cv2.resize(cv2.imread(str(shared.image_paths[0])), (320, 240))
    for _ in range(2000):
        writer.write(frame)
    writer.release()
    process = subprocess.Popen([str(BIN / "featherface-pi"), "--bundle", str(pi4_bundle), "--source", str(path),
                                "--json", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # running: one frame is out
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    records = json_lines(first + rest)
    assert process.returncode == 0, err
    assert 1 <= len(records) < 2000  # stopped early, every line a whole record
    assert f"featherface-pi: {len(records)} frames, 0 skipped" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
