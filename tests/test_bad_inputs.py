"""The bad-input corpus of issue 10, generated here (no binary files committed): odd and
damaged images, checkpoints, calibration folders and bundles. Each gives a correct result
or a clear error through the SDK and through `featherface detect / build / eval / bench`:
non-zero exit, one `error:` line, no traceback, nothing half-written.

Runs on the tiny random-weight bundle of conftest; only the eval-over-images case needs
../shared (the official ground-truth files).
"""
from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_one_error_line, noise_image, require_shared, run_cli
from featherface.model.registry import get_variant
from featherface.quantization.calibration import CalibrationError, calibration_set, select_images
from featherface.sdk import pi
from featherface.sdk.bundle import BundleError, sha256_of
from featherface.sdk.detect_command import face_json
from featherface.sdk.detector import Detector
from featherface.sdk.image_io import ImageError
from featherface.sdk.runtimes import ModelFileError, RuntimeUnavailable

BIN = Path(sys.executable).parent
FAST_BENCH = ["--runs", "1", "--warmup", "0", "--threads", "1"]


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height over a few bytes of data: a decompression
    bomb that Pillow must refuse before allocating any pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- the image corpus
# Readable images: a writer returning the upright RGB the detector must see.


def write_16_bit_png(path: Path) -> np.ndarray:
    samples = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    Image.fromarray(samples).save(path)  # mode I;16
    return np.repeat(np.rint(samples / 257).astype(np.uint8)[..., None], 3, axis=-1)


def write_cmyk_jpeg(path: Path) -> np.ndarray:
    Image.fromarray(noise_image(48, 64)).convert("CMYK").save(path, quality=95)
    with Image.open(path) as image:
        assert image.mode == "CMYK"
        return np.asarray(image.convert("RGB"))


def write_grayscale_png(path: Path) -> np.ndarray:
    gray = noise_image(48, 64, channels=1)
    Image.fromarray(gray).save(path)
    return np.repeat(gray[..., None], 3, axis=-1)


def write_rgba_png(path: Path) -> np.ndarray:
    rgba = noise_image(48, 64, channels=4)
    Image.fromarray(rgba).save(path)
    return rgba[..., :3]  # alpha dropped, not composited


def write_palette_png(path: Path) -> np.ndarray:
    palette = noise_image(256, 1, seed=1).reshape(256, 3)
    indices = noise_image(48, 64, channels=1, seed=2)
    image = Image.frombytes("P", (64, 48), indices.tobytes())
    image.putpalette(palette.ravel().tolist())
    image.save(path)
    return palette[indices]


def write_exif_rotated_jpeg(path: Path) -> np.ndarray:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(noise_image(40, 64)).save(path, exif=exif, quality=95)
    with Image.open(path) as stored:
        return np.rot90(np.asarray(stored.convert("RGB")), k=-1)


READABLE: dict[str, Callable[[Path], np.ndarray]] = {
    "16bit.png": write_16_bit_png,
    "cmyk.jpg": write_cmyk_jpeg,
    "grayscale.png": write_grayscale_png,
    "rgba.png": write_rgba_png,
    "palette.png": write_palette_png,
    "exif_rotated.jpg": write_exif_rotated_jpeg,
}


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# Unreadable images: their bytes, and the problem the one error line must name.
UNREADABLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "zero_bytes.jpg": (lambda: b"", "empty file"),
    "text.jpg": (lambda: b"these are my notes, not a photo\n", "not an image"),
    "truncated.jpg": (lambda: truncated(encoded(Image.fromarray(noise_image(64, 64)), "JPEG", quality=95)), "truncated"),
    "truncated.png": (lambda: truncated(encoded(Image.fromarray(noise_image(64, 64)), "PNG")), "truncated"),
    "1x1.png": (lambda: encoded(Image.new("RGB", (1, 1)), "PNG"), "too small"),
    "1x10000.png": (lambda: encoded(Image.new("RGB", (1, 10000)), "PNG"), "too small"),
    "bomb.png": (lambda: png_declaring(20_000, 20_000), "decompression-bomb limit"),
}


