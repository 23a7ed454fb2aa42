"""`Detector` on real bundles (v1-489k, 160 px, built once per session by test_build's
SharedBuild): every runtime finds the faces of the bundle's torch runtime (the PyTorch
reference) on real photos, in the photos' own pixels; a bundle that was tampered with,
truncated or that points outside itself is refused."""
from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_shared
from featherface.config import DEPLOY_THRESHOLDS, PARITY_THRESHOLDS, PRIORS, InputSize
from featherface.sdk.box_coding import iou_matrix
from featherface.sdk.bundle import BundleError, read_manifest
from featherface.sdk.detector import Detector
from featherface.sdk.faces import Face
from featherface.sdk.image_io import load_image
from featherface.sdk.runtimes import RuntimeUnavailable
from featherface.verify.parity import ROBUST_MARGIN, Detections, detection_agreement
from test_build import CHECKPOINT, SIZE

pytestmark = [pytest.mark.slow, pytest.mark.shared]

FLOOR = DEPLOY_THRESHOLDS.score - ROBUST_MARGIN  # detections down to the robust floor


@pytest.fixture(scope="module")
def photos(shared) -> list[Path]:
    return shared.image_paths


@pytest.fixture(scope="module")
def torch_reference(photos):
    """PyTorch's detections on the photos down to the robust floor, through a bundle's own
    torch runtime (its manifest's arch and recorded checkpoint); computed once per bundle."""
    cache: dict[Path, list[Detections]] = {}

    def of(bundle: Path) -> list[Detections]:
        if bundle not in cache:
            detector = Detector.load(bundle, runtime="torch")
            cache[bundle] = [as_detections(detector.with_options(score_threshold=FLOOR).detect(path)) for path in photos]
        return cache[bundle]

    return of


def read_wider_gt(annotation_file: Path, image: str) -> np.ndarray:
    """xyxy boxes of `image` from an official wider_face_*_bbx_gt.txt."""
    lines = annotation_file.read_text().splitlines()
    i = 0
    while i < len(lines):
        name, count = lines[i].strip(), int(lines[i + 1])
        if name == image:
            rows = np.array([[float(v) for v in row.split()[:4]] for row in lines[i + 2 : i + 2 + count]]).reshape(-1, 4)
            rows[:, 2:] += rows[:, :2]
            return rows
        i += 2 + max(count, 1)
    raise KeyError(image)


def as_detections(faces: list[Face]) -> Detections:
    return Detections(
        np.array([f.box for f in faces], np.float64).reshape(-1, 4),
        np.array([f.score for f in faces], np.float64),
        np.array([np.ravel(f.landmarks) for f in faces], np.float64).reshape(-1, 10),
    )


def assert_same_faces(a: list[Face], b: list[Face], atol: float = 1e-3) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.box, y.box, atol=atol)
        np.testing.assert_allclose(x.score, y.score, atol=1e-5)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=atol)


def copy_bundle(source: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(source, bundle)
    return bundle


def edit_manifest(bundle: Path, change) -> None:
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


# ---------------------------------------------------------------- loading


def test_load_takes_everything_from_the_manifest(onnx_bundle, pi4_bundle):
    with Detector.load(onnx_bundle) as detector:
        assert detector.model_file == "model.onnx"
        assert detector.runtime.input_layout == "NCHW"
        assert detector.spec.input_size == InputSize(SIZE, SIZE)
        assert detector.spec.thresholds == DEPLOY_THRESHOLDS
        assert detector.spec.priors == PRIORS
    assert Detector.load(pi4_bundle).model_file == read_manifest(pi4_bundle).preferred_file
    fp16 = Detector.load(pi4_bundle, file="model_fp16.tflite")
    assert fp16.model_file == "model_fp16.tflite" and fp16.runtime.input_layout == "NHWC"


def test_unknown_file_is_refused_naming_the_bundles_files(onnx_bundle):
    with pytest.raises(BundleError, match="model.onnx"):
        Detector.load(onnx_bundle, file="model_int8.tflite")


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML runs on macOS")
def test_core_ml_file_is_unavailable_on_linux_naming_the_alternatives(onnx_bundle, tmp_path):
    """A bundle whose preferred file is an .mlpackage (sha256 valid): the Linux SDK says
    which formats to use instead. (test_build checks the same on the real a14 bundle.)"""
    from featherface.sdk.bundle import sha256_of

    bundle = copy_bundle(onnx_bundle, tmp_path)
    package = bundle / "model_fp16.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Manifest.json").write_text("{}")
    (package / "Data" / "model.mlmodel").write_bytes(b"\0" * 64)

    def add_package(manifest):
        entry = dict(manifest["files"][0], file=package.name, format="coreml", precision="fp16", sha256=sha256_of(package))
        manifest["files"].append(entry)
        manifest["preferred_file"] = package.name

    edit_manifest(bundle, add_package)
    with pytest.raises(RuntimeUnavailable) as refused:
        Detector.load(bundle)
    message = str(refused.value)
    assert "model_fp16.mlpackage" in message and "onnx" in message and "tflite" in message
    assert Detector.load(bundle, file="model.onnx").model_file == "model.onnx"


