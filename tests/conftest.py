"""Shared fixtures: the read-only ../shared material (weights, WIDER FACE subset).

Tests needing it skip with a reason on a user's fresh clone; under CI (CI=true) a
missing ../shared is an error, never a silent skip.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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


@pytest.fixture
def shared_weights() -> Path:
    return require_shared("weights")


@pytest.fixture
def widerface_root() -> Path:
    return require_shared("data/widerface")