def write_image(case: str, folder: Path) -> tuple[Path, np.ndarray | None]:
    """Write corpus image `case` into `folder`: (path, expected RGB or None if unreadable)."""
    path = folder / case
    if case in READABLE:
        return path, READABLE[case](path)
    path.write_bytes(UNREADABLE[case][0]())
    return path, None


@pytest.fixture(scope="module")
def bundle(tiny_onnx_bundle) -> Path:
    return tiny_onnx_bundle


@pytest.fixture(scope="module")
def detector(bundle) -> Detector:
    return Detector.load(bundle)


@pytest.mark.parametrize("case", [*READABLE, *UNREADABLE])
def test_sdk_detect_gives_faces_in_image_pixels_or_one_line_image_error(case, detector, tmp_path):
    path, expected = write_image(case, tmp_path)
    if expected is None:
        with pytest.raises(ImageError) as refused:
            detector.detect(path)
        message = str(refused.value)
        assert str(path) in message and UNREADABLE[case][1] in message and "\n" not in message
        return
    faces = detector.detect(path)
    assert faces, "the random-weight model finds 'faces' in noise; none would make this vacuous"
    assert faces == detector.detect(np.ascontiguousarray(expected))  # decoded upright, as expected
    height, width = expected.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height


@pytest.mark.parametrize("case", [*READABLE, *UNREADABLE])
def test_cli_detect_prints_the_faces_or_skips_the_file_with_exit_1(case, bundle, detector, tmp_path, capsys):
    path, expected = write_image(case, tmp_path)
    annotated = tmp_path / "annotated"
    status, out, err = run_cli(["detect", "--bundle", bundle, path, "--json", "--out", annotated], capsys)
    assert "Traceback" not in err
    if expected is None:
        assert status == 1 and out == ""
        assert f"featherface: skipped: cannot read image {path}: " in err and UNREADABLE[case][1] in err
        assert "0 images, 0 faces, 1 failed" in err
        assert not annotated.exists() or not any(annotated.iterdir())
        return
    assert status == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record == {"image": str(path), "faces": [face_json(f) for f in detector.detect(path)]}
    with Image.open(annotated / f"{path.stem}.jpg") as drawn:
        assert drawn.size == (expected.shape[1], expected.shape[0])


