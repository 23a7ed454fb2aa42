"""`build_bundle` end to end on the deformable-conv network v1-489k (real checkpoint) at a
small input size, checked on real WIDER FACE photos: every target's bundle layout, manifest,
golden vectors and parity report; every format passes parity; and every failure leaves no
bundle behind and says why.

The bundles are built once per test session (`shared_build`) and reused by
test_sdk_detector.py and test_detect_cli.py: onnx2tf and Core ML conversions are slow.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import require_shared
from featherface.choice import fastest
from featherface.config import (
    DEPLOY_THRESHOLDS,
    FLOAT32_NOISE_FACTOR,
    MANIFEST_VERSION,
    MEAN_BGR,
    OUTPUT_NAMES,
    OUTPUT_WIDTHS,
    PARITY_THRESHOLDS,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.shared,
    # coremltools 9.0's torch frontend, once per op: noise that hides real warnings.
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

ARCH = "v1-489k"
CHECKPOINT = "featherface_v1_489k.pth"
SIZE = 160  # a multiple of 32, small enough for fast conversions, large enough for these faces
ANCHORS = 2 * ((SIZE // 8) ** 2 + (SIZE // 16) ** 2 + (SIZE // 32) ** 2)
# WIDER FACE val photos with large faces (v1-489k finds them at 160 px with scores > 0.7).
PHOTOS = (
    "13--Interview/13_Interview_Interview_2_People_Visible_13_155.jpg",  # 1024x1027, one face
    "13--Interview/13_Interview_Interview_2_People_Visible_13_245.jpg",  # 1024x1366 portrait, two faces
    "13--Interview/13_Interview_Interview_2_People_Visible_13_327.jpg",  # 1024x784 landscape, two faces
)
FILES = {  # target -> file -> (format, precision)
    "onnx": {"model.onnx": ("onnx", "fp32")},
    "pi4": {
        "model_fp32.tflite": ("tflite", "fp32"),
        "model_fp16.tflite": ("tflite", "fp16"),
        "model_dynamic_int8.tflite": ("tflite", "dynamic_int8"),
        "model_int8.tflite": ("tflite", "int8"),
    },
    "a14": {
        "model_fp32.mlpackage": ("coreml", "fp32"),
        "model_fp16.mlpackage": ("coreml", "fp16"),
        "model_image_fp16.mlpackage": ("coreml", "fp16"),
        "model_w8.mlpackage": ("coreml", "w8"),
    },
}
CALIBRATION_IMAGES = 8  # from WIDER_train: enough for these large faces at 160 px
LAYOUT = {"onnx": "NCHW", "pi4": "NHWC", "a14": "NCHW"}
FIXED = {"onnx": "model.onnx", "pi4": "model_int8.tflite", "a14": "model_fp16.mlpackage"}  # preferred where nothing is timed


# ---------------------------------------------------------------- the shared bundles


class SharedBuild:
    """The v1-489k network, its parity set on PHOTOS, and bundles built on demand into `out`."""

    def __init__(self, root: Path) -> None:
        from featherface.converters.build import find_images, make_parity_set
        from featherface.model.registry import create_model

        self.checkpoint = require_shared("weights") / CHECKPOINT
        val_images = require_shared("data/widerface/WIDER_val/images")
        self.gt_file = require_shared("data/widerface/wider_face_split/wider_face_val_bbx_gt.txt")
        self.root = root
        self.images = root / "images"
        self.images.mkdir()
        self.wider_name: dict[str, str] = {}  # file name -> WIDER relative path
        for relative in PHOTOS:
            shutil.copyfile(val_images / relative, self.images / Path(relative).name)
            self.wider_name[Path(relative).name] = relative
        self.model = create_model(ARCH, self.checkpoint)
        self.image_paths = find_images(self.images, len(PHOTOS))
        self.parity = make_parity_set(self.model, self.image_paths, SIZE)
        self.out = root / "dist"
        self.manifests: dict[str, dict] = {}
        self.errors: dict[str, BaseException] = {}
        self.threads: dict[str, threading.Thread] = {}
        self.log: list[str] = []

    def _build(self, target: str, progress=None) -> None:
        from featherface.converters.build import build_bundle
        from featherface.quantization.pipeline import Int8Options

        int8 = Int8Options(require_shared("data/widerface"), CALIBRATION_IMAGES) if target == "pi4" else None
        self.manifests[target] = build_bundle(
            target, self.model, ARCH, self.checkpoint, self.parity, SIZE, self.out,
            progress or (lambda message: self.log.append(f"{target}: {message}")), int8=int8,
        ).to_json()

    def bundle(self, target: str) -> Path:
        """The directory of `target`'s bundle, built now unless it was already."""
        thread = self.threads.pop(target, None)
        if thread is not None:
            thread.join()
        if target in self.errors:
            raise self.errors[target]
        if target not in self.manifests:
            self._build(target)
        return self.out / target

    def build_all(self) -> None:
        """onnx, then pi4 and a14 overlapped: pi4's onnx2tf subprocess runs while a14's
        Core ML conversions run here (the two torch traces never overlap)."""
        self.bundle("onnx")
        if "pi4" not in self.manifests and "pi4" not in self.threads:
            exported = threading.Event()

            def progress(message: str) -> None:
                self.log.append(f"pi4: {message}")
                if message.startswith("converting ONNX -> TFLite"):  # the ONNX export is done
                    exported.set()

            def run() -> None:
                try:
                    self._build("pi4", progress)
                except BaseException as err:  # noqa: BLE001 - re-raised by bundle("pi4")
                    self.errors["pi4"] = err
                finally:
                    exported.set()

            self.threads["pi4"] = threading.Thread(target=run, name="build-pi4", daemon=True)
            self.threads["pi4"].start()
            exported.wait()
        try:
            self.bundle("a14")
        finally:
            self.bundle("pi4")


