"""The one source of truth for every constant shared by training, export, SDK and bench.

Exporters copy the values that describe a model (input, priors, thresholds, outputs) into
each bundle's manifest, and the SDK takes those from the manifest, never from here, so a
bundle stays self-describing on a device. The SDK imports this module only for its types
and for fixed conventions (output names, the landmark count).
"""
from __future__ import annotations

from dataclasses import dataclass

# Input normalisation of every RetinaFace-family network here: BGR order, mean
# subtracted, no scaling (the published checkpoints were trained this way).
MEAN_BGR: tuple[float, float, float] = (104.0, 117.0, 123.0)
CHANNEL_ORDER = "BGR"

DEFAULT_INPUT_SIZE = 640  # square, pixels; must be divisible by the largest stride
MAX_INPUT_SIDE = 16384  # pixels: beyond it a typo, not a camera (its tensors would not fit in memory)
# Inference threads: the cap stops a typo before a runtime spawns thousands of threads
# (LiteRT then crashes, ONNX Runtime exhausts memory).
MAX_THREADS = 256

# Network outputs, in this order everywhere (torch forward, ONNX, TFLite, Core ML).
OUTPUT_NAMES: tuple[str, str, str] = ("loc", "conf", "landmarks")
OUTPUT_WIDTHS: dict[str, int] = {"loc": 4, "conf": 2, "landmarks": 10}
NUM_LANDMARKS = 5  # left eye, right eye, nose, left mouth corner, right mouth corner


@dataclass(frozen=True)
class PriorConfig:
    """Anchor ("prior") layout of RetinaFace: per level, anchors of each min size."""

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = False

    @property
    def anchors_per_location(self) -> int:
        return len(self.min_sizes[0])


PRIORS = PriorConfig()


@dataclass(frozen=True)
class InputSize:
    """A model input's width and height in pixels. A bundle's are multiples of the largest
    prior step (`parse` refuses others), so every pyramid level has whole cells and the
    torch, ONNX and TFLite grids agree; letterboxing alone takes any positive size.

    An int N means N x N: square bundles predate this type, and `--input-size 640` keeps
    meaning 640x640. str() is "640" for a square size (as protocol names always said) and
    "640x480" (width x height, as cameras name frames) otherwise.
    """

    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"input {name} must be a positive integer, got {value!r}")

    @classmethod
    def of(cls, size: "int | InputSize") -> "InputSize":
        """`size` as an InputSize; an int N is N x N."""
        return size if isinstance(size, InputSize) else cls(size, size)

    @classmethod
    def parse(cls, text: str) -> "InputSize":
        """"640" (640x640) or "WxH" such as "640x480"; ValueError names what was wrong."""
        parts = text.strip().lower().split("x")
        if len(parts) > 2 or not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"expected N or WxH (e.g. 640 or 640x480), got {text!r}")
        width, height = (int(part) for part in (parts * 2)[:2])
        stride = max(PRIORS.steps)
        for name, value in (("width", width), ("height", height)):
            if value > MAX_INPUT_SIDE:
                raise ValueError(f"input {name} must be at most {MAX_INPUT_SIDE}, got {value}")
            if value <= 0 or value % stride:
                below = value // stride * stride
                nearest = f"{below} or {below + stride}" if below else str(stride)
                raise ValueError(f"input {name} must be a positive multiple of {stride}, got {value} (nearest: {nearest})")
        return cls(width, height)

    @property
    def is_square(self) -> bool:
        return self.width == self.height

    def __str__(self) -> str:
        return str(self.width) if self.is_square else f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Thresholds:
    """Post-processing thresholds: score filter first, then NMS, then top-k."""

    score: float = 0.5
    nms_iou: float = 0.4
    top_k: int = 750  # detections kept after NMS


