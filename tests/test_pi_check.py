"""`make pi-check` (featherface.bench.pi_check): the parts that need no emulator (command
lines, the emulated Pi's /proc/cpuinfo, detections compared across machines, the exit
status), the bench's memory probe where no child process can start, and one slow run on
the emulated Cortex-A72 where qemu is installed."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from bench_records import bench_report, bench_result

from featherface.bench import pi_check
from featherface.bench.device import cpu_model


def face(box, score, landmarks=None):
    x1, y1, x2, y2 = box
    return {"box": list(box), "score": score,
            "landmarks": landmarks or [[x1 + (x2 - x1) * f, y1 + (y2 - y1) * f] for f in (0.3, 0.7, 0.5, 0.35, 0.65)]}


def test_emulated_python_is_debians_python311_under_qemu_with_the_pi4_core():
    command = pi_check.emulated_python("/usr/bin/qemu-aarch64-static", "cortex-a72", Path("/c/sysroot"), ["-c", "pass"])
    assert command == ["/usr/bin/qemu-aarch64-static", "-cpu", "cortex-a72", "-L", "/c/sysroot",
                       "/c/sysroot/usr/bin/python3.11", "-c", "pass"]


def test_emulated_env_keeps_this_machines_venv_and_qemu_settings_out():
    base = {"PATH": "/bin", "VIRTUAL_ENV": "/v", "PYTHONPATH": "/host", "PYTHONHOME": "/h", "QEMU_CPU": "max"}
    env = pi_check.emulated_env([Path("/sdk"), Path("/wheels")], base)
    assert env["PYTHONPATH"] == os.pathsep.join(["/sdk", "/wheels"])
    assert env["PATH"] == "/bin" and env["PYTHONNOUSERSITE"] == "1"
    assert not {"VIRTUAL_ENV", "PYTHONHOME", "QEMU_CPU"} & set(env)


def test_wheels_are_the_aarch64_cpython311_binaries_a_bookworm_pip_accepts():
    command = pi_check.wheel_install_command(["pip"], Path("/w"), ["numpy==2.3.5", "ai-edge-litert"])
    platforms = [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"]
    assert platforms[0] == "manylinux_2_36_aarch64"  # bookworm's glibc
    assert {"manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"} <= set(platforms)
    assert all(tag.endswith("aarch64") for tag in platforms)
    assert "--only-binary=:all:" in command and command[command.index("--python-version") + 1] == "3.11"
    assert command[-2:] == ["numpy==2.3.5", "ai-edge-litert"]


def test_a_litert_pin_replaces_only_the_readmes_unpinned_litert():
    assert pi_check.wheel_specs("ai-edge-litert") == pi_check.PI_WHEELS
    assert pi_check.wheel_specs("ai-edge-litert==2.1.0") == ("numpy==2.3.5", "pillow", "ai-edge-litert==2.1.0")


def test_the_sdk_is_installed_as_the_readme_says_without_dependencies():
    command = pi_check.sdk_install_command(["pip"], Path("/sdk"), Path("/repo"))
    assert command[:2] == ["pip", "install"] and "--no-deps" in command and command[-1] == "/repo"
    assert command[command.index("--target") + 1] == "/sdk"


def test_pi_wheels_are_the_readmes_pi_instructions():
    readme = (Path(pi_check.__file__).resolve().parents[1] / "README.md").read_text()
    assert f"pip install {' '.join(pi_check.PI_WHEELS)}" in readme


def test_bench_runs_once_for_parity_and_detect_keeps_faces_just_below_the_threshold():
    bench = pi_check.bench_argv(Path("/sdk/bin/featherface"), Path("/b/pi4"), Path("/o"), "1")
    assert bench[:3] == ["/sdk/bin/featherface", "bench", "/b/pi4"] and "--json" in bench
    assert bench[bench.index("--runs") + 1] == "1" and bench[bench.index("--warmup") + 1] == "0"
    detect = pi_check.detect_argv(Path("ff"), Path("/b/pi4"), "model_int8.tflite", [Path("/p/a.jpg")])
    assert detect[detect.index("--file") + 1] == "model_int8.tflite" and detect[-1] == "/p/a.jpg"
    assert float(detect[detect.index("--score") + 1]) < pi_check.DEPLOY_SCORE


def test_arm64_closure_keeps_the_arm64_packages_and_leaves_dpkgs_tools_out():
    output = "python3.11:arm64\n  Depends: libc6:arm64\nlibc6:arm64\ndpkg:arm64\ntar:arm64\n<media-types:arm64>\nperl\nlibc6:arm64\n"
    assert pi_check.arm64_closure(output) == ["python3.11:arm64", "libc6:arm64"]


def test_the_emulated_pis_cpuinfo_reads_as_a_cortex_a72_and_names_the_emulator():
    text = pi_check.pi4_cpuinfo(2, "Raspberry Pi 4 userland emulated by qemu-aarch64 7.2 -cpu cortex-a72")
    assert text.count("CPU part\t: 0xd08") == 2 and "processor\t: 1" in text
    assert cpu_model(text) == "Cortex-A72 (Raspberry Pi 4 userland emulated by qemu-aarch64 7.2 -cpu cortex-a72)"


def test_parse_detect_lines_reads_json_lines_and_skips_the_rest():
    stdout = 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n{"image": "a.jpg", "faces": []}\n\n'
    assert pi_check.parse_detect_lines(stdout) == {"a.jpg": []}


def test_the_same_faces_on_both_machines_pass():
    faces = {"a.jpg": [face((10, 10, 50, 60), 0.91)], "b.jpg": []}
    assert pi_check.compare_detections(faces, faces)["status"] == "pass"


def test_photos_without_faces_pass_but_say_nothing_was_compared():
    result = pi_check.compare_detections({"a.jpg": []}, {"a.jpg": []})
    assert result["status"] == "pass" and "nothing was compared" in result["note"]


def test_a_clear_face_lost_on_the_emulated_pi_fails():
    host = {"a.jpg": [face((10, 10, 50, 60), 0.91), face((100, 10, 140, 60), 0.88)]}
    emulated = {"a.jpg": [face((10, 10, 50, 60), 0.91)]}
    result = pi_check.compare_detections(host, emulated)
    assert result["status"] == "fail" and result["robust_recall"] == 0.5


def test_a_face_whose_score_merely_crosses_the_threshold_between_machines_passes():
    host = {"a.jpg": [face((10, 10, 50, 60), 0.91), face((100, 10, 140, 60), 0.51)]}
    emulated = {"a.jpg": [face((10, 10, 50, 60), 0.91), face((100, 10, 140, 60), 0.49)]}
    assert pi_check.compare_detections(host, emulated)["status"] == "pass"


def test_boxes_that_drift_apart_fail():
    host = {"a.jpg": [face((10, 10, 50, 60), 0.91)]}
    emulated = {"a.jpg": [face((16, 14, 56, 64), 0.91)]}  # IoU ~0.6: matched, but not the same box
    result = pi_check.compare_detections(host, emulated)
    assert result["status"] == "fail" and result["mean_iou"] < pi_check.MIN_MEAN_IOU


def test_a_photo_processed_on_one_machine_only_fails():
    result = pi_check.compare_detections({"a.jpg": [], "b.jpg": []}, {"a.jpg": []})
    assert result["status"] == "fail" and "b.jpg" in result["reason"]


@pytest.mark.parametrize("bench, detect, status", [
    (bench_report([bench_result("pi4/m.tflite")]), {"m.tflite": {"status": "pass"}}, 0),
    (bench_report([bench_result("pi4/m.tflite", status="fail")]), {"m.tflite": {"status": "pass"}}, 1),
    (bench_report([bench_result("pi4/m.tflite")]), {"m.tflite": {"status": "fail"}}, 1),
    (bench_report([]), {}, 1),  # nothing ran is no pass
    (None, {}, 1),  # the emulated bench crashed
])
def test_exit_status_is_nonzero_on_any_parity_or_detection_failure(bench, detect, status):
    assert pi_check.exit_status(bench, detect) == status


@pytest.mark.parametrize("manifest_text", ["{not json", '{"files": 3}'])
def test_a_broken_manifest_is_one_line_before_any_setup(manifest_text, tmp_path, capsys):
    bundle = tmp_path / "pi4"
    bundle.mkdir()
    (bundle / "manifest.json").write_text(manifest_text)
    assert pi_check.main(["--bundle", str(bundle), "--root", str(tmp_path / "root"), "--no-install"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{pi_check.PROG}: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "root").exists()  # nothing prepared for a bundle that cannot be checked


def test_a_missing_bundle_is_named_with_what_to_do(tmp_path, capsys):
    assert pi_check.main(["--bundle", str(tmp_path / "pi4"), "--root", str(tmp_path / "root"), "--no-install"]) == 2
    err = capsys.readouterr().err
    assert "no manifest.json" in err and "make build" in err


@pytest.mark.slow
def test_bench_says_once_that_the_memory_probe_cannot_start(tiny_onnx_bundle, tmp_path, monkeypatch, capsys):
    """Under qemu user-mode emulation the probe's child Python fails with `Exec format error`:
    one note for the whole run, and every file's memory is the bench process's."""
    not_a_program = tmp_path / "python"
    not_a_program.write_bytes(b"\x7fELF but not for this machine")
    not_a_program.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(not_a_program))
    from featherface.bench.cli import main

    status = main([str(tiny_onnx_bundle), "--threads", "1,2", "--runs", "1", "--warmup", "0", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0 and len(report["results"]) == 2
    probe_notes = [n for n in report["notes"] if "memory probe" in n]
    assert len(probe_notes) == 1 and "Exec format error" in probe_notes[0]
    assert all(e["memory_scope"] == "process" and e["peak_rss_mb"] for e in report["results"])


@pytest.mark.slow
def test_every_pi4_file_passes_parity_on_the_emulated_cortex_a72(request, capsys):
    """The whole `make pi-check` on a pi4 bundle (FEATHERFACE_PI4_BUNDLE, else the session's
    v1-489k bundle); minutes, and the first run downloads the emulated Pi into .pi-root."""
    if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")):
        pytest.skip("qemu-aarch64-static is not installed (Debian: apt-get install qemu-user-static); "
                    "`make pi-check` installs it where it can")
    bundle = os.environ.get("FEATHERFACE_PI4_BUNDLE") or str(request.getfixturevalue("pi4_bundle"))
    request.getfixturevalue("widerface_root")  # the detect comparison's photos
    status = pi_check.main(["--bundle", bundle, "--no-install"])
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["device"]["machine"] == "aarch64" and report["emulation"]["cpu"] == "cortex-a72"
    assert status == 0, [(e["label"], e["parity"]["status"]) for e in report["results"]]
