"""One small interface over the inference runtimes: LiteRT, ONNX Runtime, Core ML, torch.

The runtime follows from the model file's format. Each returns raw outputs by the file's
own tensor names; mapping them to `loc` / `conf` / `landmarks` is the manifest's job.
Heavy runtimes are imported only when a file of their format is opened; torch runs the
network itself from its checkpoint (the reference the converted files were checked against).
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np


class RuntimeUnavailable(RuntimeError):
    """The runtime a model file needs is not installed or cannot run on this machine."""


class ModelFileError(ValueError):
    """A model file its runtime refuses to load (damaged, or not the format its name says)."""


class Runtime(Protocol):
    input_layout: str  # "NCHW" or "NHWC"
    input_dtype: np.dtype  # float32, or a full-INT8 file's integer input

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float input values as `input_dtype` (identity for a float input)."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch, float32 or already in `input_dtype`; returns outputs by the file's tensor names."""

    def close(self) -> None:
        """Release the interpreter, session or network (memory, threads)."""


def _litert_interpreter_class():
    """LiteRT's interpreter, falling back to tflite-runtime, then tensorflow.lite."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError:
        raise RuntimeUnavailable(LITERT.not_installed) from None


class FloatInput:
    """The input of every runtime but a full-INT8 LiteRT file: float32."""

    input_dtype = np.dtype(np.float32)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)


class LiteRTRuntime:
    input_layout = "NHWC"

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        interpreter_class = _litert_interpreter_class()
        self.interpreter = interpreter_class(model_path=str(path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        (self.input,) = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_layout = "NHWC" if int(self.input["shape"][-1]) == 3 else "NCHW"
        self.input_dtype = np.dtype(self.input["dtype"])

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return quantize_to(x, self.input)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results: list[dict[str, np.ndarray]] = []
        # Converted files have a static batch of one: run images one at a time.
        for image in batch:
            ready = image[None] if image.dtype == self.input_dtype else quantize_to(image[None], self.input)
            self.interpreter.set_tensor(self.input["index"], ready)
            self.interpreter.invoke()
            results.append({o["name"]: dequantize(self.interpreter.get_tensor(o["index"]), o) for o in self.outputs})
        if len(results) == 1:  # a camera frame: no concatenated copy
            return results[0]
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def close(self) -> None:
        self.interpreter = None


def quantize_to(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float values in a LiteRT tensor's dtype, by its (scale, zero point); identity for
    float tensors."""
    if detail["dtype"] == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """A LiteRT tensor's values as float32: integer tensors without a scale (indices)
    keep their values."""
    if np.issubdtype(x.dtype, np.floating) or not detail["quantization"][0]:
        return x.astype(np.float32, copy=False)
    scale, zero_point = detail["quantization"]
    return ((x.astype(np.float32) - zero_point) * scale).astype(np.float32)


class OnnxRuntime(FloatInput):
    input_layout = "NCHW"

    def __init__(self, path: str | Path, num_threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable(ONNXRUNTIME.not_installed) from None
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_layout = "NHWC" if self.session.get_inputs()[0].shape[-1] == 3 else "NCHW"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: batch.astype(np.float32, copy=False)})
        return dict(zip(self.output_names, values))

    def close(self) -> None:
        self.session = None


class CoreMLRuntime(FloatInput):
    input_layout = "NCHW"

    def __init__(self, path: str | Path, num_threads: int | None = None, compute_units: str = "ALL") -> None:
        if platform.system() != "Darwin":
            raise RuntimeUnavailable(
                f"Core ML runs only on macOS/iOS; to check {Path(path).name} here use the "
                "bundle's other formats (onnx, tflite) or the build's Core ML evaluator"
            )
        try:
            import coremltools as ct
        except ImportError:
            raise RuntimeUnavailable(COREML.not_installed) from None
        self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))
        self.input_name = self.model.get_spec().description.input[0].name

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        results = [self.model.predict({self.input_name: image[None]}) for image in batch]
        return {name: np.concatenate([np.asarray(r[name], np.float32) for r in results]) for name in results[0]}

    def close(self) -> None:
        self.model = None


