"""The HTML parity report: self-contained, a table row per file, plots when matplotlib is
there (a note when not), optional accuracy/latency/quantization shown or "not measured",
differences to PyTorch marked in the pictures, and `featherface report` errors in one line."""
from __future__ import annotations

import copy
import html
import importlib.util
import json
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from report_records import bundle_view

from conftest import noise_image
from featherface.cli import main
from featherface.converters import report_images as images
from featherface.converters import report_plots
from featherface.converters.report import write_report
from featherface.converters.report_golden import BundleView
from featherface.converters.report_html import render
from featherface.records import LayerError, Manifest, ManifestAP, QuantizationRecord
from featherface.verify.parity import Detections

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG = "data:image/png;base64,"


@pytest.fixture
def bundle(tiny_onnx_bundle, tmp_path) -> Path:
    """A private copy: the report rewrites the bundle's parity files."""
    return Path(shutil.copytree(tiny_onnx_bundle, tmp_path / "dist" / "onnx"))


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _typed_manifest(bundle: Path) -> Manifest:
    return Manifest.from_json(_manifest(bundle))


def _external_references(page: str) -> list[str]:
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.IGNORECASE)
    links += re.findall(r"url\(([^)]*)\)", page) + re.findall(r"@import", page)
    return [link for link in links if not link.startswith("data:")]


def _curves(level: float) -> dict:
    recall = np.linspace(0, level, 50).round(4).tolist()
    return {s: {"recall": recall, "precision": [1.0] * 25 + [0.8] * 25} for s in ("easy", "medium", "hard")}


def _with_measurements(manifest: Manifest) -> Manifest:
    """The optional fields the build adds when it measures AP and INT8 sensitivity."""
    manifest = copy.deepcopy(manifest)
    manifest.reference_accuracy = ManifestAP(protocol="letterboxed 640", easy=0.82, medium=0.70, hard=0.30, curves=_curves(0.9))
    entry = manifest.files[0]
    entry.accuracy = ManifestAP(status="measured", protocol="letterboxed 640", easy=0.817, medium=0.69, hard=0.29,
                                delta_vs_torch={"easy": -0.3, "medium": -1.0, "hard": -1.0}, curves=_curves(0.85))
    quantized = replace(entry, file="model_int8.tflite", format="tflite", precision="int8",
                        accuracy=ManifestAP(status="not measured", reason="no WIDER FACE data here"),
                        quantization=QuantizationRecord(
                            "onnx2tf", kept_float=["head_conv"],
                            sensitivity=[LayerError(7, "CONV_2D", f"layer_{i}", 0.5 / (i + 1), 0.1) for i in range(25)],
                            details={"weights": "per-channel", "calibration": {"images": 200}}))
    unmeasured = replace(entry, file="model_w8.mlpackage", format="coreml", precision="w8", accuracy=None)
    manifest.files += [quantized, unmeasured]
    return manifest


def test_bundle_report_is_self_contained_with_a_row_per_file(bundle, capsys):
    assert main(["report", str(bundle)]) == 0
    assert capsys.readouterr().out.split() == [str(bundle / n) for n in ("parity.md", "parity.json", "parity.html")]
    page = (bundle / "parity.html").read_text()
    assert _external_references(page) == []
    assert "<script" not in page
    for entry in _manifest(bundle)["files"]:
        assert re.search(rf"<td>{re.escape(entry['file'])}</td>", page)
    assert '<tr class="reference">' in page  # the PyTorch FP32 row
    assert "not measured" in page  # the tiny bundle has no AP
    latency = re.search(r"<td>model.onnx</td>.*?<td class=\"num\">([\d.]+) ms</td>", page, flags=re.S)
    assert latency and float(latency.group(1)) > 0  # measured here, one thread
    assert re.search(r"\| [\d.]+ ms \| pass", (bundle / "parity.md").read_text())
    assert ("data:image/jpeg;base64," in page) and ((PNG in page) == HAS_MATPLOTLIB)
    assert "## Summary" in (bundle / "parity.md").read_text()


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_accuracy_latency_and_quantization_render_when_present(bundle):
    page = render("report", [bundle_view(_with_measurements(_typed_manifest(bundle)), {"model.onnx": 3.25})])
    assert page.count(PNG) == 3  # a precision-recall figure per setting (no golden images: no histogram)
    assert "81.7 (-0.30)" in page and "69.0 (-1.00)" in page  # AP in percent, delta in points
    assert "82.0" in page  # PyTorch's AP in its own row
    assert "3.2 ms" in page
    assert "AP not measured for onnx/model_int8.tflite: no WIDER FACE data here" in page
    assert "letterboxed 640" in page
    assert "layer_0" in page and "layer_19" in page and "layer_20" not in page  # the 20 most sensitive
    assert "5 more not shown" in page and "head_conv" in page
    w8 = page[page.index("model_w8.mlpackage (w8)"):]
    assert "per-layer sensitivity not measured" in w8[:300]
    assert _external_references(page) == []


