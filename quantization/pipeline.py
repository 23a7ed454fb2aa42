"""The INT8 files of the pi4 bundle: dynamic-range INT8 and full INT8 within the AP budget.

Full INT8, step by step (each step's gain measured in docs/quantization.md):
1. calibration images preprocessed exactly as at inference (calibration.py);
2. cross-layer equalization of the backbone on its pre-activation ranges (equalize.py),
   exported and converted again to a float TFLite file that computes the same function;
3. moving-average min/max calibration and per-channel INT8 (tflite_int8.py);
4. per-layer sensitivity against the float file (sensitivity.py);
5. when WIDER FACE validation data is given: AP against PyTorch FP32 at the same input
   size, keeping the most sensitive groups in float until the budget holds
   (mixed_precision.py).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch.nn as nn

from featherface.config import CALIBRATION_IMAGES, QUANTIZERS, InputSize
from featherface.records import QuantizationRecord
from featherface.widerface import WiderAP

from .accuracy import AccuracyCheck, APBudget
from .calibration import calibration_record, calibration_set
from .graph import SAMPLING_GROUP, read_graph, sampling_ops
from .mixed_precision import BudgetNotMet, SearchResult, float_groups, search
from .sensitivity import layer_errors
from .tflite_int8 import Int8Recipe, calibrate, quantize, with_signature

Progress = Callable[[str], None]
EQUALIZATION_IMAGES = 32  # of the calibration set, for the backbone's channel ranges
SENSITIVITY_IMAGES = 4
SENSITIVITY_REPORTED = 20
BUDGET_NOT_CHECKED = "not checked (no WIDER FACE validation data)"


@dataclass(frozen=True)
class Int8Options:
    calibration: Path
    calibration_images: int = CALIBRATION_IMAGES
    weight_granularity: str = "channel"
    equalize: bool = True
    budget: APBudget = field(default_factory=APBudget)
    tool: str = QUANTIZERS[0]  # or "onnx2tf" (no mixed precision; INT8 input/output possible)
    io_type: str = "float32"  # onnx2tf only ("int8": INT8 input and outputs); ai-edge-quantizer always gives INT8
    threads: int = 2

    def __post_init__(self) -> None:
        if self.tool not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.tool!r}")


@dataclass
class Int8Result:
    full: Path
    dynamic: Path
    record: QuantizationRecord  # what was done, kept in float, measured: goes into the manifest


def calibration_inputs(options: Int8Options, size: InputSize, progress: Progress) -> np.ndarray:
    """[N, S, S, 3] calibration images, preprocessed as at inference."""
    progress(f"calibration: up to {options.calibration_images} images below {options.calibration}, SDK preprocessing")
    return calibration_set(options.calibration, size, options.calibration_images, layout="NHWC")


def equalized_model(model: nn.Module, calibration: np.ndarray) -> nn.Module:
    """The network the INT8 files are made from: a copy, its backbone equalized and its
    LeakyReLUs written as max(x, slope * x) (activations.py); same outputs."""
    from .activations import quantizable_activations
    from .equalize import equalize

    return quantizable_activations(equalize(model, np.ascontiguousarray(calibration[:EQUALIZATION_IMAGES].transpose(0, 3, 1, 2))))


def build_int8_onnx2tf(
    onnx_path: Path, float_tflite: Path, calibration: np.ndarray, stage: Path, size: InputSize,
    options: Int8Options, accuracy: AccuracyCheck | None, progress: Progress,
) -> Int8Result:
    """The onnx2tf route: one full-INT8 file, checked against the budget but not searched
    (onnx2tf cannot keep chosen ops in float)."""
    from .onnx2tf_int8 import quantize_onnx2tf

    started = time.perf_counter()
    dynamic_path = _dynamic_int8(float_tflite, stage, options, progress)
    progress(f"full INT8 with onnx2tf on {len(calibration)} images")
    full_path = quantize_onnx2tf(onnx_path, stage / "model_int8.tflite", size, calibration, options.weight_granularity, options.io_type)
    details: dict = {"calibration": calibration_record(options.calibration, len(calibration)), "ranges": "global min/max",
                     "weights": f"per-{options.weight_granularity}", "input_output": io_types(full_path)}
    if accuracy is None:
        details["budget"] = BUDGET_NOT_CHECKED
    else:
        reference, measured = accuracy.reference(progress), accuracy.of_path(full_path)
        details.update(budget=asdict(options.budget), reference_ap=reference.headline(), losses=options.budget.losses(reference, measured))
        if not options.budget.holds(reference, measured):
            raise BudgetNotMet([], details["losses"], options.budget, "onnx2tf cannot keep ops in float; the default quantizer can")
    details["seconds"] = round(time.perf_counter() - started, 1)
    return Int8Result(full_path, dynamic_path, QuantizationRecord("onnx2tf", details=details))


def io_types(path: Path) -> dict:
    """dtype and (scale, zero point) of the file's input and outputs: the SDK quantizes and
    dequantizes at the boundary from these, so INT8 I/O needs nothing from the caller."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))

    def describe(detail: dict) -> dict:
        scale, zero_point = detail["quantization"]
        return {"name": detail["name"], "dtype": detail["dtype"].__name__, **({"scale": scale, "zero_point": zero_point} if scale else {})}

    return {"input": describe(interpreter.get_input_details()[0]), "outputs": [describe(d) for d in interpreter.get_output_details()]}


