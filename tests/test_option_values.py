"""Bad option values (issue 19) are refused at parse time by `featherface detect` and
`featherface-pi`: exit status 2, one error line naming the option, the value and what was
expected, and nothing run or written. Good boundary values still run.

Runs on the tiny random-weight ONNX bundle of conftest and one generated image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface import cli
from featherface.sdk import pi


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(path)
    return path


def refused(run, argv: list[str], capsys) -> str:
    """The one error line of a command that must stop at parse time with exit status 2."""
    with pytest.raises(SystemExit) as stop:
        run(argv)
    assert stop.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    return errors[0]


@pytest.mark.parametrize("value", ["-1", "1.5", "nan", "high"])
def test_detect_refuses_a_score_outside_zero_to_one(value, tiny_onnx_bundle, photo, tmp_path, capsys):
    out = tmp_path / "annotated"
    line = refused(cli.main, ["detect", "--bundle", str(tiny_onnx_bundle), str(photo), "--score", value, "--out", str(out)], capsys)
    assert "--score" in line and "[0, 1]" in line and value in line
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_detect_refuses_fewer_than_one_thread(value, tiny_onnx_bundle, photo, capsys):
    line = refused(cli.main, ["detect", "--bundle", str(tiny_onnx_bundle), str(photo), "--threads", value], capsys)
    assert "--threads" in line and value in line
    assert ">= 1" in line or "at least 1" in line


def test_detect_refuses_an_existing_file_as_out_folder(tiny_onnx_bundle, photo, tmp_path, capsys):
    existing = tmp_path / "annotated.jpg"
    existing.write_bytes(b"keep me")
    line = refused(cli.main, ["detect", "--bundle", str(tiny_onnx_bundle), str(photo), "--out", str(existing)], capsys)
    assert "--out" in line and str(existing) in line and "not a folder" in line
    assert "Errno" not in line
    assert existing.read_bytes() == b"keep me"


@pytest.mark.parametrize("score", ["0", "1"])
def test_detect_accepts_the_ends_of_the_score_range_and_one_thread(score, tiny_onnx_bundle, photo, tmp_path, capsys):
    out = tmp_path / "annotated"
    out.mkdir()  # an existing folder is fine
    argv = ["detect", "--bundle", str(tiny_onnx_bundle), str(photo), "--score", score, "--threads", "1", "--out", str(out), "--json"]
    assert cli.main(argv) == 0
    assert '"faces"' in capsys.readouterr().out
    assert len(list(out.iterdir())) == 1  # the annotated photo


@pytest.mark.parametrize("option, value, expected", [
    ("--score", "-1", "[0, 1]"), ("--score", "1.5", "[0, 1]"), ("--threads", "0", "at least 1"),
])
def test_pi_script_refuses_bad_values_before_opening_anything(option, value, expected, tiny_onnx_bundle, photo, capsys):
    line = refused(pi.main, ["--bundle", str(tiny_onnx_bundle), "--source", str(photo.parent), option, value], capsys)
    assert option in line and expected in line and value in line


def test_pi_script_refuses_an_existing_file_as_save_folder(tiny_onnx_bundle, photo, tmp_path, capsys):
    existing = tmp_path / "frames"
    existing.write_text("a file")
    line = refused(pi.main, ["--bundle", str(tiny_onnx_bundle), "--source", str(photo.parent), "--save", str(existing)], capsys)
    assert "--save" in line and "not a folder" in line


def test_soak_refuses_fewer_than_one_thread_naming_the_option(tiny_onnx_bundle, capsys):
    from featherface.bench import soak

    line = refused(soak.main, [str(tiny_onnx_bundle), "--threads", "0"], capsys)
    assert "--threads" in line and "at least 1" in line


@pytest.mark.parametrize("command", [["info", "--arch", "v2-ultra"], ["distill"]])
@pytest.mark.parametrize("value, expected", [("640x480", "a square input"), ("100", "multiple of 32")])
def test_square_only_commands_refuse_other_sizes(command, value, expected, capsys):
    line = refused(cli.main, [*command, "--input-size", value], capsys)
    assert "--input-size" in line and expected in line
