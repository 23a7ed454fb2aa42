"""The exporter interface: one module per target (target_onnx, target_pi4, target_a14), each
with `convert(request) -> list[ModelFile]`, and the table that `build_bundle` takes."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar

from featherface.verify.files import ModelFile

if TYPE_CHECKING:
    import torch.nn as nn

    from featherface.config import InputSize
    from featherface.quantization.accuracy import AccuracyCheck
    from featherface.quantization.pipeline import Int8Options

    from .coreml_export import Compression

Progress = Callable[[str], None]
T = TypeVar("T")


class BuildError(RuntimeError):
    """A build that cannot produce a verified bundle; the message says which file and why."""


@dataclass(frozen=True)
class ExportRequest:
    """What every exporter gets: the network, where to write, the input size, the metadata
    each file carries, and the options that only some targets read."""

    model: "nn.Module"
    stage: Path  # the bundle's staging directory: final files go here
    size: "InputSize"  # model input, pixels (an int N is taken as N x N)
    metadata: dict[str, str]  # manifest essentials embedded in each file
    progress: Progress
    int8: "Int8Options | None" = None  # pi4: how to make the INT8 files (None: FP32 and FP16 only)
    accuracy: "AccuracyCheck | None" = None  # pi4 INT8: the AP budget check (None: not checked)
    compression: "Compression | None" = None  # a14: the optional compressed files (None: none)

    def __post_init__(self) -> None:
        from featherface.config import InputSize

        object.__setattr__(self, "size", InputSize.of(self.size))  # an int N: N x N


Exporter = Callable[[ExportRequest], list[ModelFile]]


def timed(step: Callable[[], T]) -> tuple[T, float]:
    """`step()` and the seconds it took."""
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def exporters() -> Mapping[str, Exporter]:
    """Target name -> its exporter (imported here: each target module imports torch)."""
    from . import target_a14, target_onnx, target_pi4

    return {"onnx": target_onnx.convert, "pi4": target_pi4.convert, "a14": target_a14.convert}