_SHARED: SharedBuild | None = None


def shared_build(tmp_path_factory) -> SharedBuild:
    """The session's SharedBuild (one per test session, whichever test file asks first)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = SharedBuild(tmp_path_factory.mktemp("shared-build"))
    return _SHARED


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> SharedBuild:
    shared = shared_build(tmp_path_factory)
    shared.build_all()
    return shared


def onnx_copy_export(source: Path, damage=None) -> dict:
    """An exporter table whose onnx exporter ships a copy of an already exported, good ONNX
    file (optionally damaged by `damage(path)`), as the real exporter would write it."""
    from featherface.converters.build import ModelFile

    def export(request):
        path = request.stage / "model.onnx"
        shutil.copyfile(source, path)
        if damage is not None:
            damage(path)
        return [ModelFile(path, "onnx", "fp32", 0.0)]

    return {"onnx": export}


def hidden_leftovers(out: Path) -> list[str]:
    """Staging (.partial), retired (.old-) or temporary entries a build left in `out`."""
    return sorted(p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".build.lock")


# ---------------------------------------------------------------- every target's bundle


@pytest.mark.parametrize("target", ["onnx", "pi4", "a14"])
def test_bundle_layout_and_manifest(built, target):
    from featherface.converters.manifest import size_of
    from featherface.sdk.bundle import MANIFEST_FIELDS, read_manifest, sha256_of, verified_file

    bundle = built.out / target
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest == built.manifests[target]
    # The SDK reads every field the builder writes; pi4's files are timed to choose the preferred one.
    assert set(manifest) == MANIFEST_FIELDS | ({"preferred_by"} if target == "pi4" else set())
    assert read_manifest(bundle).to_json() == manifest
    assert manifest["format_version"] == MANIFEST_VERSION
    assert (manifest["target"], manifest["arch"]) == (target, ARCH)
    assert manifest["checkpoint"] == {"name": CHECKPOINT, "sha256": sha256_of(built.checkpoint)}
    assert manifest["input"] | {"resize": None} == {
        "name": "input", "height": SIZE, "width": SIZE, "layout": LAYOUT[target], "dtype": "float32",
        "channel_order": "BGR", "mean": list(MEAN_BGR), "scale": 1.0, "resize": None,
    }
    assert manifest["priors"] == {
        "min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "variances": [0.1, 0.2], "clip": False,
    }
    assert manifest["outputs"] == [{"name": n, "shape": [1, ANCHORS, OUTPUT_WIDTHS[n]]} for n in OUTPUT_NAMES]
    assert manifest["thresholds"] == {"score": DEPLOY_THRESHOLDS.score, "nms_iou": DEPLOY_THRESHOLDS.nms_iou, "top_k": DEPLOY_THRESHOLDS.top_k}
    chosen = manifest.get("preferred_by")
    if target == "pi4":  # timed here: the fastest (within 5 %, the smallest) of the non-comparison files
        sizes = {e["file"]: e["size_bytes"] for e in manifest["files"]}
        assert chosen["by"] == "featherface build" and chosen["threads"] == 1 and chosen["device"]
        assert set(chosen["model_p50_ms"]) == {"model_fp32.tflite", "model_fp16.tflite", "model_int8.tflite"}
        assert manifest["preferred_file"] == fastest(chosen["model_p50_ms"], sizes)
    else:  # one file, or Core ML, which runs here only in our evaluator: the fixed rule
        assert chosen is None and manifest["preferred_file"] == FIXED[target]

    assert {e["file"]: (e["format"], e["precision"]) for e in manifest["files"]} == FILES[target]
    for entry in manifest["files"]:
        path = bundle / entry["file"]
        assert path.exists()
        assert entry["sha256"] == sha256_of(path)
        assert entry["size_bytes"] == size_of(path) > 10_000
        assert set(entry["output_map"]) == set(OUTPUT_NAMES)
        assert len(set(entry["output_map"].values())) == 3
        assert verified_file(bundle, read_manifest(bundle), entry["file"])[0] == path
        parity = entry["parity"]
        assert parity["status"] == "pass", parity["reasons"]
        assert parity["reasons"] == []
        assert parity["images"] == [p.name for p in built.image_paths]
        assert set(parity["tensor"]) == set(OUTPUT_NAMES)
        assert {"recall", "precision", "robust_recall", "robust_precision"} <= set(parity["detections"])

    # The bundle directory holds exactly its files, the golden vectors and the reports.
    expected = set(FILES[target]) | {"manifest.json", "golden.npz", "parity.md", "parity.json", "parity.html"}
    assert {p.name for p in bundle.iterdir()} == expected
    assert not (built.out / f"{target}.parity-failed.json").exists()
    assert hidden_leftovers(built.out) == []


@pytest.mark.parametrize("target", ["onnx", "pi4", "a14"])
def test_bundle_is_readable_by_others(built, target):
    """Bundles are copied to devices and served: not the 0600/0700 of mkstemp/mkdtemp."""
    mask = os.umask(0)
    os.umask(mask)
    bundle = built.out / target
    assert bundle.stat().st_mode & 0o777 == 0o777 & ~mask
    for name in ("manifest.json", "golden.npz", "parity.md", "parity.json", "parity.html", *FILES[target]):
        path = bundle / name
        bits = 0o555 if path.is_dir() else 0o444  # read (and enter) for owner, group, others
        assert path.stat().st_mode & bits == bits & ~mask, name


@pytest.mark.parametrize("target", ["onnx", "pi4", "a14"])
def test_golden_vectors_are_real_inputs_with_pytorch_outputs(built, target):
    from featherface.sdk.bundle import sha256_of

    bundle = built.out / target
    manifest = built.manifests[target]
    golden = manifest["golden"]
    assert golden["file"] == "golden.npz"
    assert golden["sha256"] == sha256_of(bundle / "golden.npz")
    assert golden["images"] == [p.name for p in built.image_paths[:2]]
    with np.load(bundle / "golden.npz") as data:
        assert {"input", *OUTPUT_NAMES} <= set(data.files)
        assert data["input"].shape == (2, 3, SIZE, SIZE) and data["input"].dtype == np.float32
        np.testing.assert_array_equal(data["input"], built.parity.inputs[:2])
        for name in OUTPUT_NAMES:
            assert data[name].shape == (2, ANCHORS, OUTPUT_WIDTHS[name])
            np.testing.assert_array_equal(data[name], built.parity.reference[name][:2])
        # Real photos: the letterboxed content is not constant, the padding is exactly 0.
        assert data["input"][0].std() > 10


@pytest.mark.parametrize("target", ["onnx", "pi4", "a14"])
def test_parity_reports(built, target):
    bundle = built.out / target
    manifest = built.manifests[target]
    report = json.loads((bundle / "parity.json").read_text())
    assert report["parity"] == {e["file"]: e["parity"] for e in manifest["files"]}
    assert [r["file"] for r in report["summary"] if r["status"] != "reference"] == [e["file"] for e in manifest["files"]]
    markdown = (bundle / "parity.md").read_text()
    quantized = [e for e in manifest["files"] if e.get("quantization", {}).get("sensitivity")]
    assert ("## Quantization" in markdown) == bool(quantized)
    for entry in quantized:  # the most sensitive op of each quantized file is listed
        assert f"`{entry['quantization']['sensitivity'][0]['tensor']}`" in markdown
    assert ARCH in markdown and target in markdown
    for name in FILES[target]:
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {name} |"))
        assert "| pass |" in row
    for image in built.image_paths:
        assert image.name in markdown


def all_entries(built):
    return [(target, entry) for target in ("onnx", "pi4", "a14") for entry in built.manifests[target]["files"]]


def test_deformable_network_passes_parity_on_every_format(built):
    """v1-489k (modulated deformable convs) through ONNX, TFLite FP32/FP16 and Core ML
    FP32/FP16/W8 (Core ML run with the MIL evaluator): every file found PyTorch's faces."""
    entries = all_entries(built)
    assert sorted(e["file"] for _, e in entries) == sorted(f for files in FILES.values() for f in files)
    for _, entry in entries:
        detections = entry["parity"]["detections"]
        thresholds = PARITY_THRESHOLDS[entry["precision"]]
        # 5 annotated faces on the 3 photos: the agreement figures are not vacuous.
        assert detections["reference_faces"] == 5, entry["file"]
        assert detections["robust_recall"] >= thresholds.min_recall, entry["file"]
        assert detections["robust_precision"] >= thresholds.min_precision, entry["file"]
        assert detections["mean_iou"] > 0.9, entry["file"]
        # INT8 moves the loc regressions of background anchors too (dynamic INT8: 0.989).
        cosine_bar = 0.95 if "int8" in entry["precision"] else 0.99
        for name, figures in entry["parity"]["tensor"].items():
            assert figures["finite"] and figures["cosine"] > cosine_bar, (entry["file"], name)


