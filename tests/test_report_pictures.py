"""The HTML report (issue 19): detection pictures where PyTorch finds faces come first (a first
picture without a face shows nothing), and a quantized file's settings are a table, not
key=value text. Built from hand-made records: no model is run."""
from __future__ import annotations

import numpy as np
from report_records import bundle_view, file_entry, manifest

from featherface.converters.report_golden import BundleView, GoldenRun
from featherface.converters.report_html import _detections, _quantization
from featherface.records import LayerError, QuantizationRecord, SearchStepRecord
from featherface.verify.parity import Detections


def detections(count: int) -> Detections:
    boxes = np.array([[10.0 + 20 * i, 10.0, 28.0 + 20 * i, 30.0] for i in range(count)]).reshape(count, 4)
    return Detections(boxes, np.full(count, 0.9), np.zeros((count, 10)))


def test_pictures_with_faces_come_before_pictures_without():
    golden = GoldenRun(names=["empty_street.jpg", "crowd.jpg", "one_face.jpg"],
                       images_rgb=[np.zeros((64, 64, 3), np.uint8)] * 3,
                       reference=[detections(0), detections(2), detections(1)], files={})
    page = _detections([BundleView("pi4", manifest([]), golden)], several=False)
    order = [page.index(f"<h3>{name}</h3>") for name in ("crowd.jpg", "one_face.jpg", "empty_street.jpg")]
    assert order == sorted(order)


def test_quantization_settings_are_a_table():
    entry = file_entry("model_int8.tflite", "int8", quantization=QuantizationRecord(
        "onnx2tf", kept_float=["stem"], sensitivity=[LayerError(0, "CONV_2D", "conv1", 0.02, 0.01)],
        details={"calibration_images": 200, "equalized": True}))
    page = _quantization([bundle_view(manifest([entry]))], several=False)
    assert '<table class="settings">' in page
    assert "<tr><th>calibration images</th><td>200</td></tr>" in page
    assert "<li>" not in page


def test_search_steps_show_ap_in_percent_and_losses_in_points():
    from featherface.converters.report_html import _records_table

    step = {"kept_float": ["stem"], "accuracy": {"easy": 0.8171, "medium": 0.6829, "hard": 0.2634, "size_bytes": 480_000},
            "losses": {"easy": 0.97, "medium": 0.88, "hard": 0.43}, "holds": True}
    table = _records_table([step])
    assert "<td>AP 81.7 / 68.3 / 26.3 %</td>" in table
    assert "<td>0.97 / 0.88 / 0.43 points</td>" in table
    assert "easy=0.8171" not in table


def test_markdown_search_steps_show_ap_in_percent_with_one_decimal():
    from featherface.converters.report import _quantization_lines

    step = SearchStepRecord(("stem",), {"easy": 0.8171, "medium": 0.6829, "hard": 0.2634},
                            {"easy": 0.97, "medium": 0.88, "hard": 0.43}, holds=True)
    entry = file_entry("model_int8.tflite", "int8", quantization=QuantizationRecord("onnx2tf", kept_float=["stem"], search=[step]))
    lines = _quantization_lines([manifest([entry])])
    assert "- search step, float: stem: AP 81.7 / 68.3 / 26.3 % (loss 0.97 / 0.88 / 0.43 points), within budget" in lines


def test_summary_says_what_unit_the_max_output_error_is_in():
    from featherface.converters.report import _summary_lines

    text = "\n".join(_summary_lines([bundle_view(manifest([]))]))
    assert "Max output error: the largest |file - PyTorch| over the raw outputs" in text and "not pixels" in text
