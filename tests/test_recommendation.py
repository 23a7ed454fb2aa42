"""Which file to ship (issue 19): the bench words its ratios so they cannot be read the wrong
way round and names the fastest file that passed parity; the build report advises, per
bundle, the fastest file that passed parity, and compares the bundle's preferred file.

Pure functions over small hand-made records: no model is run."""
from __future__ import annotations

import pytest
from bench_records import bench_report, bench_result
from report_records import bundle_view, file_entry, manifest

from featherface.bench.records import BaselineRatio
from featherface.bench.report import fastest_lines, row
from featherface.converters.report import _summary_lines
from featherface.converters.report_golden import BundleView
from featherface.converters.report_table import ship_lines
from featherface.records import FileEntry, ManifestAP
from featherface.units import speed_words


@pytest.mark.parametrize("ratio, words", [
    (1.34, "1.34x slower"), (0.70, "1.43x faster"), (0.5, "2.00x faster"), (1.003, "same speed"), (1.0, "same speed"),
])
def test_speed_words_say_slower_or_faster(ratio, words):
    assert speed_words(ratio) == words


# ---------------------------------------------------------------- bench


def test_bench_ratio_column_says_slower_not_x():
    entry = bench_result("pi4/model_int8.tflite", 1, 27.6, 18.2, ratio=BaselineRatio("pi4/model_fp32.tflite", model=1.12, total=1.34))
    assert row(entry)[-1] == "1.34x slower (model 1.12x slower)"
    faster = bench_result("pi4/model_fp16.tflite", 1, 20.0, 14.0, ratio=BaselineRatio("pi4/model_fp32.tflite", model=1.0, total=0.8))
    assert row(faster)[-1] == "1.25x faster (model same speed)"


def test_bench_names_the_fastest_file_that_passed_parity_per_thread_count():
    report = bench_report([
        bench_result("pi4/model_int8.tflite", 1, 27.6, 18.2),
        bench_result("pi4/model_fp16.tflite", 1, 25.0, 16.2),
        bench_result("pi4/model_dynamic_int8.tflite", 1, 12.0, 8.0, status="fail"),  # fastest, but failed parity
        bench_result("pi4/model_int8.tflite", 4, 9.0, 6.0),
        bench_result("pi4/model_fp16.tflite", 4, 11.0, 7.0),
    ])
    lines = fastest_lines(report)
    assert len(lines) == 2
    assert lines[0].startswith("fastest at 1 thread that passed parity: pi4/model_fp16.tflite (detect p50 25.00 ms")
    assert lines[1].startswith("fastest at 4 threads that passed parity: pi4/model_int8.tflite")


def test_bench_says_when_no_file_passed_parity():
    assert fastest_lines(bench_report([bench_result("a.onnx", 1, 5.0, 4.0, status="fail")])) == [
        "fastest at 1 thread: none, no file passed parity"]


# ---------------------------------------------------------------- build report


def timed_file(name: str, precision: str, size_bytes: int, p50_ms: float | None, status: str = "pass",
               ap: tuple[float, float, float] | None = None) -> tuple[FileEntry, float | None]:
    """A file and its p50 measured here (None: not timed)."""
    accuracy = None if ap is None else ManifestAP(protocol="letterbox 640", easy=ap[0], medium=ap[1], hard=ap[2])
    return file_entry(name, precision, size_bytes, status, accuracy), p50_ms


def bundle(target: str, files: list[tuple[FileEntry, float | None]], preferred: str) -> BundleView:
    timed = {entry.file: p50_ms for entry, p50_ms in files if p50_ms is not None}
    return bundle_view(manifest([entry for entry, _ in files], target, preferred), timed)


def test_report_advises_the_fastest_passing_file_and_compares_the_preferred_one():
    pi4 = bundle("pi4", [
        timed_file("model_fp32.tflite", "fp32", 1_050_000, 16.3, ap=(0.817, 0.683, 0.263)),
        timed_file("model_fp16.tflite", "fp16", 600_000, 16.2, ap=(0.817, 0.683, 0.263)),
        timed_file("model_int8.tflite", "int8", 480_000, 21.9, ap=(0.807, 0.678, 0.261)),
        timed_file("model_dynamic_int8.tflite", "dynamic_int8", 380_000, 9.0, status="fail"),
    ], preferred="model_int8.tflite")
    [line] = ship_lines([pi4])
    assert line.startswith("pi4: ship `model_fp16.tflite` (16.2 ms, 0.60 MB, AP 81.7 / 68.3 / 26.3 %)")
    assert "the bundle's preferred `model_int8.tflite` is 1.35x slower" in line


def test_report_prefers_the_smaller_of_two_equally_fast_files():
    pi4 = bundle("pi4", [timed_file("model_fp32.tflite", "fp32", 1_050_000, 16.0),
                         timed_file("model_fp16.tflite", "fp16", 600_000, 16.5)], preferred="model_fp16.tflite")
    [line] = ship_lines([pi4])
    assert line.startswith("pi4: ship `model_fp16.tflite`") and "preferred" not in line


def test_report_without_timings_or_passing_files_says_so():
    a14 = bundle("a14", [timed_file("model_fp16.mlpackage", "fp16", 650_000, None)], preferred="model_fp16.mlpackage")
    onnx = bundle("onnx", [timed_file("model.onnx", "fp32", 1_000_000, 2.0, status="fail")], preferred="model.onnx")
    untimed, failed = ship_lines([a14, onnx])
    assert untimed.startswith("a14: `model_fp16.mlpackage` passed parity; none could be timed") and "featherface bench" in untimed
    assert failed == "onnx: no file passed parity: nothing to ship."


