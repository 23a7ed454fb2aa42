"""Bad option values (issue 19, and the audit of 2026-12-06) are refused at parse time by
`featherface` (detect, bench, build, distill), `featherface-pi` and the soak: exit status 2,
one error line naming the option, the value and what was expected, and nothing run or
written. Good boundary values still run; output folders may not overwrite the inputs.

Runs on the tiny random-weight ONNX bundle of conftest and one generated image."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image
from featherface import cli
from featherface.sdk import pi


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "noise.png"
    Image.fromarray(noise_image(60, 90)).save(path)
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


@pytest.mark.parametrize("run, argv", [
    (cli.main, ["detect", "--bundle", "B", "P", "--threads", "100000"]),
    (pi.main, ["--bundle", "B", "--source", "P", "--threads", "100000"]),
    (cli.main, ["bench", "B", "--threads", "1,100000"]),
])
def test_thread_counts_above_the_cap_are_refused_before_a_runtime_spawns_them(run, argv, capsys):
    from featherface.arg_types import MAX_THREADS

    line = refused(run, argv, capsys)
    assert "--threads" in line and str(MAX_THREADS) in line


@pytest.mark.parametrize("option, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--weight-decay", "-1"), ("--warmup-fraction", "7"), ("--workers", "-2"),
    ("--threads", "-4"), ("--max-minutes", "-1"), ("--max-images", "-5"), ("--min-face-size", "nan"),
    ("--crop-scales", "0.5,inf"), ("--kd-weight", "-5"), ("--temperature-range", "nan"), ("--temperature-min", "-1"),
])
def test_distill_refuses_numbers_it_would_misread(option, value, capsys):
    line = refused(cli.build_parser().parse_args, ["distill", option, value], capsys)  # parsing only: nothing could train
    assert option in line and value in line


def test_a_distillation_temperature_of_zero_is_refused_and_a_zero_minimum_with_a_range_is_not():
    from featherface.training.distill_config import DistillConfig

    assert DistillConfig(temperature_range=2.0, temperature_min=0.0).temperature_min == 0.0
    with pytest.raises(ValueError, match="temperature must stay above 0"):
        DistillConfig(temperature_range=0.0, temperature_min=0.0)


def test_pi_script_refuses_a_negative_frame_count(tiny_onnx_bundle, photo, capsys):
    line = refused(pi.main, ["--bundle", str(tiny_onnx_bundle), "--source", str(photo.parent), "--max-frames", "-1"], capsys)
    assert "--max-frames" in line and "at least 0" in line


@pytest.mark.parametrize("where", ["the input folder", "inside the input folder", "beside an input file"])
def test_detect_refuses_an_out_folder_that_could_overwrite_its_inputs(where, tiny_onnx_bundle, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    image = photos / "a.jpg"
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(image)
    before = image.read_bytes()
    inputs, out = {"the input folder": ([photos], photos), "inside the input folder": ([photos], photos / "annotated"),
                   "beside an input file": ([image], photos)}[where]
    assert cli.main(["detect", "--bundle", str(tiny_onnx_bundle), *map(str, inputs), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"featherface: error: --out {out}") and "Traceback" not in captured.err
    assert image.read_bytes() == before and sorted(p.name for p in photos.iterdir()) == ["a.jpg"]


def test_pi_script_refuses_a_save_folder_inside_its_source_folder(tiny_onnx_bundle, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(photos / "a.jpg")
    assert pi.main(["--bundle", str(tiny_onnx_bundle), "--source", str(photos), "--save", str(photos)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"featherface-pi: error: --save {photos} is inside")
    assert [p.name for p in photos.iterdir()] == ["a.jpg"]


def test_annotated_names_keep_a_video_frame_index_and_any_other_file_name():
    from featherface.sdk.detect_command import annotated_name

    used: set[str] = set()
    assert annotated_name("clips/walk.mp4#frame=12", used) == "walk_frame000012.jpg"
    assert annotated_name("photos/a#frame=b.jpg", used) == "a#frame=b.jpg"  # a file name, not a video frame
    assert annotated_name("other/walk.mp4#frame=12", used) == "walk_frame000012_2.jpg"


@pytest.mark.parametrize("value", ["nan,1,2", "1,inf,2"])
def test_build_refuses_an_ap_budget_it_could_not_check(value, tmp_path, capsys):
    argv = ["build", "--target", "pi4", "--arch", "v2-ultra", "--out", str(tmp_path / "dist"), "--ap-budget", value]
    line = refused(cli.build_parser().parse_args, argv, capsys)  # parsing only: nothing could build
    assert "--ap-budget" in line and value in line


def test_detect_may_write_beside_an_input_its_copy_cannot_overwrite(tiny_onnx_bundle, tmp_path, capsys):
    image = tmp_path / "b.png"
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(image)
    before = image.read_bytes()
    assert cli.main(["detect", "--bundle", str(tiny_onnx_bundle), str(image), "--out", str(tmp_path)]) == 0
    assert image.read_bytes() == before and (tmp_path / "b.jpg").is_file()


def test_the_sdk_and_the_manifest_rules_share_the_input_and_thread_caps():
    from featherface.config import MAX_INPUT_SIDE, MAX_THREADS, InputSize
    from featherface.sdk import DetectorOptions

    with pytest.raises(ValueError, match=f"at most {MAX_INPUT_SIDE}"):
        InputSize.parse(str(MAX_INPUT_SIDE + 32))  # a bundle the SDK would refuse is never built
    with pytest.raises(ValueError, match=f"from 1 to {MAX_THREADS}"):
        DetectorOptions(num_threads=MAX_THREADS + 1)