class TorchRuntime(FloatInput):
    """The PyTorch network of a registered variant with a checkpoint loaded strictly
    (featherface.model's one loader: weights_only, keys and shapes checked, NaN refused)."""

    input_layout = "NCHW"

    def __init__(self, arch: str, weights: str | Path, output_names: Sequence[str], num_threads: int | None = None) -> None:
        import torch

        from featherface.model.registry import create_model

        if num_threads:  # per process in torch: the last torch Detector opened sets it
            torch.set_num_threads(num_threads)
        self.model = create_model(arch, weights)
        self.output_names = tuple(output_names)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            outputs = self.model(torch.from_numpy(batch))
        return {name: tensor.numpy() for name, tensor in zip(self.output_names, outputs, strict=True)}

    def close(self) -> None:
        self.model = None


def require_torch() -> None:
    """Refuse the torch runtime clearly where torch is absent (a device SDK install)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise RuntimeUnavailable(
            f"{TORCH.not_installed}, or run the bundle's own model files (onnxruntime, LiteRT) without runtime='torch'"
        ) from None


@dataclass(frozen=True)
class RuntimeSpec:
    """One runtime as the SDK, the `featherface detect --runtime` choices, the bench's
    availability check and its device report know it: `RUNTIMES` is the one list."""

    name: str  # as `Detector.load(runtime=...)` and `--runtime` take it
    suffixes: tuple[str, ...]  # the model files it runs
    modules: tuple[str, ...]  # any one of them importable provides it (LiteRT's: _litert_interpreter_class's three)
    packages: tuple[str, ...]  # pip distributions whose versions a bench report shows
    missing: str  # what is wrong when none of `modules` is installed
    install: str  # how to fix that
    opener: Callable[..., Runtime] | None  # opens a file alone; None: torch runs a checkpoint from a bundle

    @property
    def not_installed(self) -> str:
        return f"{self.missing}: {self.install}"

    def installed(self) -> bool:
        """Whether one of `modules` is importable here, found without importing it."""
        return any(_importable(module) for module in self.modules)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


LITERT = RuntimeSpec(
    "litert", (".tflite",), ("ai_edge_litert", "tflite_runtime", "tensorflow"), ("ai-edge-litert", "tflite-runtime"),
    "no TFLite runtime installed", "pip install ai-edge-litert (or tflite-runtime)", LiteRTRuntime)
ONNXRUNTIME = RuntimeSpec(
    "onnxruntime", (".onnx",), ("onnxruntime",), ("onnxruntime",),
    "onnxruntime is not installed", "pip install onnxruntime", OnnxRuntime)
COREML = RuntimeSpec(
    "coreml", (".mlpackage",), ("coremltools",), ("coremltools",),
    "coremltools is not installed", "pip install coremltools", CoreMLRuntime)
TORCH = RuntimeSpec(
    "torch", (".pth", ".pt", ".safetensors"), ("torch",), ("torch",),
    "the torch runtime needs PyTorch, which is not installed", "pip install 'featherface[torch]'", None)
RUNTIMES: tuple[RuntimeSpec, ...] = (LITERT, ONNXRUNTIME, COREML, TORCH)


def runtime_for(path: str | Path) -> RuntimeSpec:
    """The runtime a model file's suffix needs."""
    suffix = Path(path).suffix
    for runtime in RUNTIMES:
        if suffix in runtime.suffixes:
            return runtime
    known = ", ".join(s for runtime in RUNTIMES for s in runtime.suffixes)
    raise ValueError(f"unknown model file type {suffix!r} for {path}; expected one of {known}")


def runtime_name_for(path: str | Path) -> str:
    return runtime_for(path).name


def open_runtime(path: str | Path, runtime: str | None = None, num_threads: int | None = None) -> Runtime:
    """Open a model file with the runtime its format needs; a runtime named for a file of
    another format is refused (one runtime per format: naming another is a mistake)."""
    expected = runtime_for(path)
    name = runtime or expected.name
    if name != expected.name:
        raise RuntimeUnavailable(
            f"runtime {name!r} cannot open {Path(path).name}, which needs {expected.name!r}; leave the runtime unset"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if expected.opener is None:  # a checkpoint: the torch runtime opens it from a bundle (Detector.load)
        raise RuntimeUnavailable(f"runtime {name!r} cannot open {path} on its own; use Detector.load(bundle, weights=...)")
    try:
        return expected.opener(path, num_threads)
    except RuntimeUnavailable:
        raise
    except Exception as err:  # each runtime fails in its own way (ONNX Runtime: not even a RuntimeError)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: {name} cannot load this model file ({first})") from None