def test_fp32_files_are_within_the_bound_their_record_states(built):
    fp32 = [(t, e) for t, e in all_entries(built) if e["precision"] == "fp32"]
    assert sorted(e["file"] for _, e in fp32) == ["model.onnx", "model_fp32.mlpackage", "model_fp32.tflite"]
    for _, entry in fp32:
        parity = entry["parity"]
        assert parity["thresholds"]["abs_tolerance"] == PARITY_THRESHOLDS["fp32"].abs_tolerance
        for name in OUTPUT_NAMES:
            noise = parity["torch_fp32_vs_fp64"][name]
            assert noise == built.parity.float32_noise[name]
            assert parity["error_bounds"][name] == max(PARITY_THRESHOLDS["fp32"].abs_tolerance, FLOAT32_NOISE_FACTOR * noise)
            assert parity["tensor"][name]["max_abs_error"] <= parity["error_bounds"][name], (entry["file"], name)
    for _, entry in all_entries(built):
        if entry["precision"] != "fp32":
            assert set(entry["parity"]["error_bounds"].values()) == {None}


def test_image_input_core_ml_file_is_described(built):
    entry = next(e for e in built.manifests["a14"]["files"] if e["file"] == "model_image_fp16.mlpackage")
    assert entry["input"] == {"name": "image", "type": "image", "channel_order": "BGR", "bias": [-m for m in MEAN_BGR]}
    assert all("input" not in e for e in built.manifests["a14"]["files"] if e is not entry)


