"""Shared fixtures: the read-only ../shared material (weights, WIDER FACE subset), tiny
bundles, and the helpers several test files call (noise images, running a command).

Tests needing ../shared skip with a reason on a user's fresh clone; under CI (CI=true) a
missing ../shared is an error, never a silent skip.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

from featherface import cli
from featherface.paths import SHARED


def require_shared(relative: str) -> Path:
    """Path of ../shared/<relative>; skip (or fail under CI) when it is absent."""
    path = SHARED / relative
    if not path.exists():
        message = f"needs {path} (the project's read-only ../shared material), which is absent"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI this is an error")
        pytest.skip(message)
    return path


def noise_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A seeded uint8 image of uniform noise over 0-255: height x width x channels, or
    height x width for channels=1."""
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def run_cli(argv: Sequence, capsys, main: Callable[[list[str]], int] | None = None) -> tuple[int, str, str]:
    """`main(argv)` in-process (default: the `featherface` command's), every argument as a
    string; argparse's own exits are turned into a status like the shell's."""
    try:
        status = (main or cli.main)([str(a) for a in argv])
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_error_line(err: str, prog: str = "featherface", details: bool = False) -> str:
    """The error line of `err`, which holds nothing else but the bench's progress lines
    (and indented detail lines if `details`)."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("bench: ")]
    assert lines and lines[0].startswith(f"{prog}: error: "), err
    assert all(line.startswith("  ") for line in lines[1:]) if details else len(lines) == 1, err
    return lines[0]


@pytest.fixture
def shared_weights() -> Path:
    return require_shared("weights")


@pytest.fixture
def widerface_root() -> Path:
    return require_shared("data/widerface")


@pytest.fixture(scope="session")
def tiny_onnx_bundle(tmp_path_factory) -> Path:
    """A real tiny ONNX bundle (v2-ultra, seeded random weights, 64 px, golden vectors
    included) built by the converters from two generated images: no ../shared needed."""
    import torch
    from PIL import Image

    from featherface.converters.build import build_bundle, find_images, make_parity_set
    from featherface.model.registry import get_variant

    root = tmp_path_factory.mktemp("tiny-bundle")
    images = root / "images"
    images.mkdir()
    for i in range(2):
        Image.fromarray(noise_image(48, 80, seed=i)).save(images / f"{i}.png")
    torch.manual_seed(0)
    model = get_variant("v2-ultra").build().eval()
    parity_set = make_parity_set(model, find_images(images, 2), 64)
    build_bundle("onnx", model, "v2-ultra", None, parity_set, 64, root / "dist", lambda _: None)
    return root / "dist" / "onnx"


@pytest.fixture(scope="session")
def shared(tmp_path_factory):
    """Real v1-489k bundles for every target, built once per session (see test_build.py)."""
    from test_build import shared_build

    return shared_build(tmp_path_factory)


@pytest.fixture(scope="session")
def onnx_bundle(shared) -> Path:
    return shared.bundle("onnx")


@pytest.fixture(scope="session")
def pi4_bundle(shared) -> Path:
    return shared.bundle("pi4")
