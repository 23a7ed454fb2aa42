"""The build's default preferred file: the fastest model on the build machine, by the
report's "what to ship" rule (`featherface.choice.fastest`). On the device `featherface bench
--pick` chooses again: an x86 core and a Cortex-A72 do not rank INT8 and FP32 alike."""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np

from featherface.choice import fastest
from featherface.config import TARGET_SPECS, InputSize
from featherface.records import PreferredBy
from featherface.verify.files import ModelFile, build_spec, open_file_detector

from .report_golden import model_p50_ms


def preferred_here(target: str, candidates: list[ModelFile], inputs_nchw: np.ndarray, size: InputSize,
                   open_file: Callable, progress: Callable[[str], None]) -> tuple[str, PreferredBy | None]:
    """(preferred file name, how it was chosen or None for the fixed rule)."""
    names = [f.path.name for f in candidates]
    if target == "a14" or len(candidates) == 1:
        # Core ML runs here only through our MIL evaluator, whose speed says nothing about an iPhone.
        default = TARGET_SPECS[target].default_file
        return (default if default in names else names[0]), None
    from featherface.bench.device import describe_device

    progress(f"timing {', '.join(names)} (model only, 1 thread, interleaved) to choose the preferred file")
    with ExitStack() as opened:
        detectors = {f.path.name: opened.enter_context(open_file_detector(f, build_spec(size, {}), open_file, num_threads=1))
                     for f in candidates}
        times = model_p50_ms(detectors, inputs_nchw[:1])
    choice = fastest(times, {f.path.name: f.path.stat().st_size for f in candidates})
    return choice, PreferredBy("featherface build", describe_device().line(), time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                               threads=1, model_p50_ms=times)