def test_onnx_file_carries_metadata_and_a_dynamic_batch(built):
    import onnx
    import onnxruntime as ort

    path = built.out / "onnx" / "model.onnx"
    graph = onnx.load(str(path))
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["featherface.arch"] == ARCH
    assert json.loads(metadata["featherface.input"]) == built.manifests["onnx"]["input"]
    assert json.loads(metadata["featherface.outputs"]) == built.manifests["onnx"]["outputs"]
    batch_dim = graph.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.HasField("dim_value")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = built.parity.inputs  # 3 photos in one call, then 2
    for batch in (inputs, inputs[1:]):
        results = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": batch})))
        bounds = built.manifests["onnx"]["files"][0]["parity"]["error_bounds"]
        for name in OUTPUT_NAMES:
            reference = built.parity.reference[name][len(inputs) - len(batch):]
            assert results[name].shape == (len(batch), ANCHORS, OUTPUT_WIDTHS[name])
            assert np.abs(results[name] - reference).max() <= bounds[name], name


def test_tflite_fp32_file_reproduces_the_golden_outputs(built):
    """An independent run of the shipped file (LiteRT, NHWC) on the bundle's golden inputs."""
    from featherface.sdk.runtimes import open_runtime

    bundle = built.out / "pi4"
    entry = next(e for e in built.manifests["pi4"]["files"] if e["file"] == "model_fp32.tflite")
    runtime = open_runtime(bundle / "model_fp32.tflite")
    assert runtime.input_layout == "NHWC"
    with np.load(bundle / "golden.npz") as golden:
        raw = runtime.run(np.ascontiguousarray(golden["input"].transpose(0, 2, 3, 1)))
        for name, tensor in entry["output_map"].items():
            assert np.abs(raw[tensor] - golden[name]).max() <= entry["parity"]["error_bounds"][name], name


