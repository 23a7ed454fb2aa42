"""The device SDK installs and runs with numpy, pillow and one runtime only: a fresh
virtual environment without torch or tensorflow detects faces with a built bundle."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory) -> Path:
    """A fresh venv holding one runtime and then the repository with the dependencies its
    pyproject declares (not --no-deps): a torch added there would be installed here."""
    venv = tmp_path_factory.mktemp("venv") / "sdk"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["onnxruntime"], check=True)
    subprocess.run(pip + [str(REPO_ROOT)], check=True)
    return venv


def test_sdk_venv_has_no_torch_or_tensorflow(sdk_venv):
    probe = "import importlib.util as u; print(u.find_spec('torch') is None and u.find_spec('tensorflow') is None)"
    result = subprocess.run([str(sdk_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_detect_runs_in_the_sdk_only_environment(sdk_venv, tiny_onnx_bundle, tmp_path):
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(image)
    result = subprocess.run(
        [str(sdk_venv / "bin" / "featherface"), "detect", "--bundle", str(tiny_onnx_bundle), str(image), "--json"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert record["image"] == str(image) and isinstance(record["faces"], list)
    assert "Traceback" not in result.stderr


def test_bench_runs_in_the_sdk_only_environment(sdk_venv, tiny_onnx_bundle, tmp_path):
    """`python -m featherface.bench` on the device: numpy, pillow and one runtime suffice."""
    out = tmp_path / "bench"
    result = subprocess.run(
        [str(sdk_venv / "bin" / "python"), "-m", "featherface.bench", str(tiny_onnx_bundle), "--threads", "1",
         "--runs", "3", "--warmup", "1", "--json", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path,  # as on a device: not inside a checkout, whose featherface/ would shadow the install
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    (entry,) = report["results"]
    for stage in ("model_ms", "total_ms"):  # both timed; how they compare is the benchmark's business
        assert math.isfinite(entry[stage]["p50"]) and entry[stage]["p50"] > 0, stage
    assert entry["parity"]["status"] == "pass"
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()
    assert "Traceback" not in result.stderr
