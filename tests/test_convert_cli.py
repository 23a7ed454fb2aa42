"""`featherface convert` writes one parity-checked file, and nothing when the check fails."""
from __future__ import annotations

import dataclasses

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from conftest import noise_image
from featherface.cli import main


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(noise_image(60, 90, seed=1 + i)).save(folder / f"{i}.png")
    return folder


def test_convert_onnx_writes_a_checked_file(images, tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["convert", "onnx", "--arch", "v2-ultra", "--input-size", "64", "--images", str(images), "--out", str(out)])
    assert status == 0
    assert "parity pass" in capsys.readouterr().out
    session = ort.InferenceSession(str(out / "model.onnx"))
    loc, conf, landmarks = session.run(None, {"input": np.zeros((2, 3, 64, 64), np.float32)})
    assert loc.shape == (2, 168, 4) and conf.shape == (2, 168, 2) and landmarks.shape == (2, 168, 10)
    assert not [p for p in out.iterdir() if p.name.startswith(".convert")]


def test_convert_failing_parity_writes_nothing(images, tmp_path, capsys, monkeypatch):
    from featherface.converters import build

    real_check = build.check_file

    def failing_check(*args, **kwargs):
        record = real_check(*args, **kwargs)
        return dataclasses.replace(record, status="fail", reasons=["forced failure"])

    monkeypatch.setattr(build, "check_file", failing_check)
    out = tmp_path / "out"
    status = main(["convert", "onnx", "--arch", "v2-ultra", "--input-size", "64", "--images", str(images), "--out", str(out)])
    assert status == 2
    err = capsys.readouterr().err
    assert "forced failure" in err and "Traceback" not in err
    assert not (out / "model.onnx").exists()


def test_every_target_has_one_row_and_an_exporter():
    """Adding a target is a row of config.TARGET_SPECS and an exporter: the build, `convert`
    and the fixed preference read the row, so nothing else may list targets."""
    from featherface.config import TARGET_SPECS, TARGETS
    from featherface.converters.export import exporters
    from featherface.sdk.runtimes import runtime_name_for

    assert TARGETS == tuple(TARGET_SPECS) == tuple(exporters())
    for name, spec in TARGET_SPECS.items():
        assert spec.name == name and spec.layout in ("NCHW", "NHWC")
        assert runtime_name_for(spec.default_file) == {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}[spec.format]


def test_convert_onnx_refuses_fp16_instead_of_writing_an_fp32_file(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "onnx", "--fp16", "--arch", "v2-ultra", "--input-size", "64", "--images", str(images), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "featherface: error: --fp16 is for tflite and coreml; the onnx file is FP32"
    assert not out.exists()


def test_convert_with_no_usable_images_leaves_no_out_folder(tmp_path, capsys):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    assert main(["convert", "onnx", "--arch", "v2-ultra", "--input-size", "64", "--images", str(empty), "--out", str(out)]) == 2
    assert "featherface: error:" in capsys.readouterr().err
    assert not out.exists()
