"""`featherface.bench` (device_bench/): statistics, the interleaved schedule, on-device parity,
the report's JSON contract, `python -m featherface.bench`, clean errors, no torch or
tensorflow in the bench's process, and the memory soak (a few frames here). The bundles are
tiny (v2-ultra, random weights, 64 px)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bench_records import bench_report, bench_result

from conftest import noise_image, run_cli
from featherface.bench import cli, runner
from featherface.bench.device import cpu_model
from featherface.bench.export_golden import export_golden
from featherface.bench.parity import device_parity
from featherface.bench.records import BenchReport, BenchResult
from featherface.bench.stats import interleaved_schedule, paired_ratio, percentile, summarize, throughput
from featherface.bench.targets import BenchError, Opened, load_golden, pick_baseline, resolve_targets
from featherface.paths import REPO_ROOT
from featherface.records import ParityRecord
from featherface.sdk.bundle import read_manifest, sha256_of
from featherface.sdk.detector import Detector

CONTRACT_KEYS = {"model_ms", "total_ms", "throughput", "peak_rss_mb", "load_ms", "parity", "threads", "file", "label"}
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "min", "max"}
FAST = ["--runs", "3", "--warmup", "1", "--threads", "1"]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def bundle(tiny_onnx_bundle) -> Path:
    return tiny_onnx_bundle


@pytest.fixture(scope="module")
def corrupted(bundle, tmp_path_factory) -> Path:
    """A copy of the bundle whose golden PyTorch outputs are wrong, its manifest updated to
    match (so the file verifies and only parity can catch it)."""
    copy = tmp_path_factory.mktemp("corrupted") / "onnx"
    shutil.copytree(bundle, copy)
    golden = copy / "golden.npz"
    with np.load(golden) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["loc"] = arrays["loc"] * 3.0 + 0.5
    golden.unlink()
    np.savez_compressed(golden, **arrays)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["golden"]["sha256"] = sha256_of(golden)
    (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return copy


def run_module(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "featherface.bench", *argv], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


# ---------------------------------------------------------------- pure functions


def test_percentiles_by_hand():
    samples = [7, 1, 10, 3, 5, 2, 9, 4, 8, 6]  # 1..10, shuffled
    # rank = q/100 x (n - 1): p50 -> 4.5 (between 5 and 6), p90 -> 8.1, p99 -> 8.91
    assert percentile(samples, 50) == pytest.approx(5.5)
    assert percentile(samples, 90) == pytest.approx(9.1)
    assert percentile(samples, 99) == pytest.approx(9.91)
    assert percentile(samples, 0) == 1 and percentile(samples, 100) == 10
    assert percentile([10.0, 20.0], 90) == pytest.approx(19.0)
    assert percentile([4.2], 99) == 4.2
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_throughput_and_paired_ratio():
    summary = summarize([4.0, 1.0, 2.0, 3.0])
    assert summary == pytest.approx({"min": 1.0, "p50": 2.5, "p90": 3.7, "p99": 3.97, "mean": 2.5, "max": 4.0, "n": 4})
    assert throughput(20.0) == pytest.approx(50.0)
    # Per-round ratios 2, 2, 3 (a burst in round 3 hit only one file): median 2.
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 2.0, 3.0]) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_schedule_interleaves_files_and_marks_warmup_untimed():
    steps = interleaved_schedule(2, warmup=1, runs=2, kinds=("run",))
    assert [s.target for s in steps] == [0, 1, 0, 1, 0, 1]  # A B | A B A B
    assert [s.timed for s in steps] == [False, False, True, True, True, True]
    steps = interleaved_schedule(2, warmup=2, runs=3)
    assert [(s.target, s.kind) for s in steps[:4]] == [(0, "model"), (1, "model"), (0, "total"), (1, "total")]
    timed = [s for s in steps if s.timed]
    assert len(steps) - len(timed) == 2 * 2 * 2  # warm-up rounds x kinds x files
    for target in (0, 1):
        for kind in ("model", "total"):
            assert [s.round for s in timed if (s.target, s.kind) == (target, kind)] == [0, 1, 2]


def test_run_group_times_files_in_turn_and_records_no_warmup(monkeypatch):
    calls: list[tuple[str, str]] = []

    class FakeRuntime:
        input_layout = "NCHW"

        def __init__(self, name):
            self.name = name

        def run(self, batch):
            calls.append((self.name, "model"))

    class FakeDetector:
        def __init__(self, name):
            self.name, self.runtime = name, FakeRuntime(name)

        def frame_input(self, frame, bgr=False):
            return np.zeros((1, 3, 4, 4), np.float32), None

        def run_input(self, tensor):
            calls.append((self.name, "total"))
            return {}

        def decode(self, outputs, index, letterbox, thresholds=None):
            return []

        detect_timed = Detector.detect_timed  # the stages above, timed as the real detector times them

        def close(self):
            pass

    monkeypatch.setattr(runner, "open_target", lambda target, threads: Opened(target, FakeDetector(target.label), threads, 0.0, 0.0))
    monkeypatch.setattr(runner, "device_parity", lambda detector, golden, entry: ParityRecord("pass", []))
    targets = [SimpleNamespace(label=name, is_coreml=False, golden=None, entry={}) for name in "AB"]
    measured = runner.run_group(targets, 1, np.zeros((8, 8, 3), np.uint8), warmup=2, runs=3, progress=lambda _: None)
    one_round = [("A", "model"), ("B", "model"), ("A", "total"), ("B", "total")]
    assert calls == [("A", "model"), ("B", "model")] + one_round * (2 + 3)  # first runs at load, then rounds
    assert [len(m.model) for m in measured] == [3, 3] and [len(m.total) for m in measured] == [3, 3]
    assert [len(m.pre) for m in measured] == [3, 3] and [len(m.post) for m in measured] == [3, 3]
    assert all(p <= t for m in measured for p, t in zip(m.pre, m.total))  # stages of the same detect runs


def test_threads_capped_at_the_device_cores(monkeypatch):
    import featherface.bench.device as device

    monkeypatch.setattr(device, "usable_cores", lambda: 2)
    notes: list[str] = []
    assert cli.effective_threads(None, notes) == [1, 2] and "4" in notes[0]
    assert cli.effective_threads([8], []) == [2]


def test_cpu_model_of_a_raspberry_pi_cpuinfo():
    cpuinfo = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
    assert cpu_model(cpuinfo) == "Cortex-A72 (Raspberry Pi 4 Model B Rev 1.4)"
    assert cpu_model("model name\t: Intel(R) Xeon(R)\n") == "Intel(R) Xeon(R)"


# ---------------------------------------------------------------- parity


def test_parity_passes_on_the_build_and_fails_on_corrupted_golden_outputs(bundle, corrupted):
    for path, expected in ((bundle, "pass"), (corrupted, "fail")):
        manifest = read_manifest(path)
        detector = Detector.load(path, num_threads=1)
        result = device_parity(detector, load_golden(path, manifest), manifest.files[0])
        assert result.status == expected, result.reasons
        assert set(result.tensor) == {"loc", "conf", "landmarks"} and result.detections.robust_recall <= 1.0
    assert any("loc max abs error" in reason for reason in result.reasons)


def test_a_parity_failure_is_reported_as_failure(bundle, corrupted, capsys):
    status, out, err = run_cli([str(bundle), str(corrupted), *FAST, "--json"], capsys, main=cli.main)
    report = json.loads(out)
    assert status == 1  # the report is still printed
    by_label = {r["label"]: r for r in report["results"]}
    failed = next(r for label, r in by_label.items() if label.startswith(corrupted.parent.name))
    passed = next(r for label, r in by_label.items() if label.startswith(bundle.parent.name))
    assert failed["parity"]["status"] == "fail" and failed["parity"]["reasons"]
    assert passed["parity"]["status"] == "pass" and passed["parity"]["reasons"] == []
    assert report["parity"] == "fail" and report["parity_failures"] == [failed["label"] + " @1t"]


# ---------------------------------------------------------------- the report and the command


def test_report_json_has_the_contract_keys_and_files_are_written(bundle, tmp_path, capsys):
    second = tmp_path / "other" / "onnx"  # same directory name: labels must still differ
    shutil.copytree(bundle, second)
    out_dir = tmp_path / "report"
    status, out, err = run_cli(
        [str(bundle), str(second), *FAST, "--json", "--out", str(out_dir), "--baseline", "other/onnx/model.onnx"], capsys, main=cli.main
    )
    assert status == 0, err
    report = json.loads(out)
    assert {"device", "settings", "results", "notes"} <= set(report)
    assert {"cpu", "cores", "os", "python", "runtimes", "cpu_governor"} <= set(report["device"])
    assert report["settings"]["baseline"] == "other/onnx/model.onnx"
    labels = [r["label"] for r in report["results"]]
    assert len(set(labels)) == 2 and "other/onnx/model.onnx" in labels
    for result in report["results"]:
        assert CONTRACT_KEYS <= set(result)
        assert result["threads"] == 1
        for key in ("model_ms", "total_ms"):
            assert LATENCY_KEYS <= set(result[key]) and result[key]["n"] == 3
            assert result[key]["min"] <= result[key]["p50"] <= result[key]["p90"] <= result[key]["p99"] <= result[key]["max"]
        assert result["throughput"] == pytest.approx(1000 / result["total_ms"]["mean"])
        assert result["peak_rss_mb"] > 0 and result["load_ms"] > 0
        assert result["parity"]["status"] == "pass"
        assert result["ratio_to_baseline"]["baseline"] == "other/onnx/model.onnx"
    assert json.loads((out_dir / "bench.json").read_text())["results"][0]["label"] == labels[0]
    assert "## Device" in (out_dir / "bench.md").read_text()


def test_a_saved_report_reads_back_as_records_and_writes_out_the_same_json(bundle, capsys):
    status, out, _ = run_cli([str(bundle), *FAST, "--json"], capsys, main=cli.main)
    saved = json.loads(out)
    report = BenchReport.from_json(saved)
    assert status == 0 and report.results[0].total_ms.n == 3 and report.settings.frame.width == saved["settings"]["frame"]["width"]
    assert json.dumps(report.to_json(), indent=2) == json.dumps(saved, indent=2)  # same keys, order and values
    with pytest.raises(ValueError, match="missing or unexpected field"):
        BenchReport.from_json({**saved, "results": [{**saved["results"][0], "total_ms": {"p50": 1.0}}]})
    assert report.device.line().startswith(f"{saved['device']['cpu']} ({saved['device']['machine']}), ")
    with pytest.raises(ValueError, match="missing or unexpected field"):
        BenchReport.from_json({**saved, "device": {key: v for key, v in saved["device"].items() if key != "usable_cores"}})


def test_baseline_names(bundle, tmp_path):
    second = tmp_path / "b" / "onnx"
    shutil.copytree(bundle, second)
    targets = resolve_targets([str(bundle), str(second / "model.onnx")], [])
    assert pick_baseline(targets, None) is targets[0]
    assert pick_baseline(targets, "b/onnx/model.onnx") is targets[1]
    assert pick_baseline(targets, "v2-ultra") is targets[0]  # an arch: first in argument order
    with pytest.raises(BenchError, match="matches none"):
        pick_baseline(targets, "pi4/model_fp16.tflite")


@pytest.mark.skipif(sys.platform == "darwin", reason="Core ML runs on macOS: nothing is skipped there")
def test_mlpackage_skipped_off_macos_with_a_note(bundle, tmp_path):
    copy = tmp_path / "a14"
    shutil.copytree(bundle, copy)
    (copy / "model_fp16.mlpackage").mkdir()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"].append({**manifest["files"][0], "file": "model_fp16.mlpackage", "format": "coreml", "precision": "fp16"})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    notes: list[str] = []
    targets = resolve_targets([str(copy)], notes)
    assert [t.file for t in targets] == ["model.onnx"]
    assert len(notes) == 1 and "model_fp16.mlpackage" in notes[0] and "macOS" in notes[0]
    with pytest.raises(BenchError, match="cannot run here"):
        resolve_targets([str(copy / "model_fp16.mlpackage")], [])


def test_python_m_featherface_bench_runs_in_a_subprocess(bundle):
    result = run_module([str(bundle), *FAST, "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert CONTRACT_KEYS <= set(report["results"][0])
    assert report["results"][0]["memory_scope"] == "isolated"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("case", ["missing", "not_a_bundle", "tampered_model", "tampered_golden"])
def test_bad_input_exits_2_with_one_line(case, bundle, tmp_path):
    if case == "missing":
        argument = tmp_path / "nowhere"
    elif case == "not_a_bundle":
        argument = tmp_path / "empty"
        argument.mkdir()
    else:
        argument = tmp_path / "onnx"
        shutil.copytree(bundle, argument)
        victim = argument / ("model.onnx" if case == "tampered_model" else "golden.npz")
        victim.write_bytes(victim.read_bytes()[:-10])
    result = run_module([str(argument), *FAST])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("featherface bench: error:"), result.stderr
    assert result.stdout == ""


def test_bench_process_imports_neither_torch_nor_tensorflow(bundle):
    probe = (
        "import sys, io, contextlib\n"
        "import featherface.bench, featherface.bench.cli, featherface.bench.runner, featherface.bench.report\n"
        "import featherface.bench.export_golden, featherface.bench.memprobe, featherface.bench.coreml\n"
        "from featherface.bench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    status = main([{str(bundle)!r}, '--runs', '1', '--warmup', '0', '--threads', '1', '--json'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'tensorflow', 'tf_keras', 'keras', 'onnx2tf', 'coremltools'})\n"
        "print(status, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_export_golden_writes_raw_float32_and_an_index(bundle, tmp_path):
    index_path = export_golden(bundle, tmp_path / "golden")
    index = json.loads(index_path.read_text())
    golden = load_golden(bundle, read_manifest(bundle))
    inputs = np.fromfile(tmp_path / "golden" / index["input"]["file"], "<f4").reshape(index["input"]["shape"])
    np.testing.assert_array_equal(inputs, golden.inputs)
    for name in ("loc", "conf", "landmarks"):
        ref = index["reference"][name]
        np.testing.assert_array_equal(np.fromfile(tmp_path / "golden" / ref["file"], "<f4").reshape(ref["shape"]), golden.reference[name])
    (entry,) = index["files"]
    assert entry["file"] == "model.onnx" and entry["error_bounds"]["conf"] >= 1e-4


# ---------------------------------------------------------------- soak (memory over many frames)


def test_soak_runs_a_few_frames_and_samples_rss(bundle, capsys):
    from featherface.bench import soak

    status = soak.main([str(bundle), "--frames", "6", "--warmup", "2", "--every", "2", "--threads", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert [frames for frames, _ in report["rss_mb"]] == [0, 2, 4, 6]
    assert all(rss > 0 for _, rss in report["rss_mb"])
    assert report["frames"] == 6 and report["ok"] and report["growth_mb"] <= report["tolerance_mb"]


def test_soak_cycles_through_photos_and_prints_the_figures(bundle, tmp_path, capsys):
    from PIL import Image

    from featherface.bench import soak

    photos = []
    for i, size in enumerate([(64, 48), (40, 90)]):
        photos += ["--image", str(tmp_path / f"{i}.png")]
        Image.fromarray(noise_image(*size[::-1], seed=i)).save(tmp_path / f"{i}.png")
    assert soak.main([str(bundle), "--frames", "4", "--warmup", "1", "--every", "10", *photos]) == 0
    out = capsys.readouterr().out
    assert "frame       4: rss" in out and "4 frames in" in out and out.rstrip().endswith("ok")


def test_soak_growth_compares_peaks_of_the_halves_after_warm_up():
    from featherface.bench.soak import rss_growth_mb

    samples = [(0, 50.0), (100, 80.0), (200, 81.0), (300, 95.5)]
    assert rss_growth_mb(samples, 100) == 15.5  # 95.5 - 80.0
    assert rss_growth_mb(samples, 150) == 14.5  # 95.5 - 81.0
    # Measured over 10,000 photos decoded in turn: freed frames kept or returned to the OS
    # swing RSS within one band; end minus warm-up (+10.6 MiB) would call that growth.
    rss = [73.1, 111.3, 121.9, 111.8, 121.9, 121.9, 111.8, 122.0, 111.8, 111.8, 122.0, 121.9]
    assert rss_growth_mb(list(zip([0, 200, *range(1000, 10_001, 1000)], rss)), 200) == 0.1


def test_soak_exits_1_when_memory_keeps_growing(bundle, monkeypatch, capsys):
    from featherface.bench import device, soak

    rss = iter(range(100, 10_000, 5))  # 5 MiB more at every sample
    monkeypatch.setattr(device, "current_rss_mb", lambda: float(next(rss)))
    assert soak.main([str(bundle), "--frames", "6", "--warmup", "2", "--every", "2", "--tolerance-mb", "8"]) == 1
    assert capsys.readouterr().out.rstrip().endswith("tolerance 8.0 MiB: GROWS")  # peaks 105 then 115


@pytest.mark.parametrize("case", ["missing_bundle", "bad_photo"])
def test_soak_bad_input_is_one_error_line(case, bundle, tmp_path, capsys):
    from featherface.bench import soak

    photo = tmp_path / "notes.jpg"
    photo.write_text("not a photo")
    argv = [str(tmp_path / "nowhere")] if case == "missing_bundle" else [str(bundle), "--image", str(photo)]
    assert soak.main([*argv, "--frames", "3", "--warmup", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"{soak.PROG}: error: ") and ("manifest.json" in err if case == "missing_bundle" else "notes.jpg" in err)


# ---------------------------------------------------------------- --pick


def _result(bundle: str, file: str, threads: int, detect_ms: float, parity: str) -> BenchResult:
    return bench_result(f"{bundle}/{file}", threads, detect_ms, detect_ms / 2, parity, bundle=bundle, file=file)


def test_pick_takes_the_fastest_passing_file_at_the_first_thread_count():
    from featherface.bench.pick import bundle_choice

    report = bench_report([
        _result("a", "model_int8.tflite", 1, 10.0, "fail"),  # fastest, but failed parity
        _result("a", "model_fp16.tflite", 1, 12.0, "pass"),
        _result("a", "model_fp32.tflite", 1, 13.0, "pass"),
        _result("a", "model_fp32.tflite", 4, 5.0, "pass"),  # another thread count
        _result("b", "model_int8.tflite", 1, 9.0, "fail"),
    ])
    assert bundle_choice(report, "a").file == "model_fp16.tflite"
    assert bundle_choice(report, "b") is None


def test_pick_follows_the_builds_rule_a_smaller_file_within_five_percent_wins():
    """`bench --pick` and the build choose alike (featherface.choice.fastest): an INT8 file
    4 % slower than FP32 but a quarter of its size is the one to ship."""
    from dataclasses import replace

    from featherface.bench.pick import bundle_choice
    from featherface.choice import fastest

    fp32 = replace(_result("a", "model_fp32.tflite", 1, 10.0, "pass"), size_bytes=4_000_000)
    int8 = replace(_result("a", "model_int8.tflite", 1, 10.4, "pass"), size_bytes=1_000_000)
    fp16 = replace(_result("a", "model_fp16.tflite", 1, 10.6, "pass"), size_bytes=500_000)  # 6 % slower: not the same speed
    report = bench_report([fp32, int8, fp16])
    assert bundle_choice(report, "a").file == "model_int8.tflite"
    times = {r.file: r.total_ms.p50 for r in report.results}
    assert bundle_choice(report, "a").file == fastest(times, {r.file: r.size_bytes for r in report.results})


def test_bench_pick_writes_the_choice_and_who_made_it_and_leaves_failing_bundles_alone(bundle, corrupted, tmp_path, capsys):
    good, bad = tmp_path / "good" / "onnx", tmp_path / "bad" / "onnx"
    shutil.copytree(bundle, good)
    shutil.copytree(corrupted, bad)
    before = (bad / "manifest.json").read_text()
    status, _, err = run_cli([str(good), str(bad), *FAST, "--pick"], capsys, main=cli.main)
    assert status == 1  # the corrupted bundle fails parity
    manifest = read_manifest(good)  # still a valid manifest for the SDK
    assert manifest.preferred_file == "model.onnx"
    chosen = manifest.preferred_by
    assert chosen.by == "featherface bench --pick" and chosen.threads == 1 and chosen.device
    assert set(chosen.model_p50_ms) == set(chosen.detect_p50_ms) == {"model.onnx"}  # every file timed, as the build records
    for timed in (chosen.model_p50_ms["model.onnx"], chosen.detect_p50_ms["model.onnx"]):  # recorded; no comparison of two runs
        assert math.isfinite(timed) and timed > 0
    assert (bad / "manifest.json").read_text() == before
    assert f"{good}: preferred file is now model.onnx" in err and f"{bad}: nothing picked" in err
    Detector.load(good, num_threads=1).close()


def test_bench_pick_of_a_single_model_file_is_refused_and_the_manifest_kept(bundle, tmp_path, capsys):
    copy = tmp_path / "onnx"
    shutil.copytree(bundle, copy)
    before = (copy / "manifest.json").read_text()
    status, out, err = run_cli([str(copy / "model.onnx"), *FAST, "--pick"], capsys, main=cli.main)
    assert status == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith("--pick compares every file of a bundle: pass bundle directories, not single model files")
    assert (copy / "manifest.json").read_text() == before


def test_bench_out_under_a_file_is_refused_before_any_run(bundle, tmp_path, capsys):
    blocking = tmp_path / "face.jpg"
    blocking.write_bytes(b"x")
    with pytest.raises(SystemExit) as stop:
        cli.main([str(bundle), *FAST, "--out", str(blocking / "report")])
    assert stop.value.code == 2
    assert f"{blocking} is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("runtime_class", ["featherface.bench.coreml.CoreMLImageRuntime", "featherface.converters.mil_eval.MilRuntime"])
def test_runtimes_outside_the_sdk_give_frame_input_what_it_reads(runtime_class):
    """`Detector.frame_input` reads `input_dtype` and `quantize` from every runtime: the
    bench's image-input Core ML runtime and the build's MIL evaluator included."""
    import importlib

    module, name = runtime_class.rsplit(".", 1)
    runtime = object.__new__(getattr(importlib.import_module(module), name))  # no package to open
    assert runtime.input_dtype == np.float32
    assert runtime.quantize(np.ones((1, 3, 2, 2), np.float64)).dtype == np.float32


def test_a_pick_of_an_older_bench_still_reads_as_times_by_file(bundle):
    """Before PreferredBy, `--pick` wrote the chosen file's p50s as plain numbers."""
    from featherface.records import Manifest

    data = json.loads((bundle / "manifest.json").read_text())
    data["preferred_by"] = {"by": "featherface bench --pick", "device": "a Pi", "when": "2026-12-01T10:00:00+0000",
                            "threads": 4, "detect_p50_ms": 20.5, "model_p50_ms": 12.25}
    chosen = Manifest.from_json(data).preferred_by
    assert chosen.model_p50_ms == {data["preferred_file"]: 12.25} and chosen.detect_p50_ms == {data["preferred_file"]: 20.5}
    assert Manifest.from_json(Manifest.from_json(data).to_json()).preferred_by == chosen
    data["preferred_by"]["model_p50_ms"] = "fast"
    with pytest.raises(ValueError, match="preferred_by.model_p50_ms"):
        Manifest.from_json(data)