def test_without_matplotlib_the_report_renders_with_a_note(bundle, monkeypatch):
    from featherface.converters.report_golden import run_golden

    manifest = _with_measurements(_typed_manifest(bundle))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    page = render("report", [BundleView("onnx", manifest, run_golden(bundle, _typed_manifest(bundle)))])
    assert html.escape(report_plots.MISSING) in page
    assert PNG not in page
    assert "data:image/jpeg;base64," in page  # detection pictures need only Pillow
    assert "81.7 (-0.30)" in page


@pytest.mark.parametrize("score, top_k", [(0.0, 7), (1.0, 0)])
def test_the_golden_rerun_decodes_with_the_bundles_own_thresholds(score, top_k, bundle):
    """The report shows what the SDK would detect with this bundle: its manifest's score
    threshold and top-k, not the build's defaults."""
    from featherface.converters.report_golden import run_golden

    data = _manifest(bundle)
    data["thresholds"].update(score=score, top_k=top_k)
    (bundle / "manifest.json").write_text(json.dumps(data))
    golden = run_golden(bundle, _typed_manifest(bundle))
    counts = [len(d.scores) for d in golden.reference] + [len(d.scores) for run in golden.files.values() for d in run.detections]
    assert counts == [7] * len(counts) if score == 0.0 else counts == [0] * len(counts)


def test_a_directory_of_bundles_gets_one_combined_report(bundle):
    shutil.copytree(bundle, bundle.parent / "other")
    written = write_report(bundle.parent)
    assert [p.name for p in written] == ["report.md", "report.json", "report.html"]
    page = (bundle.parent / "report.html").read_text()
    assert page.count("<h2>Summary</h2>") == 1
    assert page.count('<tr class="reference">') == 1  # both bundles come from the same network
    assert page.count('<tr class="file">') == 2
    assert "onnx/model.onnx" in page and "other/model.onnx" in page
    summary = json.loads((bundle.parent / "report.json").read_text())["summary"]
    assert [r["status"] for r in summary] == ["reference", "pass", "pass"]
    assert [r["latency_p50_ms"] is not None for r in summary] == [False, True, True]
    assert set(summary[1]) == {"target", "format", "precision", "file", "size_bytes", "accuracy", "robust_recall", "recall",
                               "max_abs_error", "error_bound", "latency_p50_ms", "status", "thresholds", "reasons"}
    assert "| onnx | onnx | fp32 | model.onnx |" in (bundle.parent / "report.md").read_text()


def test_differences_to_pytorch_are_marked_by_colour():
    image = np.full((100, 200, 3), 255, np.uint8)
    boxes = np.array([[10, 10, 40, 40], [100, 10, 130, 40], [150, 50, 190, 90]], np.float32)

    def dets(rows: list[int]) -> Detections:
        return Detections(boxes[rows], np.full(len(rows), 0.9, np.float32), np.zeros((len(rows), 10), np.float32))

    reference, candidate = dets([0, 1]), dets([0, 2])  # face 1 lost, face 2 extra
    diff = images.difference(reference, candidate)
    assert (diff.matched, diff.only_reference, diff.only_file) == ([0], [1], [1])
    panel = np.asarray(images.file_panel(image, reference, candidate, diff))
    scale = images.PANEL_WIDTH / 200

    def edge(box) -> tuple[int, ...]:
        return tuple(panel[round(box[1] * scale), round((box[0] + box[2]) / 2 * scale)])

    assert edge(boxes[0]) == images.MATCHED
    assert edge(boxes[1]) == images.ONLY_REFERENCE
    assert edge(boxes[2]) == images.ONLY_FILE