# ---------------------------------------------------------------- detections


def test_torch_runtime_gives_the_detections_the_build_judged_every_file_against(shared, onnx_bundle, torch_reference):
    """runtime="torch" builds the manifest's arch with the variant's default weights, which
    are the recorded checkpoint; around it, the SDK's own pre- and post-processing."""
    detector = Detector.load(onnx_bundle, runtime="torch")
    assert detector.model_file == CHECKPOINT and detector.runtime.input_layout == "NCHW"
    for mine, build in zip(torch_reference(onnx_bundle), shared.parity.detections, strict=True):
        np.testing.assert_allclose(mine.boxes, build.boxes, atol=1e-3)
        np.testing.assert_allclose(mine.scores, build.scores, atol=1e-6)
        np.testing.assert_allclose(mine.landmarks, build.landmarks, atol=1e-3)


def test_torch_runtime_refuses_a_checkpoint_other_than_the_recorded_one(onnx_bundle):
    other = require_shared("weights") / "retinaface_mnet025.pth"
    with pytest.raises(BundleError, match=f"{other}: sha256 differs from the checkpoint this bundle was built from "
                                          rf"\({CHECKPOINT}") as refused:
        Detector.load(onnx_bundle, weights=other)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "file, precision",
    [
        ("model.onnx", "fp32"),
        ("model_fp32.tflite", "fp32"),
        ("model_fp16.tflite", "fp16"),
        ("model_dynamic_int8.tflite", "dynamic_int8"),
        ("model_int8.tflite", "int8"),  # INT8 input and outputs: the SDK quantizes and dequantizes
    ],
)
def test_runtimes_agree_with_the_torch_runtime_on_real_photos(torch_reference, onnx_bundle, pi4_bundle, photos, file, precision):
    bundle = onnx_bundle if file.endswith(".onnx") else pi4_bundle
    detector = Detector.load(bundle, file=file)
    reference = torch_reference(bundle)  # the same bundle's torch runtime
    candidate = [as_detections(detector.with_options(score_threshold=FLOOR).detect(path)) for path in photos]
    agreement = detection_agreement(reference, candidate, DEPLOY_THRESHOLDS.score)
    thresholds = PARITY_THRESHOLDS[precision]
    assert agreement.reference_faces == 5  # not vacuous
    assert agreement.robust_recall >= thresholds.min_recall, agreement
    assert agreement.robust_precision >= thresholds.min_precision, agreement
    assert agreement.mean_iou > {"fp32": 0.999, "fp16": 0.95}.get(precision, 0.9), agreement
    if precision == "fp32":  # same faces, same order, same pixels
        for ref, cand in zip(reference, candidate):
            keep = ref.scores > DEPLOY_THRESHOLDS.score
            np.testing.assert_allclose(cand.boxes[cand.scores > DEPLOY_THRESHOLDS.score], ref.boxes[keep], atol=0.05)
            np.testing.assert_allclose(cand.scores[cand.scores > DEPLOY_THRESHOLDS.score], ref.scores[keep], atol=1e-4)


def test_faces_are_in_image_pixels_on_annotated_faces(shared, onnx_bundle, photos):
    detector = Detector.load(onnx_bundle)
    for path in photos:
        height, width = load_image(path).shape[:2]
        faces = detector.detect(path)
        assert faces, path.name
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        boxes = np.array([f.box for f in faces])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        # A 160 px model sees these photos at 1/6 - 1/9 scale: a face must still be a large box.
        assert (boxes[:, 2] - boxes[:, 0]).min() > 50
        truth = read_wider_gt(shared.gt_file, shared.wider_name[path.name])
        best = iou_matrix(boxes, truth).max(axis=1)
        assert (best >= 0.5).all(), (path.name, best)
        for face in faces:  # the landmarks are mapped the same way as the box
            x1, y1, x2, y2 = face.box
            margin = 0.25 * (x2 - x1)
            for x, y in face.landmarks:
                assert x1 - margin <= x <= x2 + margin and y1 - margin <= y <= y2 + margin