def test_tflite_gathers_read_their_clamped_indices_without_onnx2tfs_guard(built):
    """gather_guards: no LESS is left in the pi4 files (onnx2tf's `i + (i < 0) * n`), every
    GATHER remains, and the files passed parity above."""
    from featherface.quantization.graph import read_graph

    for name in ("model_fp32.tflite", "model_fp16.tflite", "model_int8.tflite"):
        kinds = [op.type for op in read_graph(built.out / "pi4" / name).ops]
        assert kinds.count("GATHER") == 15 and "LESS" not in kinds, name  # 3 SSH modules x 5 DCNs


def test_int8_files_are_integer_and_say_how_they_were_made(built):
    from ai_edge_litert.interpreter import Interpreter

    entries = {e["file"]: e for e in built.manifests["pi4"]["files"]}
    record = entries["model_int8.tflite"]["quantization"]
    assert record["calibration"]["images"] == CALIBRATION_IMAGES
    assert "letterbox" in record["calibration"]["preprocessing"]
    assert record["equalization"].startswith("backbone") and record["weights"] == "per-channel"
    assert record["always_float"]["deformable sampling"] > 0  # v1-489k has three DCNs
    assert record["budget"].startswith("not checked") and record["kept_float"] == []
    assert record["sensitivity"] and record["sensitivity"][0]["added_nmse"] >= record["sensitivity"][-1]["added_nmse"]
    sizes = {name: entry["size_bytes"] for name, entry in entries.items()}
    assert sizes["model_int8.tflite"] < 0.5 * sizes["model_fp32.tflite"]
    assert sizes["model_dynamic_int8.tflite"] < 0.5 * sizes["model_fp32.tflite"]
    interpreter = Interpreter(model_path=str(built.out / "pi4" / "model_int8.tflite"))
    dtypes = {t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    assert "int8" in dtypes and "float32" in dtypes  # INT8 convolutions, float DCN sampling
    # The backbone's LeakyReLUs are INT8 too (max(x, 0.1 x)): no LEAKY_RELU left float.
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert "LEAKY_RELU" not in ops and {"MAXIMUM", "MUL"} <= ops
    # INT8 input and outputs, each output with its own scale; the SDK converts at the edge.
    assert record["input_output"]["input"]["dtype"] == interpreter.get_input_details()[0]["dtype"].__name__ == "int8"
    scales = {o["scale"] for o in record["input_output"]["outputs"]}
    assert len(scales) == 3


def test_core_ml_files_carry_metadata(built):
    ct = pytest.importorskip("coremltools")
    for name in FILES["a14"]:
        metadata = ct.models.MLModel(str(built.out / "a14" / name), skip_model_load=True).user_defined_metadata
        assert metadata["featherface.arch"] == ARCH, name
        assert json.loads(metadata["featherface.input"])["height"] == SIZE, name


def test_core_ml_bundle_is_refused_by_the_linux_sdk(built):
    import platform

    from featherface.sdk.detector import Detector
    from featherface.sdk.runtimes import RuntimeUnavailable

    if platform.system() == "Darwin":
        pytest.skip("Core ML runs on macOS")
    with pytest.raises(RuntimeUnavailable, match="onnx.*tflite|tflite.*onnx"):
        Detector.load(built.out / "a14")


# ---------------------------------------------------------------- failures leave no bundle


def scale_largest_weight(path: Path) -> None:
    """Multiply the largest float initializer of an ONNX file by 1.5: a file that loads and
    runs but computes something else (a converter bug)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path))
    floats = [t for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    target = max(floats, key=lambda t: int(np.prod(t.dims)))
    target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * np.float32(1.5), target.name))
    onnx.save(graph, str(path))


def assert_no_bundle(out: Path, target: str = "onnx") -> None:
    assert not (out / target).exists()
    assert hidden_leftovers(out) == []


def test_failed_parity_leaves_no_bundle_and_a_report(built, tmp_path, monkeypatch):
    from featherface.converters import build

    exporters = onnx_copy_export(built.out / "onnx" / "model.onnx", scale_largest_weight)
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    out = tmp_path / "dist"
    with pytest.raises(build.BuildError) as failure:
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    message = str(failure.value)
    assert "parity failed" in message and "model.onnx" in message and "max abs error" in message
    assert_no_bundle(out)
    report_path = out / "onnx.parity-failed.json"
    assert str(report_path) in message
    report = json.loads(report_path.read_text())
    assert report["model.onnx"]["status"] == "fail"
    assert any("max abs error" in reason for reason in report["model.onnx"]["reasons"])


def test_failed_parity_through_thresholds_leaves_no_bundle(built, tmp_path, monkeypatch):
    """The same file that passed fails when the bar is out of reach, and nothing is written."""
    from featherface.config import ParityThresholds
    from featherface.converters import build

    exporters = onnx_copy_export(built.out / "onnx" / "model.onnx")
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    monkeypatch.setitem(build.PARITY_THRESHOLDS, "fp32", ParityThresholds(abs_tolerance=0.0, min_recall=1.01, min_precision=1.01))
    out = tmp_path / "dist"
    with pytest.raises(build.BuildError, match="recall"):
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert_no_bundle(out)
    assert json.loads((out / "onnx.parity-failed.json").read_text())["model.onnx"]["status"] == "fail"


def test_swapped_conf_columns_fail_the_build(built, tmp_path, monkeypatch):
    """A wrong output mapping of the right shape (conf's background/face columns swapped)."""
    from featherface.converters import build
    from featherface.verify import files as verify_files

    real_map_outputs = verify_files.map_outputs

    def swapped(raw, anchors):
        mapping = real_map_outputs(raw, anchors)
        raw["conf_swapped"] = raw[mapping["conf"]][..., ::-1]
        return {**mapping, "conf": "conf_swapped"}

    exporters = onnx_copy_export(built.out / "onnx" / "model.onnx")
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    monkeypatch.setattr(verify_files, "map_outputs", swapped)
    out = tmp_path / "dist"
    with pytest.raises(build.BuildError, match="conf max abs error"):
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert_no_bundle(out)
    record = json.loads((out / "onnx.parity-failed.json").read_text())["model.onnx"]
    assert record["detections"]["robust_precision"] < 0.5


def test_swapped_loc_and_landmarks_fail_the_build(built, tmp_path, monkeypatch):
    from featherface.converters import build
    from featherface.verify import files as verify_files

    real_map_outputs = verify_files.map_outputs

    def swapped(raw, anchors):
        mapping = real_map_outputs(raw, anchors)
        return {**mapping, "loc": mapping["landmarks"], "landmarks": mapping["loc"]}

    exporters = onnx_copy_export(built.out / "onnx" / "model.onnx")
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    monkeypatch.setattr(verify_files, "map_outputs", swapped)
    out = tmp_path / "dist"
    with pytest.raises((build.BuildError, ValueError), match="loc|landmarks"):
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert_no_bundle(out)


def test_map_outputs_refuses_ambiguous_or_missing_outputs():
    from featherface.verify.files import OutputMapError, map_outputs

    good = {"a": np.zeros((1, 10, 4)), "b": np.zeros((1, 10, 2)), "c": np.zeros((1, 10, 10))}
    assert map_outputs(good, 10) == {"loc": "a", "conf": "b", "landmarks": "c"}
    with pytest.raises(OutputMapError, match="conf"):
        map_outputs({**good, "d": np.zeros((1, 10, 2))}, 10)
    with pytest.raises(OutputMapError, match="landmarks"):
        map_outputs({"a": good["a"], "b": good["b"]}, 10)
    with pytest.raises(OutputMapError):
        map_outputs(good, 11)  # anchors of another input size


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_broken_model_file_fails_cleanly_with_no_bundle(built, tmp_path, monkeypatch, damage):
    from featherface.converters import build

    def break_file(path: Path) -> None:
        if damage == "garbage":
            path.write_bytes(b"this is not an ONNX model\n" * 100)
        else:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])

    exporters = onnx_copy_export(built.out / "onnx" / "model.onnx", break_file)
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    out = tmp_path / "dist"
    with pytest.raises(build.BuildError, match=r"^model\.onnx does not run: "):  # check_file wraps the runtime's error
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert_no_bundle(out)


