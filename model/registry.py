"""Registry of network variants: a name maps to a constructor and where its weights live.

Adding a variant is adding an entry here (timm-style), not copying a class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.nn as nn

from featherface.paths import SHARED

from .featherface_v1 import FeatherFaceV1, FeatherFaceV1Config
from .retinaface import RetinaFaceMNet
from .v2_ultra import FeatherFaceV2Ultra, FeatherFaceV2UltraConfig

SHARED_WEIGHTS = SHARED / "weights"
EMBEDDED_WEIGHTS = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class Variant:
    name: str
    build: Callable[[], nn.Module]
    description: str
    # Where `--weights` defaults to: a file shipped in the package, else a public
    # checkpoint from ../shared (absent on a user's fresh clone).
    default_weights: tuple[Path, ...] = ()

    def find_default_weights(self) -> Path | None:
        return next((p for p in self.default_weights if p.is_file()), None)


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "v1", FeatherFaceV1,
            "published FeatherFace V1: CBAM x6, BiFPN 3 cells @64, DCN-SSH, shuffle block",
            (SHARED_WEIGHTS / "featherface_v1_paper.pth",),
        ),
        Variant(
            "v1-489k",
            lambda: FeatherFaceV1(FeatherFaceV1Config(channels=56, bifpn_cells=2, cbam=False, conv_shuffle=False)),
            "FeatherFace V1 variant: BiFPN 2 cells @56, no CBAM, DCN-SSH, parameter-free shuffle",
            (SHARED_WEIGHTS / "featherface_v1_489k.pth",),
        ),
        Variant(
            "retinaface-mnet025", RetinaFaceMNet,
            "RetinaFace-MobileNet0.25 baseline: FPN @64 + SSH with plain convs",
            (SHARED_WEIGHTS / "retinaface_mnet025.pth",),
        ),
        Variant(
            "v2-ultra", FeatherFaceV2Ultra,
            f"FeatherFace V2 Ultra (ours): MobileNetV1-0.25 (ReLU), {FeatherFaceV2UltraConfig().channels}-channel top-down pyramid, "
            "a separable context block and a head per level",
            (EMBEDDED_WEIGHTS / "v2_ultra.pth",),
        ),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; expected one of: {', '.join(VARIANTS)}") from None


def create_model(name: str, weights: str | Path | None = None, *, pretrained: bool = True) -> nn.Module:
    """Build a variant in eval mode with `weights` loaded strictly, or without them its
    default weights (embedded, else ../shared's); `pretrained=False`: random initialisation.
    ValueError when a pretrained variant has no default weights here."""
    from .checkpoint import load_weights

    variant = get_variant(name)
    model = variant.build()
    if weights is None and pretrained:
        weights = variant.find_default_weights()
        if weights is None:
            raise ValueError(f"{name} has no default weights here ({', '.join(map(str, variant.default_weights))}): "
                             "pass weights=PATH, or pretrained=False for random initialisation")
    if weights is not None:
        load_weights(model, weights, arch=name)
    return model.eval()
