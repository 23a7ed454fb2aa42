"""The `featherface` command: version, help, `info` output, and clean user-facing errors
(one `featherface: error:` line family, exit status 2, never a traceback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from featherface import __version__
from featherface.model.registry import get_variant

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENT_KEYS = {"backbone", "attention", "bifpn", "context", "heads", "other"}


def run_subprocess(argv: list[str]) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("featherface")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "featherface.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command + argv, capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env)


def assert_clean_error(status: int, err: str, expected_status: int = 2) -> None:
    assert status == expected_status
    assert "Traceback" not in err
    assert err.strip(), "an error message on stderr"


# --- version and help ---------------------------------------------------------------------


def test_version_prints_the_package_version(capsys):
    status, out, _ = run_cli(["--version"], capsys)
    assert status == 0
    assert out.strip() == f"featherface {__version__}"


def test_version_from_the_installed_command():
    result = run_subprocess(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == f"featherface {__version__}"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["info", "--help"]])
def test_help_exits_zero_and_describes_usage(argv, capsys):
    status, out, err = run_cli(argv, capsys)
    assert status == 0
    assert out.startswith("usage: featherface")
    assert err == ""


def test_info_help_lists_every_architecture(capsys):
    _, out, _ = run_cli(["info", "--help"], capsys)
    for name in ("v1", "v1-489k", "retinaface-mnet025", "v2-ultra"):
        assert name in out


def test_missing_command_is_a_usage_error(capsys):
    status, _, err = run_cli([], capsys)
    assert_clean_error(status, err)


# --- info ---------------------------------------------------------------------------------


def test_info_json_is_one_object_with_counts_and_components(capsys):
    status, out, err = run_cli(["info", "--arch", "v2-ultra", "--json", "--input-size", "320"], capsys)
    assert status == 0
    assert err == ""
    assert len(out.strip().splitlines()) == 1
    info = json.loads(out)
    assert {"arch", "params", "params_thop_style", "macs", "components", "weights_loaded"} <= set(info)
    assert info["arch"] == "v2-ultra"
    assert set(info["components"]) == COMPONENT_KEYS
    assert sum(info["components"].values()) == info["params"]
    assert info["params"] == sum(p.numel() for p in get_variant("v2-ultra").build().parameters())
    assert info["params_thop_style"] <= info["params"]
    assert info["input_size"] == 320
    assert isinstance(info["macs"], int) and info["macs"] > 0
    assert info["weights_loaded"] is (get_variant("v2-ultra").find_default_weights() is not None)


def test_info_macs_grow_with_the_input_size(capsys):
    macs = {}
    for size in (64, 128):
        status, out, _ = run_cli(["info", "--arch", "v2-ultra", "--json", "--input-size", str(size)], capsys)
        assert status == 0
        macs[size] = json.loads(out)["macs"]
    # Convolution MACs scale with the number of pixels (up to rounding of odd map sizes).
    assert 3.5 * macs[64] <= macs[128] <= 4.5 * macs[64]


def test_info_text_output_names_both_parameter_counts(capsys):
    status, out, _ = run_cli(["info", "--arch", "v2-ultra", "--input-size", "64"], capsys)
    assert status == 0
    assert out.startswith("v2-ultra:")
    assert "parameters (thop)" in out and "true count" in out


def test_info_with_paper_weights_reports_true_and_thop_counts(shared_weights, capsys):
    path = shared_weights / "featherface_v1_paper.pth"
    status, out, err = run_cli(["info", "--arch", "v1", "--weights", str(path), "--json", "--input-size", "64"], capsys)
    assert status == 0, err
    info = json.loads(out)
    assert info["params"] == 592_371
    assert info["params_thop_style"] == 488_661
    assert info["weights_loaded"] is True
    assert info["weights"] == str(path)


def test_info_loads_imagenet_backbone_weights(shared_weights, capsys):
    tar = shared_weights / "mobilenetV1X0.25_imagenet.tar"
    status, out, err = run_cli(
        ["info", "--arch", "v2-ultra", "--backbone-weights", str(tar), "--json", "--input-size", "64"], capsys
    )
    assert status == 0, err
    assert json.loads(out)["arch"] == "v2-ultra"


# --- errors -------------------------------------------------------------------------------


def test_wrong_checkpoint_for_the_arch_is_a_clean_error(shared_weights, capsys):
    path = shared_weights / "retinaface_mnet025.pth"
    status, out, err = run_cli(["info", "--arch", "v1", "--weights", str(path), "--json"], capsys)
    assert_clean_error(status, err)
    assert out == ""
    assert err.startswith("featherface: error:")
    assert "most likely belongs to --arch retinaface-mnet025" in err


def test_wrong_checkpoint_from_the_installed_command_has_no_traceback(shared_weights):
    path = shared_weights / "featherface_v1_489k.pth"
    result = run_subprocess(["info", "--arch", "retinaface-mnet025", "--weights", str(path)])
    assert_clean_error(result.returncode, result.stderr)
    assert result.stderr.startswith("featherface: error:")
    assert "most likely belongs to --arch v1-489k" in result.stderr


def test_unknown_arch_is_a_usage_error(capsys):
    status, _, err = run_cli(["info", "--arch", "v3-mega"], capsys)
    assert_clean_error(status, err)
    assert "v3-mega" in err


@pytest.mark.parametrize("size", ["300", "0", "-32", "big", "64.0"])
def test_bad_input_size_is_a_usage_error(size, capsys):
    status, _, err = run_cli(["info", "--arch", "v2-ultra", f"--input-size={size}"], capsys)
    assert_clean_error(status, err)
    assert "--input-size" in err


def test_missing_weights_file_is_a_clean_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "no_such_checkpoint.pth"
    status, out, err = run_cli(["info", "--arch", "v2-ultra", "--weights", str(path)], capsys)
    assert_clean_error(status, err)
    assert err.startswith("featherface: error:")
    assert str(path) in err
    assert out == ""


def test_missing_weights_file_from_the_installed_command(tmp_path):
    path = tmp_path / "absent.pth"
    result = run_subprocess(["info", "--arch", "v2-ultra", "--weights", str(path), "--json"])
    assert_clean_error(result.returncode, result.stderr)
    assert result.stderr.startswith("featherface: error:")
    assert str(path) in result.stderr
    assert result.stdout == ""


def test_missing_backbone_weights_file_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "absent.tar"
    status, _, err = run_cli(["info", "--arch", "v2-ultra", "--backbone-weights", str(path)], capsys)
    assert_clean_error(status, err)
    assert str(path) in err


def test_code_running_checkpoint_is_a_clean_error(tmp_path, capsys):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, path)
    status, _, err = run_cli(["info", "--arch", "v2-ultra", "--weights", str(path)], capsys)
    assert_clean_error(status, err)
    assert err.startswith("featherface: error:")
    assert not marker.exists()


def test_truncated_legacy_checkpoint_is_a_clean_error(tmp_path, capsys):
    full = tmp_path / "legacy.pth"
    torch.save(get_variant("v2-ultra").build().state_dict(), full, _use_new_zipfile_serialization=False)
    path = tmp_path / "truncated.pth"
    path.write_bytes(full.read_bytes()[:1])
    status, _, err = run_cli(["info", "--arch", "v2-ultra", "--weights", str(path)], capsys)
    assert_clean_error(status, err)


def test_corrupt_safetensors_is_a_clean_error(tmp_path, capsys):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    status, _, err = run_cli(["info", "--arch", "v2-ultra", "--weights", str(path)], capsys)
    assert_clean_error(status, err)