@pytest.mark.parametrize("file", ["model.onnx", "model_fp32.tflite", "model_int8.tflite"])
def test_detect_batch_equals_single_calls(onnx_bundle, pi4_bundle, photos, file):
    detector = Detector.load(onnx_bundle if file.endswith(".onnx") else pi4_bundle, file=file)
    images = [photos[1], photos[2]]  # a portrait and a landscape photo in one batch
    batched = detector.detect_batch(images)
    assert len(batched) == 2
    for image, faces in zip(images, batched):
        assert_same_faces(faces, detector.detect(image))
    assert sum(len(f) for f in batched) == 4


def test_bgr_arrays_give_the_same_faces(onnx_bundle, photos):
    detector = Detector.load(onnx_bundle)
    rgb = load_image(photos[2])
    from_path = detector.detect(photos[2])
    assert from_path
    assert detector.detect(rgb) == from_path
    assert detector.detect(np.ascontiguousarray(rgb[..., ::-1]), bgr=True) == from_path
    assert detector.detect(Image.fromarray(rgb)) == from_path
    # Without bgr=True, a BGR array is a different (blue-faced) image: results change.
    assert detector.detect(np.ascontiguousarray(rgb[..., ::-1])) != from_path


def test_score_threshold_override(onnx_bundle, photos):
    detector = Detector.load(onnx_bundle)
    default = detector.detect(photos[1])
    assert all(f.score > DEPLOY_THRESHOLDS.score for f in default)
    assert detector.with_options(score_threshold=0.9999).detect(photos[1]) == [f for f in default if f.score > 0.9999]
    loose = detector.with_options(score_threshold=0.001).detect(photos[1])
    assert len(loose) > len(default)  # boxes scored between 0.001 and 0.5
    # NMS keeps a box unless a higher-scoring one overlaps it: lower boxes change nothing above 0.5
    assert [f for f in loose if f.score > DEPLOY_THRESHOLDS.score] == default


# ---------------------------------------------------------------- untrusted bundles


@pytest.mark.parametrize("target, file", [("onnx", "model.onnx"), ("pi4", "model_fp16.tflite")])
def test_tampered_model_file_is_refused(shared, tmp_path, target, file):
    bundle = copy_bundle(shared.bundle(target), tmp_path)
    data = bytearray((bundle / file).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    (bundle / file).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{file}.*sha256"):
        Detector.load(bundle, file=file)


def test_truncated_model_file_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    data = (bundle / "model.onnx").read_bytes()
    (bundle / "model.onnx").write_bytes(data[: len(data) - 1000])
    with pytest.raises(BundleError, match="model.onnx.*sha256"):
        Detector.load(bundle)


def test_missing_model_file_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match="model.onnx.*missing"):
        Detector.load(bundle)


def test_missing_manifest_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json"):
        Detector.load(bundle)
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="JSON"):
        Detector.load(bundle)


def test_unknown_manifest_field_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    edit_manifest(bundle, lambda m: m.update(quantization={"int8": True}))
    with pytest.raises(BundleError, match="unknown fields.*quantization"):
        Detector.load(bundle)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unknown_format_version_is_refused(onnx_bundle, tmp_path, version):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    edit_manifest(bundle, lambda m: m.update(format_version=version))
    with pytest.raises(BundleError, match="format_version"):
        Detector.load(bundle)


def test_missing_manifest_field_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    edit_manifest(bundle, lambda m: m.pop("priors"))
    with pytest.raises(BundleError, match="priors"):
        Detector.load(bundle)


@pytest.mark.parametrize("name", ["../model.onnx", "sub/../../model.onnx"])
def test_path_leaving_the_bundle_is_refused(onnx_bundle, tmp_path, name):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    shutil.copyfile(bundle / "model.onnx", tmp_path / "model.onnx")  # a real file out there

    def point_outside(manifest):
        manifest["files"][0]["file"] = name
        manifest["preferred_file"] = name

    edit_manifest(bundle, point_outside)
    with pytest.raises(BundleError, match="leaves the bundle"):
        Detector.load(bundle)


def test_absolute_path_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copyfile(bundle / "model.onnx", outside)

    def point_outside(manifest):
        manifest["files"][0]["file"] = str(outside)
        manifest["preferred_file"] = str(outside)

    edit_manifest(bundle, point_outside)
    with pytest.raises(BundleError, match="leaves the bundle"):
        Detector.load(bundle)


def test_symlink_pointing_outside_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    outside = tmp_path / "elsewhere" / "model.onnx"
    outside.parent.mkdir()
    (bundle / "model.onnx").rename(outside)  # same bytes, same sha256
    (bundle / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="leaves the bundle"):
        Detector.load(bundle)


def test_files_entry_without_sha256_is_refused(onnx_bundle, tmp_path):
    bundle = copy_bundle(onnx_bundle, tmp_path)
    edit_manifest(bundle, lambda m: m["files"][0].pop("sha256"))
    with pytest.raises(BundleError, match="sha256"):
        Detector.load(bundle)
