"""Where the read-only ../shared material sits beside a checkout (absent on a user's clone)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATHERFACE_SHARED", REPO_ROOT.parent / "shared"))
WIDERFACE = SHARED / "data" / "widerface"


def default_parity_images() -> Path | None:
    images = WIDERFACE / "WIDER_val" / "images"
    return images if images.is_dir() else None
