"""The optional a14 files: 6-bit palettized weights (model_p6) and experimental INT8
activations (model_a8w8), built through the CLI at 64 px, and mil_eval's quantize /
dequantize ops against hand-computed values."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import require_shared
from featherface.config import PARITY_THRESHOLDS
from featherface.converters.mil_eval import OPS, load_mil_program

pytestmark = [
    # coremltools 9.0's torch frontend, once per op: noise that hides real warnings.
    pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning"),
]

SIZE = 64
# WIDER FACE val photos whose large face v2-ultra finds at 64 px (score 0.95), so that the
# parity bars judge a real detection rather than pass on empty images.
PHOTOS = (
    "13--Interview/13_Interview_Interview_2_People_Visible_13_155.jpg",
    "13--Interview/13_Interview_Interview_2_People_Visible_13_245.jpg",
    "13--Interview/13_Interview_Interview_2_People_Visible_13_327.jpg",
)


# --- mil_eval's activation quantization ops, by hand ---------------------------------------


def test_quantize_rounds_half_to_even_adds_the_zero_point_and_clips():
    x = np.array([-100.0, -0.25, 1.25, 1.75, 65.0, 70.0], np.float32)
    # x / 0.5 = [-200, -0.5, 2.5, 3.5, 130, 140] -> round half to even [-200, 0, 2, 4, 130, 140]
    # + zero point -3 -> [-203, -3, -1, 1, 127, 137] -> int8 clip:
    q = OPS["quantize"](input=x, scale=np.float32(0.5), zero_point=np.int8(-3), output_dtype="int8")
    assert q.dtype == np.int8
    np.testing.assert_array_equal(q, [-128, -3, -1, 1, 127, 127])


def test_quantize_per_channel_to_uint8():
    x = np.array([[[1.0, 3.0], [1.0, -300.0]]], np.float32)  # [1, 2 channels, 2]
    q = OPS["quantize"](input=x, scale=np.array([0.5, 2.0], np.float32), zero_point=np.array([0, 128], np.uint8),
                        output_dtype="uint8", axis=1)
    # channel 0: [1, 3] / 0.5 = [2, 6]; channel 1: [0.5, -150] -> [0, -150] + 128 = [128, -22] -> [128, 0]
    assert q.dtype == np.uint8
    np.testing.assert_array_equal(q, [[[2, 6], [128, 0]]])


def test_dequantize_subtracts_the_zero_point_then_scales():
    q = np.array([-128, -3, -1, 1, 127], np.int8)
    np.testing.assert_array_equal(OPS["dequantize"](input=q, scale=np.float32(0.5), zero_point=np.int8(-3)),
                                  [-62.5, 0.0, 1.0, 2.0, 65.0])
    per_channel = OPS["dequantize"](input=np.array([[[2, 6], [128, 0]]], np.uint8), scale=np.array([0.5, 2.0], np.float32),
                                    zero_point=np.array([0, 128], np.uint8), axis=1)
    np.testing.assert_array_equal(per_channel, [[[1.0, 3.0], [0.0, -256.0]]])
    # Without a zero point, and uint8 values above 127 stay positive (no int8 wrap-around).
    np.testing.assert_array_equal(OPS["dequantize"](input=np.array([200], np.uint8), scale=np.float32(0.25)), [50.0])


def test_quantize_agrees_with_coremltools_value_inference():
    pytest.importorskip("coremltools")
    from coremltools.optimize._utils import quantize_by_scale_and_zp

    x = np.random.default_rng(0).normal(0, 40, (2, 3, 5)).astype(np.float32)
    scale, zero_point = np.float32(0.37), np.int8(5)
    np.testing.assert_array_equal(
        OPS["quantize"](input=x, scale=scale, zero_point=zero_point, output_dtype="int8"),
        quantize_by_scale_and_zp(x, scale, zero_point, "int8"),
    )


# --- the CLI-built bundle ------------------------------------------------------------------


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    val = require_shared("data/widerface/WIDER_val/images")
    folder = tmp_path_factory.mktemp("photos")
    for relative in PHOTOS:
        shutil.copy(val / relative, folder / Path(relative).name)
    return folder


@pytest.fixture(scope="module")
def bundle(photos, tmp_path_factory) -> Path:
    """`featherface build --target a14 --palettize --coreml-a8w8` on v2-ultra's embedded
    weights at 64 px (activation ranges from WIDER_train, the default --calib)."""
    pytest.importorskip("coremltools")
    from featherface.cli import main

    require_shared("data/widerface/WIDER_train")
    out = tmp_path_factory.mktemp("a14")
    status = main(["build", "--target", "a14", "--arch", "v2-ultra", "--input-size", str(SIZE), "--images", str(photos),
                   "--out", str(out), "--palettize", "--coreml-a8w8", "--no-eval"])
    assert status == 0
    return out / "a14"


def _entries(bundle: Path) -> dict[str, dict]:
    return {entry["file"]: entry for entry in json.loads((bundle / "manifest.json").read_text())["files"]}


@pytest.mark.slow
@pytest.mark.shared
def test_cli_flags_add_p6_and_a8w8_to_the_manifest(bundle):
    from featherface.converters.coreml_export import A8W8_NOTE
    from featherface.sdk.bundle import read_manifest, verified_file

    manifest = read_manifest(bundle)
    entries = _entries(bundle)
    assert {name: entries[name]["precision"] for name in ("model_w8.mlpackage", "model_p6.mlpackage", "model_a8w8.mlpackage")} == {
        "model_w8.mlpackage": "w8", "model_p6.mlpackage": "p6", "model_a8w8.mlpackage": "a8w8"}
    for name in ("model_p6.mlpackage", "model_a8w8.mlpackage"):
        verified_file(bundle, manifest, name)  # present, sha256 as recorded
        assert entries[name]["parity"]["status"] == "pass"
    assert entries["model_a8w8.mlpackage"]["quantization"]["note"] == A8W8_NOTE
    assert "no speed" in A8W8_NOTE and "A14" in A8W8_NOTE
    assert entries["model_a8w8.mlpackage"]["quantization"]["calibration"]["images"] >= 1
    assert "6-bit" in entries["model_p6.mlpackage"]["quantization"]["weights"]


@pytest.mark.slow
@pytest.mark.shared
def test_palettized_weights_hold_at_most_64_values_per_tensor(bundle):
    _, fp16 = load_mil_program(bundle / "model_fp16.mlpackage")
    big_weights = [op for op in fp16.functions["main"].operations
                   if op.op_type == "const" and getattr(op.outputs[0].val, "size", 0) > 2048]
    _, program = load_mil_program(bundle / "model_p6.mlpackage")
    palettes = [op for op in program.functions["main"].operations if op.op_type == "constexpr_lut_to_dense"]
    assert big_weights and len(palettes) == len(big_weights)  # every weight over coremltools' threshold
    for op in palettes:
        ours = OPS[op.op_type](**{name: var.val for name, var in op.inputs.items()})
        np.testing.assert_array_equal(ours, op.materialized_val_inference())  # decoded as coremltools does
        # Counted in float32: numpy 2.3.5's np.unique over an unsorted float16 array returns
        # duplicates (72 "distinct" values from this 64-entry palette; 64 once sorted).
        assert ours.size > 2048 and len(np.unique(ours.astype(np.float32))) <= 2**6, op.name


@pytest.mark.slow
@pytest.mark.shared
def test_palettized_file_is_smaller_than_weight_int8(bundle):
    entries = _entries(bundle)
    assert entries["model_p6.mlpackage"]["size_bytes"] < entries["model_w8.mlpackage"]["size_bytes"]


@pytest.mark.slow
@pytest.mark.shared
def test_palettized_file_passes_its_bar_against_torch(bundle, photos):
    """Re-run here, not read from the manifest: mil_eval on the saved p6 program against
    PyTorch FP32 on the photos, judged by PARITY_THRESHOLDS["p6"] on a real face."""
    from featherface.converters.build import ModelFile, check_file, find_images, make_parity_set
    from featherface.model.registry import create_model, get_variant

    model = create_model("v2-ultra", get_variant("v2-ultra").find_default_weights())
    parity = make_parity_set(model, find_images(photos, len(PHOTOS)), SIZE)
    record = check_file(ModelFile(bundle / "model_p6.mlpackage", "coreml", "p6", 0.0), parity, SIZE)
    assert record.thresholds == PARITY_THRESHOLDS["p6"].__dict__
    assert record.detections.reference_faces >= 1
    assert record.status == "pass", record.reasons
    assert record.detections.mean_iou > 0.9


@pytest.mark.slow
@pytest.mark.shared
def test_a8w8_program_quantizes_activations_for_ios17(bundle):
    spec, program = load_mil_program(bundle / "model_a8w8.mlpackage")
    assert spec.specificationVersion >= 8  # iOS17: quantize / dequantize exist from there
    types = [op.op_type for op in program.functions["main"].operations]
    assert types.count("quantize") > 10 and types.count("dequantize") > 10
    assert "constexpr_affine_dequantize" in types  # the INT8 weights


def test_compression_flags_need_the_a14_target(tmp_path, capsys):
    from featherface.cli import main

    status = main(["build", "--target", "onnx", "--arch", "v2-ultra", "--out", str(tmp_path), "--palettize"])
    assert status == 2
    assert "--target a14 or all" in capsys.readouterr().err


# ---------------------------------------------------------------- coremltools' private calibration route


def test_coremltools_still_calibrates_through_the_function_we_replace():
    """The a8w8 file hands coremltools ranges measured by our evaluator by replacing one private
    function (converters.coreml_export.calibration_ranges_given). This fails when a coremltools
    upgrade renames it, changes its arguments or stops calling it from linear_quantize_activations."""
    import importlib
    import inspect

    from featherface.converters.coreml_export import CALIBRATION_STATS_FUNCTION, CALIBRATION_STATS_MODULE

    module = importlib.import_module(CALIBRATION_STATS_MODULE)
    function = getattr(module, CALIBRATION_STATS_FUNCTION)
    assert list(inspect.signature(function).parameters)[:2] == ["fpmodel", "sample_data"]
    calls = inspect.getsource(module.linear_quantize_activations)
    assert f"{CALIBRATION_STATS_FUNCTION}(" in calls, "linear_quantize_activations no longer calls it"


def test_calibration_ranges_given_replaces_the_function_only_inside_the_block():
    import importlib

    from featherface.converters.coreml_export import CALIBRATION_STATS_FUNCTION, CALIBRATION_STATS_MODULE, calibration_ranges_given

    module = importlib.import_module(CALIBRATION_STATS_MODULE)
    original = getattr(module, CALIBRATION_STATS_FUNCTION)
    ranges = {"conv_0": {"rmin": -1.0, "rmax": 2.0}}
    with pytest.raises(KeyError):
        with calibration_ranges_given(ranges):
            assert getattr(module, CALIBRATION_STATS_FUNCTION)("any model", [{"input": None}]) is ranges
            raise KeyError("an error inside the block")
    assert getattr(module, CALIBRATION_STATS_FUNCTION) is original