def test_failed_rebuild_keeps_the_good_bundle(built, tmp_path, monkeypatch):
    from featherface.converters import build
    from featherface.sdk.detector import Detector

    out = tmp_path / "dist"
    out.mkdir()
    shutil.copytree(built.out / "onnx", out / "onnx")
    before = {p.name: p.read_bytes() for p in (out / "onnx").iterdir()}
    good = built.out / "onnx" / "model.onnx"

    exporters = onnx_copy_export(good, scale_largest_weight)
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    with pytest.raises(build.BuildError, match="parity failed"):
        build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert {p.name: p.read_bytes() for p in (out / "onnx").iterdir()} == before
    assert hidden_leftovers(out) == []
    assert (out / "onnx.parity-failed.json").exists()
    assert Detector.load(out / "onnx").model_file == "model.onnx"

    # A good rebuild then replaces the bundle and clears the stale failure report.
    exporters = onnx_copy_export(good)
    monkeypatch.setattr(build, "exporters", lambda: exporters)  # the build's table of exporters, swapped
    manifest = build.build_bundle("onnx", built.model, ARCH, built.checkpoint, built.parity, SIZE, out, lambda _: None)
    assert json.loads((out / "onnx" / "manifest.json").read_text()) == manifest.to_json()
    assert not (out / "onnx.parity-failed.json").exists()
    assert hidden_leftovers(out) == []