def test_report_summary_carries_the_advice_above_the_table():
    pi4 = bundle("pi4", [timed_file("model_fp32.tflite", "fp32", 1_050_000, 16.3)], preferred="model_fp32.tflite")
    lines = _summary_lines([pi4])
    advice = lines.index("**What to ship**")
    assert lines[advice + 2].startswith("- pi4: ship `model_fp32.tflite` (16.3 ms, 1.05 MB)")
    assert advice < next(i for i, line in enumerate(lines) if line.startswith("| target"))


def test_report_table_shows_plain_and_robust_recall_side_by_side():
    from dataclasses import replace

    from featherface.converters.report_table import display_row, file_row

    entry = file_entry("model_int8.tflite", "int8", 480_000)
    entry.parity.detections = replace(entry.parity.detections, recall=0.957, robust_recall=1.0)
    cells = display_row(file_row(manifest([entry], "pi4", preferred="model_int8.tflite"), entry, 18.2))
    assert cells["recall vs PyTorch (plain / robust)"] == "0.957 / 1.000"


def test_report_table_has_one_pytorch_row_per_network_in_order_of_first_appearance():
    from dataclasses import replace

    from featherface.converters.report_table import table_rows

    pi4 = manifest([file_entry("model_fp32.tflite")], "pi4")
    onnx = manifest([file_entry("model.onnx")], "onnx")
    other = manifest([file_entry("model.onnx")], "onnx")
    other.checkpoint = replace(other.checkpoint, name="retrained.pth", sha256="1" * 64)
    rows = table_rows([bundle_view(m) for m in (pi4, other, onnx)])
    assert [(r.status, r.file) for r in rows] == [
        ("reference", "v2_ultra.pth"), ("reference", "retrained.pth"),
        ("pass", "model_fp32.tflite"), ("pass", "model.onnx"), ("pass", "model.onnx")]


def test_the_build_prefers_the_fastest_file_or_a_smaller_one_as_fast():
    from featherface.choice import fastest

    sizes = {"model_fp32.tflite": 1_000_000, "model_fp16.tflite": 520_000, "model_int8.tflite": 380_000}
    assert fastest({"model_fp32.tflite": 10.0, "model_fp16.tflite": 10.2, "model_int8.tflite": 14.0}, sizes) == "model_fp16.tflite"
    assert fastest({"model_fp32.tflite": 10.0, "model_fp16.tflite": 11.0, "model_int8.tflite": 10.4}, sizes) == "model_int8.tflite"
    assert fastest({"model_fp32.tflite": 10.0, "model_fp16.tflite": 10.6, "model_int8.tflite": 12.0}, sizes) == "model_fp32.tflite"


def test_manifest_ap_gives_the_builds_rounded_difference_else_computes_it():
    """One rule for a file's AP against PyTorch's (the report's AP columns): the build's stored
    `delta_vs_torch` where present, else this AP minus the reference's, in points."""
    reference = ManifestAP(protocol="letterboxed 640", easy=0.90, medium=0.80, hard=0.50)
    computed = ManifestAP(status="measured", easy=0.891, medium=0.80, hard=None)
    assert computed.delta_points(reference) == {"easy": pytest.approx(-0.9), "medium": 0.0, "hard": None}
    stored = ManifestAP(status="measured", easy=0.891, medium=0.80, hard=0.49, delta_vs_torch={"easy": -0.9, "medium": 0.0, "hard": -1.0})
    assert stored.delta_points(None) == {"easy": -0.9, "medium": 0.0, "hard": -1.0}
    assert ManifestAP.from_json(stored.to_json(), "accuracy") == stored
    assert list(stored.to_json()) == ["status", "easy", "medium", "hard", "delta_vs_torch"]


def test_files_are_timed_in_turns_on_their_own_input_type(monkeypatch):
    """A machine that slows down half-way must not rank the file timed second as slower, and a
    full-INT8 file is timed on the INT8 tensor `frame_input` gives it on a device, not charged
    for a conversion from float in Python."""
    import numpy as np

    from featherface.converters import report_golden

    clock = {"now": 0.0, "calls": 0}
    order: list[tuple[str, np.dtype]] = []

    class FakeRuntime:
        def __init__(self, name: str, dtype) -> None:
            self.name, self.dtype = name, np.dtype(dtype)

        def quantize(self, x: np.ndarray) -> np.ndarray:
            return x.astype(self.dtype)

        def run(self, tensor: np.ndarray) -> None:  # every run takes 10 ms, then 30 ms once 20 runs have passed
            clock["calls"] += 1
            clock["now"] += 0.010 if clock["calls"] <= 20 else 0.030
            order.append((self.name, tensor.dtype))

    class FakeDetector:
        def __init__(self, runtime: FakeRuntime) -> None:
            self.runtime = runtime

        def runtime_batch(self, batch: np.ndarray) -> np.ndarray:
            return batch

    monkeypatch.setattr(report_golden.time, "perf_counter", lambda: clock["now"])
    detectors = {name: FakeDetector(FakeRuntime(name, dtype)) for name, dtype in (("a.tflite", np.float32), ("b.tflite", np.int8))}
    times = report_golden.model_p50_ms(detectors, np.zeros((1, 3, 4, 4), np.float32))
    assert times["a.tflite"] == times["b.tflite"]
    timed = order[2 * report_golden.LATENCY_WARMUP:]
    assert [name for name, _ in timed[:4]] == ["a.tflite", "b.tflite", "a.tflite", "b.tflite"]
    assert {dtype for name, dtype in order if name == "b.tflite"} == {np.dtype(np.int8)}
