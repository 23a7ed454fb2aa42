"""A model file as the verification sees it, opened as a `Detector` whose output map is
found by shape (converters may rename and reorder outputs)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from featherface.config import DEPLOY_THRESHOLDS, MEAN_BGR, OUTPUT_NAMES, OUTPUT_WIDTHS, PRIORS, InputSize
from featherface.priors import anchor_count
from featherface.records import ParityRecord, QuantizationRecord
from featherface.sdk.detector import Detector, ModelSpec
from featherface.sdk.runtimes import Runtime, open_runtime


class OutputMapError(RuntimeError):
    """A file's outputs cannot be told apart by shape; the message lists them."""


@dataclass
class ModelFile:
    """One model file of a bundle: what it is and, once checked, its records."""

    path: Path
    format: str  # onnx | tflite | coreml
    precision: str  # a PARITY_THRESHOLDS key: fp32 | fp16 | w8 | p6 | a8w8 | dynamic_int8 | int8
    seconds: float  # conversion time
    image_input: bool = False  # Core ML image input (pixels, the mean is part of the program)
    record: ParityRecord | None = None  # against PyTorch, once checked
    quantization: QuantizationRecord | None = None  # how a quantized file was made
    output_map: dict[str, str] = field(default_factory=dict)  # found by shape when checked


# How a model file is opened for verification: the SDK's runtimes by default; the build
# passes one that also runs Core ML off macOS (converters.mil_eval).
OpenFile = Callable[[ModelFile, "int | None"], Runtime]


def open_with_sdk(model_file: ModelFile, num_threads: int | None = None) -> Runtime:
    return open_runtime(model_file.path, None, num_threads)


def map_outputs(raw: dict[str, np.ndarray], anchors: int) -> dict[str, str]:
    """Our output name -> the file's tensor name, by shape ([..., anchors, width]).

    Converters may rename and reorder outputs; the widths 4 / 2 / 10 tell them apart.
    """
    mapping = {}
    for name in OUTPUT_NAMES:
        candidates = [k for k, v in raw.items() if v.shape[-2:] == (anchors, OUTPUT_WIDTHS[name])]
        if len(candidates) != 1:
            shapes = {k: v.shape for k, v in raw.items()}
            raise OutputMapError(f"cannot identify output {name!r} by shape among {shapes}")
        mapping[name] = candidates[0]
    return mapping


def build_spec(size: int | InputSize, output_map: dict[str, str]) -> ModelSpec:
    """The pipeline of a file being built: the build's constants, which its manifest will hold
    (a finished bundle's files run with `ModelSpec.from_manifest` instead)."""
    return ModelSpec(input_size=InputSize.of(size), mean_bgr=MEAN_BGR, priors=PRIORS, thresholds=DEPLOY_THRESHOLDS,
                     output_map=output_map)


def open_file_detector(model_file: ModelFile, spec: ModelSpec, open_file: OpenFile = open_with_sdk,
                       num_threads: int | None = None) -> Detector:
    """The file as a `Detector` running `spec`; an empty output map is found by shape on its
    first run (`mapped_outputs`)."""
    return Detector(open_file(model_file, num_threads), spec, model_file.path.name)


def mapped_outputs(detector: Detector, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`raw` outputs as loc / conf / landmarks; a detector without an output map gets one by shape."""
    if not detector.spec.output_map:
        detector.spec = replace(detector.spec, output_map=map_outputs(raw, anchor_count(detector.spec.input_size)))
    return {name: raw[tensor] for name, tensor in detector.spec.output_map.items()}


def open_detector(model_file: ModelFile, inputs_nchw: np.ndarray, spec: ModelSpec,
                  open_file: OpenFile = open_with_sdk) -> tuple[Detector, dict[str, np.ndarray]]:
    """The file as a `Detector` running `spec` and its outputs on `inputs_nchw` (BGR minus
    mean) as loc / conf / landmarks."""
    detector = open_file_detector(model_file, spec, open_file)
    return detector, mapped_outputs(detector, detector.run_raw(inputs_nchw))