def test_unknown_target_is_a_build_error(built, tmp_path):
    from featherface.converters import build

    with pytest.raises(build.BuildError, match="onnx, pi4, a14"):
        build.build_bundle("tflite", built.model, ARCH, built.checkpoint, built.parity, SIZE, tmp_path / "dist", lambda _: None)


# ---------------------------------------------------------------- one build per output directory


def test_second_build_into_the_same_out_fails_clearly(tmp_path):
    from featherface.converters.build import BuildError, output_lock

    out = tmp_path / "dist"
    with output_lock(out):
        with pytest.raises(BuildError, match="another build is writing to .*dist"):
            with output_lock(out):
                pass
        errors: list[BaseException] = []

        def other_build() -> None:
            try:
                with output_lock(out):
                    pass
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        thread = threading.Thread(target=other_build)
        thread.start()
        thread.join()
        assert len(errors) == 1 and isinstance(errors[0], BuildError)
    with output_lock(out):  # released on exit
        pass
    with output_lock(tmp_path / "other"):  # another directory is independent
        pass


def test_cli_build_fails_while_another_process_builds_there(built, tmp_path, capsys):
    from featherface import cli

    out = tmp_path / "dist"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from featherface.converters.build import output_lock\n"
         f"with output_lock(Path({str(out)!r})):\n    print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        status = cli.main(["build", "--target", "onnx", "--arch", ARCH, "--weights", str(built.checkpoint),
                           "--input-size", str(SIZE), "--images", str(built.images), "--out", str(out)])
    finally:
        holder.communicate("", timeout=60)
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("featherface: error: another build is writing to")
    assert not (out / "onnx").exists()


