"""The device SDK installs and runs with numpy, pillow and one runtime only: a fresh
virtual environment without torch or tensorflow detects faces with a built bundle."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface.paths import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory) -> Path:
    """A tiny real bundle (v2-ultra, random weights, 64 px) built by the full toolchain."""
    import torch

    from featherface.converters.build import build_bundle, find_images, make_parity_set
    from featherface.model.registry import get_variant

    root = tmp_path_factory.mktemp("sdkvenv")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(images / f"{i}.png")
    torch.manual_seed(0)
    model = get_variant("v2-ultra").build().eval()
    parity = make_parity_set(model, find_images(images, 2), 64)
    build_bundle("onnx", model, "v2-ultra", None, parity, 64, root / "dist", lambda _: None)
    return root / "dist" / "onnx"


@pytest.fixture(scope="module")
def sdk_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "sdk"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["numpy==2.3.5", "pillow", "onnxruntime"], check=True)
    subprocess.run(pip + ["--no-deps", str(REPO_ROOT)], check=True)
    return venv


def test_sdk_venv_has_no_torch_or_tensorflow(sdk_venv):
    probe = "import importlib.util as u; print(u.find_spec('torch') is None and u.find_spec('tensorflow') is None)"
    result = subprocess.run([str(sdk_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "True"


def test_detect_runs_in_the_sdk_only_environment(sdk_venv, onnx_bundle, tmp_path):
    image = tmp_path / "photo.jpg"
    Image.fromarray(np.full((90, 120, 3), 128, np.uint8)).save(image)
    result = subprocess.run(
        [str(sdk_venv / "bin" / "featherface"), "detect", "--bundle", str(onnx_bundle), str(image), "--json"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.splitlines()[0])
    assert record["image"] == str(image) and isinstance(record["faces"], list)
    assert "Traceback" not in result.stderr