def _dynamic_int8(float_tflite: Path, stage: Path, options: Int8Options, progress: Progress) -> Path:
    progress("dynamic-range INT8")
    return quantize(with_signature(float_tflite), stage / "model_dynamic_int8.tflite", Int8Recipe("dynamic", options.weight_granularity), None)


def _search_within_budget(groups: list, quantized: Callable[[tuple[str, ...]], Path], accuracy: AccuracyCheck,
                          budget: APBudget, progress: Progress) -> tuple[SearchResult, WiderAP]:
    """Keep the most sensitive groups float, one at a time, until the AP budget holds
    (mixed_precision.search): the search, and PyTorch FP32's AP it was measured against.
    Raises BudgetNotMet, which carries the steps, when even all groups float miss it."""
    reference = accuracy.reference(progress)

    def evaluate(scopes: tuple[str, ...]) -> tuple[WiderAP, int]:
        """AP of the candidate, and its size: what keeping groups float costs."""
        path = quantized(scopes)
        return accuracy.of_path(path), path.stat().st_size

    return search(groups, evaluate, reference, budget, progress), reference


def build_int8(
    float_tflite: Path, equalized_tflite: Path | None, calibration: np.ndarray, stage: Path,
    options: Int8Options, accuracy: AccuracyCheck | None, progress: Progress,
) -> Int8Result:
    """Write model_dynamic_int8.tflite and model_int8.tflite into `stage`.

    `float_tflite` is the bundle's FP32 file; `equalized_tflite` the FP32 file of the
    equalized network (None: quantize `float_tflite` as it is); `calibration` the
    preprocessed NHWC calibration images (`calibration_inputs`); `accuracy` the WIDER FACE
    check of the AP budget (None: the budget is not checked, parity alone judges the file).
    """
    started = time.perf_counter()
    details: dict = {
        "calibration": calibration_record(options.calibration, len(calibration)),
        "ranges": "moving-average min/max",
        "weights": f"per-{options.weight_granularity}",
        "equalization": "backbone, pre-activation ranges" if equalized_tflite else "off",
    }
    # Dynamic range quantizes activations too (per tensor, on the fly), so it suffers the
    # stem's small channels as full INT8 does: it is made from the equalized network as well.
    dynamic_path = _dynamic_int8(equalized_tflite or float_tflite, stage, options, progress)

    with tempfile.TemporaryDirectory(prefix="featherface-int8-") as scratch_name:
        scratch = Path(scratch_name)
        source = equalized_tflite or float_tflite
        float_model = with_signature(source)
        (scratch / "float.tflite").write_bytes(float_model)
        progress(f"calibrating activation ranges on {len(calibration)} images")
        ranges = calibrate(float_model, calibration, options.threads)

        candidate = scratch / "candidate.tflite"

        def quantized(scopes: tuple[str, ...]) -> Path:
            return quantize(float_model, candidate, Int8Recipe("full", options.weight_granularity, scopes), ranges)

        graph = read_graph(scratch / "float.tflite")
        # The deformable convolutions' sampling positions stay float: at stride 8 an 8-bit
        # position is off by whole pixels, and ai-edge-quantizer 0.10 cannot quantize their
        # clamps (MAXIMUM with a constant: "Ranks of scales (3) and zps (3) must be ...").
        index_math = tuple(op.scope for op in sampling_ops(graph))
        progress("full INT8; per-layer sensitivity against the float file")
        first = quantized(index_math)
        errors = layer_errors(graph, scratch / "float.tflite", first, calibration[:SENSITIVITY_IMAGES])
        groups = [g for g in float_groups(graph, errors) if g.name != SAMPLING_GROUP]
        details["float_groups"] = [{"name": g.name, "ops": len(g.scopes), "added_nmse": g.added_nmse} for g in groups]

        if accuracy is None:
            details["budget"] = BUDGET_NOT_CHECKED
            steps, kept_float, final = [], [], first
        else:
            result, reference = _search_within_budget(groups, lambda scopes: quantized(index_math + scopes), accuracy,
                                                      options.budget, progress)
            details.update(budget=asdict(options.budget), reference_ap=reference.headline())
            steps, kept_float = [step.to_record() for step in result.steps], result.final.kept_float
            final = candidate  # the last file the search evaluated: the one within budget
        details["kept_float_ops"] = len(index_math) + sum(len(g.scopes) for g in groups if g.name in kept_float)
        full_path = stage / "model_int8.tflite"
        full_path.write_bytes(final.read_bytes())
    details["input_output"] = io_types(full_path)
    details["seconds"] = round(time.perf_counter() - started, 1)
    record = QuantizationRecord("ai-edge-quantizer", kept_float=list(kept_float),
                                always_float={SAMPLING_GROUP: len(index_math)} if index_math else {},
                                sensitivity=errors[:SENSITIVITY_REPORTED], search=steps, details=details)
    return Int8Result(full_path, dynamic_path, record)