def test_a_comparison_file_that_fails_parity_is_left_out_with_its_reason(tmp_path):
    """Dynamic-range INT8 is built only to compare with: failing parity drops it (noted in the
    full-INT8 record); any other failing file still fails the build (test_failed_parity_leaves_no_bundle_and_a_report)."""
    from featherface.converters.build import ModelFile, _leave_out_failed_comparison_files
    from featherface.records import ParityRecord, QuantizationRecord

    def made(name: str, precision: str, status: str, quantization: QuantizationRecord | None = None) -> ModelFile:
        (tmp_path / name).write_bytes(b"model")
        return ModelFile(tmp_path / name, "tflite", precision, 0.0, record=ParityRecord(status, [f"{name} reason"]),
                         quantization=quantization)

    files = [made("fp32.tflite", "fp32", "pass"), made("dyn.tflite", "dynamic_int8", "fail"),
             made("int8.tflite", "int8", "pass", quantization=QuantizationRecord("a quantizer"))]
    kept = _leave_out_failed_comparison_files(files, lambda _: None)
    assert [f.path.name for f in kept] == ["fp32.tflite", "int8.tflite"]
    assert not (tmp_path / "dyn.tflite").exists()
    assert kept[1].quantization.details["comparison_files"] == {"dyn.tflite": {"left_out": "failed parity", "reasons": ["dyn.tflite reason"]}}
    failing_int8 = [made("int8.tflite", "int8", "fail", quantization=QuantizationRecord("a quantizer"))]
    assert _leave_out_failed_comparison_files(failing_int8, lambda _: None) == failing_int8