def test_installed_detect_over_the_corpus_folder_skips_each_bad_file(bundle, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for case in [*READABLE, *UNREADABLE]:
        write_image(case, folder)
    result = subprocess.run([str(BIN / "featherface"), "detect", "--bundle", str(bundle), str(folder), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(Path(r["image"]).name for r in records) == sorted(READABLE)
    for case in UNREADABLE:
        assert f"skipped: cannot read image {folder / case}" in result.stderr
    assert f"{len(READABLE)} images" in result.stderr and f"{len(UNREADABLE)} failed" in result.stderr


def test_installed_pi_script_over_the_corpus_folder_lists_each_bad_file_and_exits_1(bundle, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for case in [*READABLE, *UNREADABLE]:
        write_image(case, folder)
    result = subprocess.run([str(BIN / "featherface-pi"), "--bundle", str(bundle), "--source", str(folder), "--json",
                             "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(Path(json.loads(line)["image"]).name for line in result.stdout.splitlines()) == sorted(READABLE)
    lines = result.stderr.splitlines()
    end = lines.index(f"featherface-pi: {len(READABLE)} frames, {len(UNREADABLE)} skipped")
    listed = lines[end + 1 :]  # the bad files again, after the summary, as `featherface detect` lists them
    assert len(listed) == len(UNREADABLE)
    for case, line in zip(sorted(UNREADABLE), listed):
        assert line.startswith(f"  failed: cannot read image {folder / case}: ") and UNREADABLE[case][1] in line


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_cli_bench_with_an_unreadable_image_is_one_error_line(case, bundle, tmp_path, capsys):
    path, _ = write_image(case, tmp_path)
    status, out, err = run_cli(["bench", bundle, "--image", path, "--out", tmp_path / "report", *FAST_BENCH], capsys)
    assert status == 2 and out == ""
    line = assert_one_error_line(err, "featherface bench")
    assert str(path) in line and UNREADABLE[case][1] in line
    assert not (tmp_path / "report").exists()


@pytest.mark.shared
@pytest.mark.parametrize("case", list(UNREADABLE))
def test_cli_eval_with_an_unreadable_dataset_image_fails_and_writes_no_predictions(case, bundle, tmp_path, capsys):
    """A good image sorted first, then a bad one: one error line and an untouched --out."""
    ground_truth = require_shared("data/widerface/ground_truth")
    val = require_shared("data/widerface/WIDER_val/images/0--Parade")
    root = tmp_path / "widerface"
    event = root / "WIDER_val" / "images" / "0--Parade"
    event.mkdir(parents=True)
    (root / "ground_truth").symlink_to(ground_truth)
    shutil.copyfile(val / "0_Parade_Parade_0_102.jpg", event / "0_Parade_Parade_0_102.jpg")
    bad = event / "0_Parade_Parade_0_12.jpg"  # any image format under a .jpg name
    bad.write_bytes(UNREADABLE[case][0]())
    predictions = tmp_path / "predictions"
    status, out, err = run_cli(["eval", "--bundle", bundle, "--data", root, "--out", predictions], capsys)
    assert status == 2 and out == ""
    line = assert_one_error_line(err)
    assert str(bad) in line and UNREADABLE[case][1] in line
    assert not predictions.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["widerface"]  # and no staging folder left


# ---------------------------------------------------------------- the checkpoint corpus


def write_checkpoint(case: str, folder: Path) -> tuple[Path, str]:
    """A bad v2-ultra checkpoint: (path, what the error must say)."""
    path = folder / f"{case}.pth"
    state = get_variant("v2-ultra").build().state_dict()
    if case == "nan":
        torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()}, path)
        return path, "non-finite"
    if case == "other_variant":
        torch.save(get_variant("retinaface-mnet025").build().state_dict(), path)
        return path, "does not match architecture v2-ultra"
    torch.save(state, path)
    path.write_bytes(truncated(path.read_bytes()))
    return path, "truncated or corrupt"


CHECKPOINTS = ["nan", "other_variant", "truncated"]


@pytest.fixture(scope="module")
def parity_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("parity-images")
    for i in range(2):
        Image.fromarray(noise_image(48, 80, seed=i)).save(folder / f"{i}.png")
    return folder


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_cli_build_with_an_unreadable_parity_image_writes_nothing(case, tmp_path, capsys):
    """--images with a bad file among good ones: one line naming it, exit 2, no --out."""
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(noise_image(48, 80)).save(images / "0_good.png")
    path, _ = write_image(case, images)
    out = tmp_path / "dist"
    status, stdout, err = run_cli(["build", "--target", "onnx", "--arch", "v2-ultra", "--input-size", "64",
                                   "--images", images, "--out", out, "--no-eval"], capsys)
    assert status == 2 and stdout == ""
    line = assert_one_error_line(err)
    assert str(path) in line and UNREADABLE[case][1] in line
    assert not out.exists()


def test_cli_build_outside_the_ap_budget_says_which_options_help(parity_images, tmp_path, capsys, monkeypatch):
    from featherface.converters import build
    from featherface.quantization.accuracy import APBudget
    from featherface.quantization.mixed_precision import BudgetNotMet

    def over_budget(*args, **kwargs):
        raise BudgetNotMet([], {"easy": 1.3, "medium": 1.0, "hard": 0.4}, APBudget(), "test")

    monkeypatch.setattr(build, "build_bundle", over_budget)
    status, stdout, err = run_cli(["build", "--target", "onnx", "--arch", "v2-ultra", "--input-size", "64",
                                   "--images", parity_images, "--out", tmp_path / "dist", "--no-eval"], capsys)
    assert status == 2 and stdout == ""
    line = assert_one_error_line(err)
    assert "outside the AP budget" in line and "easy 1.30" in line and "--ap-budget" in line and "--no-int8" in line


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_cli_build_refuses_a_bad_checkpoint_before_writing_anything(case, parity_images, tmp_path, capsys):
    path, problem = write_checkpoint(case, tmp_path)
    out = tmp_path / "dist"
    status, stdout, err = run_cli(["build", "--target", "onnx", "--arch", "v2-ultra", "--weights", path,
                                   "--input-size", "64", "--images", parity_images, "--out", out], capsys)
    assert status == 2 and stdout == ""
    line = assert_one_error_line(err, details=case == "other_variant")  # + which keys differ
    assert str(path) in line and problem in line
    if case == "other_variant":
        assert "this file most likely belongs to --arch retinaface-mnet025" in err
    assert not out.exists()


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_cli_eval_refuses_a_bad_checkpoint_before_writing_anything(case, tmp_path, capsys):
    path, problem = write_checkpoint(case, tmp_path)
    predictions = tmp_path / "predictions"
    status, stdout, err = run_cli(["eval", "--arch", "v2-ultra", "--weights", path, "--data", tmp_path / "wider",
                                   "--out", predictions], capsys)
    assert status == 2 and stdout == ""
    line = assert_one_error_line(err, details=case == "other_variant")
    assert str(path) in line and problem in line
    assert not predictions.exists()


def test_installed_build_with_a_nan_checkpoint_has_no_traceback(parity_images, tmp_path):
    path, _ = write_checkpoint("nan", tmp_path)
    result = subprocess.run(
        [str(BIN / "featherface"), "build", "--target", "onnx", "--arch", "v2-ultra", "--weights", str(path),
         "--input-size", "64", "--images", str(parity_images), "--out", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert "non-finite" in assert_one_error_line(result.stderr)
    assert not (tmp_path / "dist").exists()


# ---------------------------------------------------------------- calibration folders


def test_empty_calibration_folder_is_refused(tmp_path):
    for call in (lambda: select_images(tmp_path, 4), lambda: calibration_set(tmp_path, 64, 4)):
        with pytest.raises(CalibrationError, match=f"no images .* found below {tmp_path}"):
            call()


def test_calibration_folder_of_non_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "weights.pth").write_bytes(b"\0" * 64)
    with pytest.raises(CalibrationError, match="no images"):
        select_images(tmp_path, 4)
    (tmp_path / "notes.jpg").write_text("not a picture either")  # named like an image
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(CalibrationError) as refused:
        calibration_set(tmp_path, 64, 4)
    message = str(refused.value)
    assert "none of the 2 calibration files" in message and "notes.jpg" in message and "empty.png" in message
    assert "\n" not in message


def test_missing_calibration_folder_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        calibration_set(tmp_path / "nowhere", 64, 4)


@pytest.mark.parametrize("content", ["empty", "non_images"])
def test_cli_build_with_an_unusable_calibration_folder_is_one_error_line(content, parity_images, tmp_path, capsys):
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    if content == "non_images":
        (calibration / "notes.jpg").write_text("not a picture")
        (calibration / "weights.pth").write_bytes(b"\0" * 64)
    out = tmp_path / "dist"
    status, stdout, err = run_cli(["build", "--target", "pi4", "--arch", "v2-ultra", "--input-size", "64",
                                   "--images", parity_images, "--calib", calibration, "--no-eval", "--out", out], capsys)
    assert status == 2 and stdout == ""
    progress = [line for line in err.splitlines() if line.startswith("[")]  # the build's "[  0.0s] pi4: ..." lines
    line = assert_one_error_line("\n".join(line for line in err.splitlines() if line not in progress))
    assert str(calibration) in line and "calibration" in line
    assert not (out / "pi4").exists() and not (out / "pi4.parity-failed.json").exists()


def test_calibration_skips_unreadable_files_among_images(tmp_path):
    for case in ("text.jpg", "truncated.png", "grayscale.png", "rgba.png"):
        write_image(case, tmp_path)
    batch = calibration_set(tmp_path, 64, 10)
    assert batch.shape == (2, 64, 64, 3) and batch.dtype == np.float32


# ---------------------------------------------------------------- the bundle corpus


def edit_manifest(bundle: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def point_model_at(name: str) -> Callable[[dict], None]:
    def change(manifest: dict) -> None:
        manifest["files"][0]["file"] = manifest["preferred_file"] = name

    return change


def damage_bundle(case: str, bundle: Path) -> None:
    model = bundle / "model.onnx"
    if case == "missing_model":
        model.unlink()
    elif case == "modified_model":
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0x01
        model.write_bytes(bytes(data))
    elif case == "corrupt_model_resigned":  # damaged, and the manifest's sha256 updated to match
        model.write_bytes(model.read_bytes()[:5000])
        edit_manifest(bundle, lambda m: m["files"][0].update(sha256=sha256_of(model)))
    elif case == "unknown_field":
        edit_manifest(bundle, lambda m: m.update(quantization={"int8": True}))
    elif case == "path_leaving":
        shutil.copyfile(model, bundle.parent / "model.onnx")  # a real file out there
        edit_manifest(bundle, point_model_at("../model.onnx"))
    elif case == "symlink_out":
        model.rename(bundle.parent / "model.onnx")  # same bytes, same sha256
        model.symlink_to(bundle.parent / "model.onnx")
    elif case == "unknown_version":
        edit_manifest(bundle, lambda m: m.update(format_version=2))
    elif case == "unknown_nested_field":
        edit_manifest(bundle, lambda m: m["thresholds"].update(soft_nms=True))
    elif case == "missing_nested_field":
        edit_manifest(bundle, lambda m: m["priors"].pop("clip"))
    elif case == "mistyped_nested_field":
        edit_manifest(bundle, lambda m: m["input"].update(mean="104,117,123"))
    elif case == "mistyped_parity_figure":
        edit_manifest(bundle, lambda m: m["files"][0]["parity"]["detections"].update(robust_recall="1.0"))
    elif case == "mistyped_accuracy":
        edit_manifest(bundle, lambda m: m.update(reference_accuracy={"protocol": "letterboxed 64", "easy": "0.9"}))
    elif case == "output_map_missing_an_output":
        edit_manifest(bundle, lambda m: m["files"][0]["output_map"].pop("conf"))
    elif case == "package_link_out":  # an .mlpackage-like directory holding a link out
        package = bundle / "model.mlpackage"
        (package / "Data").mkdir(parents=True)
        (bundle.parent / "weights.bin").write_bytes(b"\0" * 64)
        (package / "Data" / "weights.bin").symlink_to(bundle.parent / "weights.bin")
        edit_manifest(bundle, lambda m: m["files"].append(dict(m["files"][0], file=package.name, format="coreml",
                                                                 sha256=sha256_of(package))))


BUNDLES = {  # case -> what the error must say
    "missing_model": "model.onnx listed in the manifest is missing",
    "modified_model": "sha256 differs",
    "corrupt_model_resigned": "onnxruntime cannot load this model file",
    "unknown_field": "unknown fields ['quantization']",
    "path_leaving": "'../model.onnx' leaves the bundle",
    "symlink_out": "'model.onnx' leaves the bundle",
    "unknown_version": "format_version 2 is not supported",
    "unknown_nested_field": "unknown fields ['thresholds.soft_nms']",
    "missing_nested_field": "missing fields ['priors.clip']",
    "mistyped_nested_field": '`input.mean` must be 3 finite numbers, not "104,117,123"',
    "mistyped_parity_figure": '`files[0].parity.detections.robust_recall` must be a number, not "1.0"',
    "mistyped_accuracy": '`reference_accuracy.easy` must be a number or null, not "0.9"',
    "output_map_missing_an_output": "`files[0].output_map` maps ['landmarks', 'loc']; expected ['conf', 'landmarks', 'loc']",
}


def bad_bundle(case: str, tmp_path: Path, source: Path) -> Path:
    copy = tmp_path / "bundles" / "onnx"
    shutil.copytree(source, copy)
    damage_bundle(case, copy)
    return copy


@pytest.mark.parametrize("case", list(BUNDLES))
def test_bad_bundle_is_refused_by_the_sdk_and_by_detect_eval_bench_and_the_pi_script(case, bundle, tmp_path, capsys):
    copy = bad_bundle(case, tmp_path, bundle)
    with pytest.raises(ModelFileError if case == "corrupt_model_resigned" else BundleError, match=re.escape(BUNDLES[case])):
        Detector.load(copy)
    image = tmp_path / "photo.png"
    Image.fromarray(noise_image(48, 64)).save(image)
    for command in (
        ["detect", "--bundle", copy, image, "--json", "--out", tmp_path / "annotated"],
        ["eval", "--bundle", copy, "--data", tmp_path / "wider", "--out", tmp_path / "predictions"],
        ["bench", copy, *FAST_BENCH, "--out", tmp_path / "report"],
        ["featherface-pi", "--bundle", copy, "--source", image, "--json", "--save", tmp_path / "annotated"],
    ):
        if command[0] == "featherface-pi":
            status = pi.main([str(a) for a in command[1:]])
            out, err = capsys.readouterr()
        else:
            status, out, err = run_cli(command, capsys)
        assert status == 2 and out == "", (command[0], err)
        prog = {"bench": "featherface bench", "featherface-pi": "featherface-pi"}.get(command[0], "featherface")
        assert BUNDLES[case] in assert_one_error_line(err, prog), command[0]
    assert not {"annotated", "predictions", "report"} & {p.name for p in tmp_path.iterdir()}


def test_model_directory_with_a_link_out_of_the_bundle_is_refused(bundle, tmp_path):
    copy = bad_bundle("package_link_out", tmp_path, bundle)
    with pytest.raises(BundleError, match=r"Data/weights.bin in model.mlpackage links out of the bundle"):
        Detector.load(copy, file="model.mlpackage")
    assert Detector.load(copy).model_file == "model.onnx"  # the bundle's other files still load


@pytest.mark.parametrize("change", ["golden_path_leaving", "golden_without_sha256", "golden_modified"])
def test_bench_refuses_golden_vectors_it_cannot_verify(change, bundle, tmp_path, capsys):
    copy = tmp_path / "bundles" / "onnx"
    shutil.copytree(bundle, copy)
    if change == "golden_path_leaving":
        shutil.copyfile(copy / "golden.npz", copy.parent / "golden.npz")
        edit_manifest(copy, lambda m: m["golden"].update(file="../golden.npz"))
    elif change == "golden_without_sha256":
        edit_manifest(copy, lambda m: m["golden"].pop("sha256"))
    else:
        with np.load(copy / "golden.npz") as data:
            arrays = {k: data[k] for k in data.files}
        arrays["conf"] = arrays["conf"] * 0.5
        np.savez_compressed(copy / "golden.npz", **arrays)
    status, out, err = run_cli(["bench", copy, *FAST_BENCH], capsys)
    assert status == 2 and out == ""
    assert {"golden_path_leaving": "leaves the bundle", "golden_without_sha256": "needs a `file` and its `sha256`",
            "golden_modified": "sha256 differs"}[change] in assert_one_error_line(err, "featherface bench")


@pytest.mark.parametrize("section, key, value, expected", [
    ("thresholds", "score", 5, "a number in [0, 1]"),
    ("thresholds", "score", -1, "a number in [0, 1]"),
    ("thresholds", "nms_iou", -0.1, "a number in [0, 1]"),
    ("thresholds", "nms_iou", 2, "a number in [0, 1]"),
    ("thresholds", "top_k", -1, "an integer >= 0"),
    ("priors", "variances", [0, 0], "2 positive numbers"),
    ("priors", "steps", [0, 16, 32], "a list of positive integers"),
    ("input", "mean", [1e300, 0, 0], "3 finite numbers"),
    ("input", "height", 10 ** 12, "an integer from 1 to 16384"),
    ("input", "channel_order", "RGB", "'BGR'"),
    ("input", "scale", 0.00392, "1 (the SDK feeds"),
])
def test_manifest_values_the_sdk_would_misuse_are_refused_naming_the_field(section, key, value, expected, bundle, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(bundle, copy)
    edit_manifest(copy, lambda m: m[section].update({key: value}))
    with pytest.raises(BundleError, match=re.escape(f"`{section}.{key}` must be {expected}")):
        Detector.load(copy)


def test_known_optional_manifest_field_is_accepted(bundle, tmp_path):
    copy = tmp_path / "onnx"
    shutil.copytree(bundle, copy)
    edit_manifest(copy, lambda m: m.update(reference_accuracy={"protocol": "letterboxed 64", "easy": 0.1}))
    assert Detector.load(copy).model_file == "model.onnx"


# ---------------------------------------------------------------- wrong runtimes, wrong checkpoints


@pytest.fixture(scope="module")
def bundle_weights(tmp_path_factory) -> Path:
    """The tiny bundle's own network (conftest: seed 0) as a checkpoint file."""
    path = tmp_path_factory.mktemp("weights") / "tiny_v2_ultra.pth"
    torch.manual_seed(0)
    torch.save(get_variant("v2-ultra").build().state_dict(), path)
    return path


def test_torch_runtime_runs_the_bundles_network_like_its_onnx_file(bundle, detector, bundle_weights, tmp_path):
    reference = Detector.load(bundle, weights=bundle_weights)
    assert reference.model_file == bundle_weights.name and reference.runtime.input_layout == "NCHW"
    assert Detector.load(bundle, runtime="torch", weights=bundle_weights).model_file == bundle_weights.name
    image = noise_image(48, 64, seed=3)
    batch, _ = detector.prepare(image)
    torch_outputs, onnx_outputs = reference.infer(batch), detector.infer(batch)
    assert list(torch_outputs) == ["loc", "conf", "landmarks"]
    for name, values in onnx_outputs.items():
        np.testing.assert_allclose(torch_outputs[name], values, atol=1e-4, err_msg=name)
    faces = detector.detect(image)
    assert faces and [f.score for f in reference.detect(image)] == pytest.approx([f.score for f in faces], abs=1e-4)


def test_runtime_of_another_format_is_one_error_line(bundle, tmp_path, capsys):
    with pytest.raises(RuntimeUnavailable, match="runtime 'litert' cannot open model.onnx, which needs 'onnxruntime'"):
        Detector.load(bundle, runtime="litert")
    with pytest.raises(ValueError, match="file='model.onnx' picks a model file"):
        Detector.load(bundle, runtime="torch", file="model.onnx")
    status, out, err = run_cli(["detect", "--bundle", bundle, tmp_path / "photo.png", "--runtime", "litert"], capsys)
    assert status == 2 and out == ""
    assert "runtime 'litert' cannot open model.onnx" in assert_one_error_line(err)


def record_checkpoint(bundle: Path, weights: Path, tmp_path: Path) -> Path:
    """A copy of `bundle` whose manifest says it was built from `weights`."""
    copy = tmp_path / "recorded"
    shutil.copytree(bundle, copy)
    edit_manifest(copy, lambda m: m.update(checkpoint={"name": weights.name, "sha256": sha256_of(weights)}))
    return copy


def test_checkpoint_other_than_the_recorded_one_is_refused_before_loading(bundle, bundle_weights, tmp_path, capsys):
    recorded = record_checkpoint(bundle, bundle_weights, tmp_path)
    assert Detector.load(recorded, weights=bundle_weights).model_file == bundle_weights.name
    other, _ = write_checkpoint("other_variant", tmp_path)
    with pytest.raises(BundleError, match=f"{other}: sha256 differs from the checkpoint this bundle was built from "
                                          r"\(tiny_v2_ultra.pth"):
        Detector.load(recorded, weights=other)
    # The CLI's --runtime torch takes v2-ultra's own default weights: not this bundle's network.
    status, out, err = run_cli(["detect", "--bundle", recorded, tmp_path / "photo.png", "--runtime", "torch"], capsys)
    assert status == 2 and out == ""
    assert "v2_ultra.pth: sha256 differs from the checkpoint this bundle was built from" in assert_one_error_line(err)


def test_checkpoint_of_another_variant_is_refused_without_a_record(bundle, tmp_path):
    """The tiny bundle records no checkpoint (random weights): the loader's key check refuses."""
    other, problem = write_checkpoint("other_variant", tmp_path)
    with pytest.raises(ValueError, match=problem) as refused:
        Detector.load(bundle, weights=other)
    assert "this file most likely belongs to --arch retinaface-mnet025" in str(refused.value)


def test_torch_runtime_without_torch_names_the_alternative(bundle, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError, as on a device
    with pytest.raises(RuntimeUnavailable, match=r"needs PyTorch, which is not installed.*onnxruntime, LiteRT"):
        Detector.load(bundle, runtime="torch")
    status, out, err = run_cli(["detect", "--bundle", bundle, tmp_path / "photo.png", "--runtime", "torch"], capsys)
    assert status == 2 and out == ""
    assert "pip install 'featherface[torch]'" in assert_one_error_line(err)