# A manifest the SDK could run, with what the build measured missing or mistyped.
DAMAGED_RECORDS = {
    "no-parity": lambda entry: entry.pop("parity"),
    "sensitivity-without-tensor": lambda entry: entry.update(quantization={
        "tool": "t", "sensitivity": [{"op_index": 1, "op": "CONV_2D", "nmse": 0.1, "added_nmse": 0.1}]}),
    "search-step-without-hard": lambda entry: entry.update(quantization={"tool": "t", "search": [
        {"kept_float": [], "accuracy": {"easy": 0.9, "medium": 0.8}, "losses": {"easy": 0, "medium": 0, "hard": 0}, "holds": True}]}),
    "search-step-size-not-a-number": lambda entry: entry.update(quantization={"tool": "t", "search": [
        {"kept_float": [], "accuracy": {"easy": 0.9, "medium": 0.8, "hard": 0.5, "size_bytes": "big"},
         "losses": {"easy": 0, "medium": 0, "hard": 0}, "holds": True}]}),
}


@pytest.mark.parametrize("problem", ["missing", "empty", "bad-manifest", *DAMAGED_RECORDS])
def test_report_of_a_bad_directory_is_one_line_and_status_2(problem, bundle, tmp_path, capsys):
    target = tmp_path / "bad"
    if problem in DAMAGED_RECORDS:
        shutil.copytree(bundle, target)
        manifest = json.loads((target / "manifest.json").read_text())
        DAMAGED_RECORDS[problem](manifest["files"][-1])
        (target / "manifest.json").write_text(json.dumps(manifest))
    elif problem != "missing":
        target.mkdir()
    if problem == "bad-manifest":
        (target / "manifest.json").write_text("{not json")
    assert main(["report", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"featherface: error: {target}")


def _parity_files(bundle: Path) -> dict[str, bytes]:
    return {name: (bundle / name).read_bytes() for name in ("parity.md", "parity.json", "parity.html")}


def test_report_refuses_a_model_file_changed_after_the_build(bundle, capsys):
    before = _parity_files(bundle)
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-100] ^= 0xFF  # the manifest's sha256 still names the built file
    model.write_bytes(bytes(data))
    assert main(["report", str(bundle)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "sha256 differs" in err
    assert _parity_files(bundle) == before


def test_a_report_that_fails_to_render_leaves_the_old_files_whole(bundle, monkeypatch):
    from featherface.converters import report_html

    for name in ("parity.md", "parity.json", "parity.html"):
        (bundle / name).write_text(f"the old {name}")  # a rewrite of any one would show
    before = _parity_files(bundle)
    monkeypatch.setattr(report_html, "render", lambda *args: (_ for _ in ()).throw(ValueError("cannot render")))
    with pytest.raises(ValueError, match="cannot render"):
        write_report(bundle)
    assert _parity_files(bundle) == before


def test_build_of_every_target_writes_one_combined_report(tmp_path, capsys):
    """`make build` is `build --target all`: the report over its bundles lands in --out. (128 px:
    at 64 px onnx2tf mis-converts the 2x2 stride-32 maps, which the parity check catches.)"""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(noise_image(48, 80, seed=i)).save(images / f"{i}.png")
    out = tmp_path / "dist"
    status = main(["build", "--target", "all", "--arch", "v2-ultra", "--input-size", "128", "--images", str(images),
                   "--no-int8", "--no-eval", "--out", str(out)])
    assert status == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["bundles"] == ["onnx", "pi4", "a14"]
    files = {(r["target"], r["file"]) for r in report["summary"] if r["target"]}
    assert files == {(t, f["file"]) for t in ("onnx", "pi4", "a14") for f in _manifest(out / t)["files"]}
    assert (out / "report.html").is_file() and (out / "report.md").is_file()
