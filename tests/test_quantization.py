"""The INT8 pipeline's parts: calibration set, equalization, groups and the budget loop.

The pi4 bundle of test_build.py (v1-489k, real checkpoint) exercises them end to end.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import noise_image, require_shared
from featherface.quantization.accuracy import APBudget
from featherface.quantization.calibration import CalibrationError, calibration_set, select_images
from featherface.quantization.equalize import equalization_scales, equalize
from featherface.quantization.mixed_precision import BudgetNotMet, FloatGroup, search
from featherface.sdk.image_io import load_image
from featherface.sdk.preprocess import preprocess
from featherface.widerface import WiderAP


def _photos(folder, count, size=(40, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(noise_image(*size, seed=1 + i)).save(folder / f"img_{i:02d}.png")
    return folder


# ---------------------------------------------------------------- calibration


def test_calibration_uses_the_inference_preprocessing(tmp_path):
    photos = _photos(tmp_path / "calib", 3)
    batch = calibration_set(photos, 64, count=3, layout="NHWC")
    for i, path in enumerate(sorted(photos.iterdir())):
        expected, _ = preprocess(load_image(path), 64, layout="NHWC")
        np.testing.assert_array_equal(batch[i], expected[0])
    # BGR minus mean, zero padding: never a converter's own 0..1 RGB normalisation.
    assert batch.min() < -50 and batch[:, 50:].max() == 0


def test_calibration_selection_is_deterministic_and_spread(tmp_path):
    photos = _photos(tmp_path / "calib", 10)
    picks = select_images(photos, 4)
    assert picks == select_images(photos, 4)
    assert [p.name for p in picks] == ["img_00.png", "img_03.png", "img_06.png", "img_09.png"]


def test_a_widerface_root_calibrates_on_its_train_split(tmp_path):
    _photos(tmp_path / "WIDER_train" / "images" / "0--Parade", 2)
    _photos(tmp_path / "WIDER_val" / "images" / "0--Parade", 5)
    picks = select_images(tmp_path, 10)
    assert len(picks) == 2 and all("WIDER_train" in str(p) for p in picks)


def test_an_empty_calibration_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no images"):
        select_images(tmp_path / "empty", 10)


def test_a_folder_of_non_images_is_refused(tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "a.jpg").write_text("not a jpeg")
    (folder / "b.png").write_bytes(b"")
    with pytest.raises(CalibrationError, match="none of the 2 calibration files"):
        calibration_set(folder, 64)


def test_a_missing_calibration_folder_is_refused(tmp_path):
    with pytest.raises(CalibrationError, match="not found"):
        select_images(tmp_path / "nope", 10)


# ---------------------------------------------------------------- equalization


def test_equalization_keeps_the_outputs_and_evens_the_stem_ranges():
    from featherface.model.registry import get_variant

    torch.manual_seed(0)
    model = get_variant("retinaface-mnet025").build().eval()
    with torch.no_grad():  # uneven BN scales, as trained checkpoints have
        for module in model.body.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.rand_like(module.weight) * 3 + 0.01)
    images = np.random.default_rng(0).normal(0, 50, (2, 3, 64, 64)).astype(np.float32)
    equalized = equalize(model, images)
    with torch.no_grad():
        before = model(torch.from_numpy(images))
        after = equalized(torch.from_numpy(images))
    for a, b in zip(before, after):
        np.testing.assert_allclose(b.numpy(), a.numpy(), atol=2e-4, rtol=1e-4)

    def spread(net):  # max/min channel range of the first conv's output
        conv = net.body.stage1[0][0]
        with torch.no_grad():
            out = conv(torch.from_numpy(images))
            if not isinstance(net.body.stage1[0][1], torch.nn.Identity):
                out = net.body.stage1[0][1](out)
        ranges = out.amax(dim=(0, 2, 3)) - out.amin(dim=(0, 2, 3))
        return float(ranges.max() / ranges.min())

    assert spread(equalized) < 1.01 < spread(model)


def test_scales_toward_a_depthwise_conv_bring_every_channel_to_the_widest():
    depthwise = torch.nn.Conv2d(4, 4, 3, groups=4)
    np.testing.assert_allclose(equalization_scales(np.array([1.0, 2.0, 4.0, 0.0]), depthwise), [0.25, 0.5, 1.0, 1 / 64])


# ---------------------------------------------------------------- the budget loop

def _ap(easy: float, medium: float, hard: float) -> WiderAP:
    return WiderAP(easy, medium, hard, images=10, faces={"easy": 10, "medium": 20, "hard": 30})


REFERENCE = _ap(0.90, 0.85, 0.60)
GROUPS = [FloatGroup("stem", ("a", "b"), 3.0), FloatGroup("heads", ("c",), 2.0), FloatGroup("rest", ("d",), 1.0)]


def _evaluator(loss_by_float_count: dict[int, float], seen: list):
    def evaluate(scopes):
        seen.append(scopes)
        loss = loss_by_float_count[len(scopes)]
        return _ap(*(ap - loss for ap in REFERENCE.by_setting().values())), 1000 - 10 * len(scopes)
    return evaluate


def test_the_loop_stops_as_soon_as_the_budget_holds():
    seen: list = []
    result = search(GROUPS, _evaluator({0: 0.05, 2: 0.005, 3: 0.0}, seen), REFERENCE, APBudget())
    assert seen == [(), ("a", "b")]  # the kept groups' scopes
    assert result.final.kept_float == ["stem"] and result.final.holds
    assert result.final.losses == {"easy": 0.5, "medium": 0.5, "hard": 0.5}


def test_a_search_step_is_written_in_the_manifest_shape_the_report_reads():
    step = search(GROUPS, _evaluator({0: 0.05, 2: 0.005}, []), REFERENCE, APBudget()).final
    assert step.to_record().to_json() == {
        "kept_float": ["stem"], "losses": {"easy": 0.5, "medium": 0.5, "hard": 0.5}, "holds": True,
        "accuracy": {"easy": pytest.approx(0.895), "medium": pytest.approx(0.845), "hard": pytest.approx(0.595), "images": 10, "size_bytes": 980},
    }


def test_a_quantization_record_reads_back_what_it_wrote():
    from featherface.records import LayerError, QuantizationRecord

    step = search(GROUPS, _evaluator({0: 0.05, 2: 0.005}, []), REFERENCE, APBudget()).final.to_record()
    record = QuantizationRecord("ai-edge-quantizer", kept_float=["stem"], always_float={"dcn sampling": 12},
                                sensitivity=[LayerError(3, "CONV_2D", "stem/conv", 0.2, 0.1)], search=[step],
                                details={"budget": {"easy": 1.0}, "comparison_files": {}})
    assert QuantizationRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_quantization_record_keeps_fields_newer_than_this_code():
    """`bench --pick` rewrites the manifest on a device: what a newer build wrote must survive."""
    from featherface.records import QuantizationRecord

    written = {
        "tool": "ai-edge-quantizer", "kept_float": [], "calibration": {"images": 8},
        "sensitivity": [{"op_index": 1, "op": "CONV_2D", "tensor": "t", "nmse": 0.2, "added_nmse": 0.1, "per_channel": [0.1]}],
        "search": [{"kept_float": [], "accuracy": {"easy": 0.9, "medium": 0.8, "hard": 0.5, "images": 4, "size_bytes": 9, "fps": 3.0},
                    "losses": {"easy": 0.1, "medium": 0.2, "hard": 0.3}, "holds": True, "seconds": 1.5}],
        "a_newer_field": [1, 2],
    }
    assert QuantizationRecord.from_json(written).to_json() == written


def test_full_int8_within_budget_keeps_nothing_float():
    result = search(GROUPS, _evaluator({0: 0.0}, []), REFERENCE, APBudget())
    assert result.final.kept_float == [] and len(result.steps) == 1


def test_the_loop_fails_clearly_when_no_group_is_enough():
    with pytest.raises(BudgetNotMet, match="even with stem, heads, rest in float: lost easy 3.00") as caught:
        search(GROUPS, _evaluator({0: 0.05, 2: 0.04, 3: 0.035, 4: 0.03}, []), REFERENCE, APBudget())
    assert len(caught.value.steps) == 4


def test_budget_per_setting():
    budget = APBudget(1.0, 1.0, 2.0)
    assert budget.holds(REFERENCE, _ap(0.891, 0.841, 0.581))
    assert not budget.holds(REFERENCE, _ap(0.891, 0.839, 0.60))


def test_normalised_error_is_nmse_for_small_errors_and_bounded_near_zero():
    from featherface.quantization.sensitivity import normalised_error

    rng = np.random.default_rng(0)
    reference = rng.normal(size=1000)
    candidate = reference + rng.normal(scale=0.01, size=1000)
    plain = np.mean((reference - candidate) ** 2) / np.mean(reference**2)
    assert normalised_error(reference, candidate) == pytest.approx(plain, rel=0.01)
    assert normalised_error(np.zeros(100), np.full(100, 1e-3)) == pytest.approx(2.0)  # not 1e6
    assert normalised_error(reference, -reference) == pytest.approx(4.0)  # the bound
    assert normalised_error(np.zeros(10), np.zeros(10)) == 0.0


# ---------------------------------------------------------------- both quantizers, end to end


@pytest.mark.slow
@pytest.mark.shared
def test_the_onnx2tf_route_writes_a_dynamic_and_a_full_int8_file_that_run(tmp_path):
    """`--quantizer onnx2tf` end to end on RetinaFace at 160 px (no AP check): both files
    written, both run. (The default route is built by test_build.py's pi4 bundle.)"""
    from featherface.converters.export import ExportRequest, exporters
    from featherface.converters.manifest import embedded_metadata, new_manifest
    from featherface.model.registry import create_model
    from featherface.quantization.pipeline import BUDGET_NOT_CHECKED, Int8Options
    from featherface.sdk.runtimes import open_runtime

    model = create_model("retinaface-mnet025", require_shared("weights/retinaface_mnet025.pth"))
    size, stage = 160, tmp_path / "stage"
    stage.mkdir()
    photos = require_shared("data/widerface/WIDER_val/images/0--Parade")
    tool = "onnx2tf"
    options = Int8Options(calibration=photos, calibration_images=8, tool=tool)
    metadata = embedded_metadata(new_manifest("pi4", "retinaface-mnet025", None, size, "NHWC"))
    files = {f.precision: f for f in exporters()["pi4"](ExportRequest(model, stage, size, metadata, lambda _: None, int8=options))}
    assert sorted(files) == ["dynamic_int8", "fp16", "fp32", "int8"]
    record = files["int8"].quantization
    assert record.tool == tool and record.details["budget"] == BUDGET_NOT_CHECKED
    image = preprocess(load_image(sorted(photos.iterdir())[0]), size, layout="NHWC")[0]
    for precision in ("dynamic_int8", "int8"):
        outputs = open_runtime(files[precision].path).run(np.ascontiguousarray(image, dtype=np.float32))
        assert sorted(o.shape[-1] for o in outputs.values()) == [2, 4, 10]
        assert all(np.isfinite(o).all() for o in outputs.values())


def test_an_int8_file_litert_cannot_load_is_refused_without_crashing_the_build(tmp_path):
    """The onnx2tf route opens its file in a child process first (v2-ultra's aborts LiteRT)."""
    from featherface.converters.tflite_export import ConversionError
    from featherface.quantization.onnx2tf_int8 import refuse_unloadable

    broken = tmp_path / "model.tflite"
    broken.write_bytes(b"TFL3" + bytes(200))
    with pytest.raises(ConversionError, match="does not load in LiteRT"):
        refuse_unloadable(broken)


def test_leaky_relu_as_max_is_the_same_function_bit_for_bit():
    from featherface.model.registry import get_variant
    from featherface.quantization.activations import MaxLeakyReLU, quantizable_activations

    x = torch.randn(4, 8, 16, 16, generator=torch.Generator().manual_seed(0)) * 50
    assert torch.equal(MaxLeakyReLU(0.1)(x), torch.nn.functional.leaky_relu(x, 0.1))
    torch.manual_seed(1)
    model = get_variant("retinaface-mnet025").build().eval()
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 50
    with torch.no_grad():
        before = model(image)
        rewritten = quantizable_activations(model)
        after = rewritten(image)
    assert not any(isinstance(m, torch.nn.LeakyReLU) for m in rewritten.modules())
    assert sum(isinstance(m, MaxLeakyReLU) for m in rewritten.modules()) == 38
    for a, b in zip(before, after):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="slope in"):
        MaxLeakyReLU(1.5)
