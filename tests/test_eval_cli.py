"""`featherface eval` on the normal path: the command contract, the prediction layout and
AP that reflects the detector (a trained network scores high, an untrained one low)."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from conftest import require_shared, run_cli
from featherface.evaluation import evaluate_detector, val_images
from featherface.widerface import load_ground_truth, read_prediction_file

IMAGES = {  # two events, four images of the shared validation subset
    "0--Parade": ["0_Parade_Parade_0_102", "0_Parade_Parade_0_12"],
    "13--Interview": None,  # the first two of the event
}


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    """A WIDER FACE root holding four of the shared validation images (linked, not copied)."""
    shared = require_shared("data/widerface")
    root = tmp_path_factory.mktemp("widerface")
    for name in ("ground_truth", "wider_face_split"):
        (root / name).symlink_to(shared / name)
    for event, names in IMAGES.items():
        source = shared / "WIDER_val" / "images" / event
        chosen = [source / f"{n}.jpg" for n in names] if names else sorted(source.glob("*.jpg"))[:2]
        target = root / "WIDER_val" / "images" / event
        target.mkdir(parents=True)
        for image in chosen:
            (target / image.name).symlink_to(image)
    return root


def _eval(argv: list[str], capsys) -> dict:
    status, out, err = run_cli(["eval", *map(str, argv), "--json"], capsys)
    assert status == 0, err
    assert "Traceback" not in err
    return json.loads(out.strip().splitlines()[-1])  # the contract: the JSON is the last line


@pytest.mark.shared
@pytest.mark.parametrize("protocol", [["--origin-size"], ["--input-size", "320"]])
def test_eval_of_a_trained_network_writes_the_standard_layout_and_its_ap(protocol, small_root, tmp_path, capsys):
    weights = require_shared("weights/retinaface_mnet025.pth")
    out = tmp_path / "predictions"
    result = _eval(["--arch", "retinaface-mnet025", "--weights", weights, "--data", small_root, *protocol, "--out", out], capsys)
    assert {"easy", "medium", "hard", "images"} <= set(result)
    assert result["images"] == 4
    assert result["protocol"] == ("original size" if protocol == ["--origin-size"] else "letterboxed 320")
    # RetinaFace finds the large faces of these photos (an untrained network scores about 0);
    # at 320 the 4-photo AP moves with the resizer: 0.67 with OpenCV, above 0.7 with Pillow.
    assert result["easy"] > 0.6
    files = sorted(out.glob("*/*.txt"))
    assert [(f.parent.name, f.stem) for f in files] == sorted(
        (p.parent.name, p.stem) for p in small_root.glob("WIDER_val/images/*/*.jpg"))
    name, boxes = read_prediction_file(files[0])
    assert name == files[0].stem and boxes.shape[1] == 5 and len(boxes) > 0
    assert (boxes[:, :4] == boxes[:, :4].astype(int)).all()  # truncated integer pixels, as the original script


@pytest.mark.shared
def test_arch_without_weights_uses_the_embedded_default_and_a_bundle_file_evaluates(small_root, tiny_onnx_bundle, tmp_path, capsys):
    embedded = _eval(["--arch", "v2-ultra", "--data", small_root, "--input-size", "320", "--out", tmp_path / "a"], capsys)
    assert embedded["weights"].endswith("v2_ultra.pth") and embedded["images"] == 4
    bundle = _eval(["--bundle", tiny_onnx_bundle, "--file", "model.onnx", "--data", small_root, "--out", tmp_path / "b"], capsys)
    assert bundle["file"] == "model.onnx" and bundle["images"] == 4
    # The tiny bundle is an untrained network: its AP must not look like a detector's.
    assert bundle["easy"] < embedded["easy"]


@pytest.mark.shared
def test_by_event_scores_each_event_alone(small_root, tmp_path, capsys):
    """A detector that returns the ground truth of Parade photos and nothing for the others:
    Parade alone scores 1, Interview 0, the total lies between, and the CLI prints both."""
    gt = load_ground_truth(small_root / "ground_truth")
    answers = iter(
        gt.images[(event, name)].boxes if event == "0--Parade" else np.zeros((0, 4))
        for event, name, _ in val_images(small_root)
    )

    def detect(_rgb):
        xywh = next(answers)
        return np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], np.linspace(1.0, 0.5, len(xywh))

    result = evaluate_detector(detect, small_root, tmp_path / "p", by_event=True)
    events = result.events
    assert list(events) == ["0--Parade", "13--Interview"] and events["0--Parade"].images == 2
    assert events["0--Parade"].easy == pytest.approx(1.0, abs=0.02) and events["13--Interview"].easy == 0.0
    assert 0.0 < result.easy < events["0--Parade"].easy
    status, out, err = run_cli(["eval", "--arch", "retinaface-mnet025", "--weights", str(require_shared("weights/retinaface_mnet025.pth")),
                                "--data", str(small_root), "--input-size", "320", "--out", str(tmp_path / "q"), "--by-event"], capsys)
    assert status == 0, err
    assert "0--Parade (2 images" in out and "13--Interview (2 images" in out


@pytest.mark.shared
def test_the_builds_accuracy_check_fills_the_manifest_fields(small_root, shared):
    """`make build`'s AP columns: PyTorch's reference and a file's AP beside its difference
    to PyTorch in points (the ONNX file of the same network: within a fraction of a point)."""
    from featherface.config import InputSize
    from featherface.quantization.accuracy import AccuracyCheck
    from featherface.verify.files import ModelFile
    from test_build import SIZE

    check = AccuracyCheck(small_root, shared.model, InputSize.of(SIZE))
    reference = check.manifest_reference()
    assert list(reference.to_json()) == ["protocol", "easy", "medium", "hard", "images", "curves"]  # no status, no wall time
    assert reference.protocol == f"letterboxed {SIZE}" and reference.images == 4 and 0.3 < reference.easy <= 1.0
    onnx = shared.bundle("onnx") / "model.onnx"
    measured = check.of_file(ModelFile(onnx, "onnx", "fp32", 0.0))
    assert measured.status == "measured" and measured.images == 4
    assert set(measured.delta_vs_torch) == {"easy", "medium", "hard"}
    assert all(abs(delta) < 1.0 for delta in measured.delta_vs_torch.values())
    assert measured.easy == pytest.approx(reference.easy + measured.delta_vs_torch["easy"] / 100, abs=1e-4)
    if platform.system() != "Darwin":
        assert check.of_file(ModelFile(onnx.with_suffix(".mlpackage"), "coreml", "fp32", 0.0)).status == "not measured"


@pytest.mark.shared
def test_the_builds_ap_of_a_file_is_what_eval_of_its_bundle_measures(small_root, shared, tmp_path):
    """One detect path: the build (a file without a manifest yet, outputs told apart by
    shape) and `featherface eval --bundle` (the manifest's output map) score alike."""
    from featherface.config import InputSize
    from featherface.evaluation import detector_detect_fn
    from featherface.quantization.accuracy import model_file_detect_fn
    from featherface.sdk.detector import Detector
    from test_build import SIZE

    for target, file in (("onnx", "model.onnx"), ("pi4", "model_int8.tflite")):  # a float input, and an INT8 one
        bundle = shared.bundle(target)
        built = evaluate_detector(model_file_detect_fn(bundle / file, InputSize.of(SIZE)), small_root, tmp_path / f"{target}-a")
        with Detector.load(bundle, file=file) as detector:
            evaluated = evaluate_detector(detector_detect_fn(detector), small_root, tmp_path / f"{target}-b")
        assert built.by_setting() == evaluated.by_setting() and built.images == evaluated.images == 4, target


def _root_with(root: Path, small_root: Path, event: str) -> Path:
    """A WIDER FACE root holding `event` of `small_root` alone (linked)."""
    (root / "WIDER_val" / "images").mkdir(parents=True)
    for name in ("ground_truth", "wider_face_split"):
        (root / name).symlink_to(small_root / name)
    (root / "WIDER_val" / "images" / event).symlink_to(small_root / "WIDER_val" / "images" / event)
    return root


@pytest.mark.shared
def test_no_image_to_evaluate_is_one_error_line_not_a_nan_ap(small_root, tmp_path, capsys):
    root = _root_with(tmp_path / "root", small_root, "0--Parade")  # its two photos are landscape
    out = tmp_path / "predictions"
    status, stdout, err = run_cli(["eval", "--arch", "v2-ultra", "--data", str(root), "--out", str(out),
                                   "--orientation", "portrait", "--json"], capsys)
    assert status == 2 and stdout == "" and "nan" not in err.lower()
    assert err.strip().splitlines()[-1] == f"featherface: error: {root}: no WIDER_val images in portrait orientation to evaluate"
    assert not out.exists()


@pytest.mark.shared
def test_an_image_missing_from_the_ground_truth_is_refused_before_any_inference(small_root, tmp_path, capsys):
    root = _root_with(tmp_path / "root", small_root, "13--Interview")
    stray = root / "WIDER_val" / "images" / "0--Parade"
    stray.mkdir()
    (stray / "not_in_the_ground_truth.jpg").symlink_to(next((small_root / "WIDER_val" / "images" / "0--Parade").iterdir()))
    detected = []
    with pytest.raises(ValueError, match="1 WIDER_val images are not in the ground truth: 0--Parade/not_in_the_ground_truth"):
        evaluate_detector(lambda rgb: detected.append(1), root, tmp_path / "out")
    assert detected == [] and not (tmp_path / "out").exists()


@pytest.mark.shared
def test_against_a_baseline_prints_the_paired_difference_and_refuses_one_of_other_images(small_root, tiny_onnx_bundle,
                                                                                         tmp_path, capsys):
    trained = _eval(["--arch", "v2-ultra", "--data", small_root, "--input-size", "320", "--out", tmp_path / "trained"], capsys)
    untrained = ["--bundle", tiny_onnx_bundle, "--file", "model.onnx", "--data", small_root]
    result = _eval([*untrained, "--out", tmp_path / "untrained", "--against", tmp_path / "trained"], capsys)
    for s in ("easy", "medium", "hard"):
        assert result["against"][s]["difference"] == pytest.approx(result[s] - trained[s])
        assert result["against"][s]["low"] <= result["against"][s]["difference"] <= result["against"][s]["high"]
    assert result["against"]["easy"]["high"] < 0  # untrained against trained: behind on every resample
    assert result["against"]["images"] == 4
    # A baseline of other images is refused before any inference, and nothing is written.
    landscape = _eval([*untrained, "--orientation", "landscape", "--out", tmp_path / "landscape"], capsys)
    assert landscape["images"] < 4
    status, out, err = run_cli(["eval", *map(str, untrained), "--out", str(tmp_path / "refused"), "--against",
                                str(tmp_path / "landscape")], capsys)
    assert status == 2 and out == ""
    assert err.strip().splitlines()[-1].startswith(f"featherface: error: baseline {tmp_path / 'landscape'}: no predictions for ")
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--bundle", "B", "--weights", "w.pth"], "--weights is for --arch"),
    (["--arch", "v2-ultra", "--file", "model.onnx"], "--file picks a bundle's model file"),
])
def test_eval_refuses_a_flag_that_the_chosen_network_would_ignore(argv, expected, tiny_onnx_bundle, tmp_path, capsys):
    argv = [str(tiny_onnx_bundle) if a == "B" else a for a in argv]
    status, out, err = run_cli(["eval", *argv, "--data", str(tmp_path), "--out", str(tmp_path / "p")], capsys)
    assert status == 2 and out == "" and expected in err.strip().splitlines()[-1]
    assert not (tmp_path / "p").exists()