DEPLOY_THRESHOLDS = Thresholds()
# The WIDER FACE protocol of the paper: low confidence floor, NMS 0.4, no top-k cap.
WIDER_EVAL_THRESHOLDS = Thresholds(score=0.02, nms_iou=0.4, top_k=0)
# Full-INT8 tools, the default first (quantization/pipeline.py).
QUANTIZERS: tuple[str, ...] = ("ai-edge-quantizer", "onnx2tf")


@dataclass(frozen=True)
class ParityThresholds:
    """What a converted file must reach against PyTorch FP32 on real face images.

    Every output element must satisfy |file - torch| <= max(abs_tolerance,
    FLOAT32_NOISE_FACTOR x PyTorch FP32's own error against PyTorch FP64 on the same
    images): float32 summation order alone moves deep networks' outputs, so a file cannot be
    held closer to PyTorch FP32 than PyTorch FP32 is to the exact result (the figures behind
    the factor: docs/measurements.md). None: not checked (reduced precision, where detection
    agreement is the meaningful measure). Recall and precision are of the file's detections
    against PyTorch's, matched at IoU 0.5, in their robust form
    (featherface.verify.parity.detection_agreement): a score merely crossing the threshold is
    not a lost face.
    """

    abs_tolerance: float | None
    min_recall: float
    min_precision: float


# One place for every precision's bar; the converters, the SDK tests and the bench read it.
PARITY_THRESHOLDS: dict[str, ParityThresholds] = {
    "fp32": ParityThresholds(abs_tolerance=1e-4, min_recall=0.99, min_precision=0.99),
    "fp16": ParityThresholds(abs_tolerance=None, min_recall=0.99, min_precision=0.98),
    "w8": ParityThresholds(abs_tolerance=None, min_recall=0.97, min_precision=0.97),
    # 6-bit k-means palette per tensor (Core ML): w8's bar, not lowered (it holds it: docs/measurements.md).
    "p6": ParityThresholds(abs_tolerance=None, min_recall=0.97, min_precision=0.97),
    # Experimental INT8 activations + INT8 weights (Core ML): w8's bar, not lowered (as p6).
    "a8w8": ParityThresholds(abs_tolerance=None, min_recall=0.97, min_precision=0.97),
    "dynamic_int8": ParityThresholds(abs_tolerance=None, min_recall=0.97, min_precision=0.97),
    "int8": ParityThresholds(abs_tolerance=None, min_recall=0.95, min_precision=0.95),
}
FLOAT32_NOISE_FACTOR = 3.0
ORIENTATIONS = ("landscape", "portrait")  # `featherface eval --orientation`: photos wider or taller
PARITY_IMAGES = 48  # validation images each file is checked on: enough faces that one face moves recall by under 1 %
GOLDEN_IMAGES = 2  # real inputs stored with PyTorch's outputs for on-device parity

# Full INT8 is judged on WIDER FACE AP against PyTorch FP32 at the same input size (points).
INT8_AP_BUDGET: dict[str, float] = {"easy": 1.0, "medium": 1.0, "hard": 2.0}
CALIBRATION_IMAGES = 200

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Target:
    """A deployment target: what its bundle holds, and what the build prefers in it where
    nothing can be timed here (Core ML, which only an iPhone runs at speed)."""

    name: str
    format: str  # the model files' format: `featherface convert FORMAT` builds this target's FP32 file
    layout: str  # the float input layout of its files
    default_file: str  # the preferred file by the fixed rule


# Every target, in the order builds and reports list them: adding one is adding a row here
# and its exporter (converters.export.exporters).
TARGET_SPECS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", "onnx", "NCHW", "model.onnx"),
    Target("pi4", "tflite", "NHWC", "model_int8.tflite"),
    Target("a14", "coreml", "NCHW", "model_fp16.mlpackage"),
)}
TARGETS: tuple[str, ...] = tuple(TARGET_SPECS)
INPUT_NAME = "input"
IMAGE_INPUT_NAME = "image"  # the input of Core ML files that take a picture (mean as bias)
ONNX_OPSET = 17
