"""`Detector`: the same face-detection API over every bundle format and runtime, and
`DetectorOptions`, what a caller may change about it.

Everything the pipeline needs (input size and layout, mean, priors, variances, output
mapping, default thresholds) comes from the bundle's manifest, never from defaults here.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Sequence

import numpy as np

from featherface.config import MAX_THREADS, InputSize, PriorConfig, Thresholds
from featherface.records import FileEntry, Manifest

from .box_coding import make_priors
from .bundle import read_manifest, verified_checkpoint, verified_file
from .faces import Face, faces_from_arrays, postprocess_arrays
from .image_io import ImageSource, load_image
from .preprocess import FrameWriter, Letterbox, preprocess
from .runtimes import TORCH, Runtime, RuntimeUnavailable, TorchRuntime, open_runtime, require_torch


def _is_number(value: object, kind: type) -> bool:
    """A Python or NumPy number of `kind` (numbers.Real, numbers.Integral), and not a bool."""
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class DetectorOptions:
    """What a caller may change about a `Detector`; None keeps the bundle's own value.

    score_threshold: a face is kept when its score (face probability, 0-1) is above this.
        Default: the manifest's `thresholds.score` (config.DEPLOY_THRESHOLDS in bundles built here).
    nms_iou: a face overlapping a higher-scoring one with an IoU above this (0-1) is
        dropped. Default: the manifest's `thresholds.nms_iou`.
    top_k: at most this many faces per image, best first, after NMS; 0 keeps all.
        Default: the manifest's `thresholds.top_k`.
    num_threads: inference threads of the runtime (>= 1). Default: the runtime's own
        choice. With the torch runtime it is per process: the last Detector opened sets it.
    """

    score_threshold: float | None = None
    nms_iou: float | None = None
    top_k: int | None = None
    num_threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("score_threshold", "nms_iou"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value, Real) and 0.0 <= value <= 1.0):
                raise ValueError(f"DetectorOptions.{name} must be a number in [0, 1], got {value!r}")
        if self.top_k is not None and not (_is_number(self.top_k, Integral) and self.top_k >= 0):
            raise ValueError(f"DetectorOptions.top_k must be an integer >= 0 (0: no cap), got {self.top_k!r}")
        if self.num_threads is not None and not (_is_number(self.num_threads, Integral) and 1 <= self.num_threads <= MAX_THREADS):
            raise ValueError(f"DetectorOptions.num_threads must be an integer from 1 to {MAX_THREADS}, got {self.num_threads!r}")

    def thresholds_over(self, bundle: Thresholds) -> Thresholds:
        """The bundle's thresholds with every value given here in its place."""
        return Thresholds(
            score=bundle.score if self.score_threshold is None else self.score_threshold,
            nms_iou=bundle.nms_iou if self.nms_iou is None else self.nms_iou,
            top_k=bundle.top_k if self.top_k is None else self.top_k,
        )


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline around a model file needs, as read from a manifest."""

    input_size: InputSize
    mean_bgr: tuple[float, float, float]
    priors: PriorConfig
    thresholds: Thresholds
    output_map: dict[str, str]  # our output name -> the file's tensor name

    @classmethod
    def from_manifest(cls, manifest: Manifest, entry: FileEntry) -> "ModelSpec":
        return cls(
            input_size=InputSize(int(manifest.input.width), int(manifest.input.height)),
            mean_bgr=tuple(float(m) for m in manifest.input.mean),
            priors=manifest.priors,
            thresholds=manifest.thresholds,
            output_map=dict(entry.output_map),
        )


@dataclass(frozen=True)
class VideoFaces:
    """The faces of one video frame, with the frame's timestamp (milliseconds, the caller's clock)."""

    timestamp_ms: float
    faces: list[Face]


@dataclass(frozen=True)
class StageSeconds:
    """Where one `detect` spent its time: letterboxing into the input, the model, decoding."""

    pre: float
    model: float
    post: float

    @property
    def total(self) -> float:
        return self.pre + self.model + self.post


class _SharedRuntime:
    """A detector's open runtime, shared with the detectors `with_options` makes from it."""

    def __init__(self, runtime: Runtime | None) -> None:
        self.runtime = runtime


class Detector:
    """Face detector over one model file of a bundle.

    >>> with Detector.load("dist/pi4", DetectorOptions(score_threshold=0.6)) as detector:
    ...     faces = detector.detect("photo.jpg")  # boxes and landmarks in photo pixels

    `detect` letterboxes every frame into one input buffer that it reuses, so a stream of
    frames allocates no tensors; a Detector is therefore for one thread at a time (as the
    runtimes' interpreters are).
    """

    def __init__(self, runtime: Runtime, spec: ModelSpec, model_file: str = "", options: DetectorOptions | None = None) -> None:
        self._shared = _SharedRuntime(runtime)
        self._owns_runtime, self._closed = True, False
        self.spec = spec
        self.model_file = model_file
        self.options = options or DetectorOptions()
        self._priors = make_priors(spec.input_size.height, spec.input_size.width, spec.priors)
        self._frames: FrameWriter | None = None  # made on the first detect, for the runtime's input
        self._last_timestamp_ms: float | None = None

    @classmethod
    def load(
        cls, bundle_dir: str | Path, options: DetectorOptions | None = None, *, runtime: str | None = None,
        file: str | None = None, weights: str | Path | None = None, num_threads: int | None = None,
    ) -> "Detector":
        """Open a bundle's model file (default: its preferred one), verifying its sha256.

        `num_threads` is `options.num_threads` given on its own. runtime="torch" (implied by
        `weights`) runs the PyTorch reference instead: the manifest's `arch` with `weights`
        (default: the variant's own weights), refused unless it is the checkpoint the
        manifest records, when the manifest records one."""
        options = options or DetectorOptions()
        if num_threads is not None:
            options = replace(options, num_threads=num_threads)
        manifest = read_manifest(bundle_dir)
        if runtime == TORCH.name or weights is not None:
            return cls._load_torch(manifest, runtime, options, file, weights)
        path, entry = verified_file(bundle_dir, manifest, file)
        return cls(open_runtime(path, runtime, options.num_threads), ModelSpec.from_manifest(manifest, entry), path.name, options)

    @classmethod
    def _load_torch(
        cls, manifest: Manifest, runtime: str | None, options: DetectorOptions, file: str | None, weights: str | Path | None,
    ) -> "Detector":
        if runtime not in (None, TORCH.name):
            raise RuntimeUnavailable(f"runtime {runtime!r} cannot run checkpoint {weights}; checkpoints run with runtime 'torch'")
        if file is not None:
            raise ValueError(f"file={file!r} picks a model file of the bundle, and the torch runtime runs none: give one or the other")
        require_torch()
        if weights is None:
            from featherface.model.registry import get_variant

            weights = get_variant(manifest.arch).find_default_weights()
            if weights is None:
                built_from = f" (this bundle was built from {manifest.checkpoint.name})" if manifest.checkpoint else ""
                raise RuntimeUnavailable(f"no default weights for {manifest.arch} here: pass weights=PATH{built_from}")
        path = verified_checkpoint(manifest, weights)
        names = [output.name for output in manifest.outputs]  # the network's outputs, in its order
        spec = replace(ModelSpec.from_manifest(manifest, manifest.files[0]), output_map={name: name for name in names})
        return cls(TorchRuntime(manifest.arch, path, names, options.num_threads), spec, path.name, options)

    def with_options(self, **changes) -> "Detector":
        """This detector (the same open runtime) with some options changed, e.g.
        `detector.with_options(score_threshold=0.9)`; threads are fixed when the runtime opens."""
        if "num_threads" in changes:
            raise ValueError("num_threads is fixed when the runtime opens: pass it to Detector.load")
        derived = Detector(self._open_runtime(), self.spec, self.model_file, replace(self.options, **changes))
        derived._shared, derived._owns_runtime = self._shared, False  # closing it leaves this one open
        return derived

    @property
    def runtime(self) -> Runtime | None:
        """The open runtime; None once this detector, or the one it was made from, is closed."""
        return None if self._closed else self._shared.runtime

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the runtime (interpreter, session or network); the detector, and those made
        from it by `with_options`, run no more. Closing a `with_options` detector releases nothing."""
        self._closed = True
        if self._owns_runtime:
            runtime, self._shared.runtime = self._shared.runtime, None
            if runtime is not None and hasattr(runtime, "close"):
                runtime.close()

    def _open_runtime(self) -> Runtime:
        runtime = self.runtime
        if runtime is None:
            why = "" if self._closed else ": the Detector it was made from with with_options was closed"
            raise RuntimeError(f"this Detector ({self.model_file}) is closed{why}")
        return runtime

    def thresholds(self) -> Thresholds:
        """The thresholds in force: the options over the bundle's."""
        return self.options.thresholds_over(self.spec.thresholds)

    def prepare(self, image: ImageSource, bgr: bool = False) -> tuple[np.ndarray, Letterbox]:
        """Load and letterbox one image to the model's input: (NCHW float32 batch of 1, letterbox).

        For an NHWC runtime the batch is an NCHW view of an NHWC buffer, so `infer` passes
        it on without a copy."""
        layout = self._open_runtime().input_layout
        batch, box = preprocess(load_image(image, bgr=bgr), self.spec.input_size, self.spec.mean_bgr, layout)
        return (batch.transpose(0, 3, 1, 2) if layout == "NHWC" else batch), box

    def frame_input(self, image: ImageSource, bgr: bool = False) -> tuple[np.ndarray, Letterbox]:
        """One image letterboxed straight into the runtime's own input (its layout and dtype,
        e.g. INT8 NHWC): (that tensor, letterbox). The tensor is a buffer reused by every call,
        valid until the next one; `run_input` takes it as it is."""
        runtime = self._open_runtime()
        if self._frames is None:
            self._frames = FrameWriter(self.spec.input_size, self.spec.mean_bgr, runtime.input_layout,
                                       runtime.input_dtype, runtime.quantize)
        return self._frames.write(load_image(image, bgr=bgr))

    def run_input(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a `frame_input` tensor: {"loc", "conf", "landmarks"}."""
        raw = self._open_runtime().run(tensor)
        return {name: raw[tensor_name] for name, tensor_name in self.spec.output_map.items()}

    def runtime_batch(self, batch_nchw: np.ndarray) -> np.ndarray:
        """A prepared NCHW batch as the runtime takes it: float32, C-contiguous, in its layout
        (no copy for `prepare`'s own batches)."""
        batch = batch_nchw.transpose(0, 2, 3, 1) if self._open_runtime().input_layout == "NHWC" else batch_nchw
        return np.ascontiguousarray(batch, dtype=np.float32)

    def run_raw(self, batch_nchw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a prepared NCHW batch: outputs by the file's own tensor names."""
        return self._open_runtime().run(self.runtime_batch(batch_nchw))

    def infer(self, batch_nchw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a prepared NCHW batch: {"loc", "conf", "landmarks"}."""
        return self.run_input(self.runtime_batch(batch_nchw))

    def decode_arrays(
        self, outputs: dict[str, np.ndarray], index: int, letterbox: Letterbox, thresholds: Thresholds | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image `index` of a batch as arrays: boxes [K, 4], scores [K], landmarks [K, 10];
        `thresholds` default to the ones in force (`thresholds()`)."""
        size = self.spec.input_size
        return postprocess_arrays(
            outputs["loc"][index], outputs["conf"][index], outputs["landmarks"][index],
            self._priors, letterbox, size.height, size.width, thresholds or self.thresholds(), self.spec.priors.variances,
        )

    def decode(self, outputs: dict[str, np.ndarray], index: int, letterbox: Letterbox, thresholds: Thresholds | None = None) -> list[Face]:
        return faces_from_arrays(*self.decode_arrays(outputs, index, letterbox, thresholds))

    def detect(self, image: ImageSource, bgr: bool = False) -> list[Face]:
        """Faces in `image` (path, PIL image, or HxWx3 uint8 RGB array; BGR with bgr=True),
        best first, in the image's own pixel coordinates, at the thresholds in force.
        Equal to `decode(run_input(frame_input(image)))`, the three stages the bench times."""
        tensor, letterbox = self.frame_input(image, bgr)
        return self.decode(self.run_input(tensor), 0, letterbox)

    def detect_timed(self, image: ImageSource, bgr: bool = False, thresholds: Thresholds | None = None) -> tuple[list[Face], StageSeconds]:
        """`detect` (at `thresholds`, default the ones in force) with the seconds of each of its
        three stages: what featherface-pi prints and the bench times."""
        start = time.perf_counter()
        tensor, letterbox = self.frame_input(image, bgr)
        prepared_at = time.perf_counter()
        outputs = self.run_input(tensor)
        ran_at = time.perf_counter()
        faces = self.decode(outputs, 0, letterbox, thresholds)
        decoded_at = time.perf_counter()
        return faces, StageSeconds(prepared_at - start, ran_at - prepared_at, decoded_at - ran_at)

    def detect_for_video(self, frame: ImageSource, timestamp_ms: float, bgr: bool = False) -> list[Face]:
        """`detect` on one frame of a video or camera stream (MediaPipe's video mode):
        `timestamp_ms` must increase from frame to frame (ValueError otherwise), so that
        results can be matched to frames; every frame reuses the same input buffer."""
        if self._last_timestamp_ms is not None and timestamp_ms <= self._last_timestamp_ms:
            raise ValueError(f"video timestamps must increase: {timestamp_ms} ms after {self._last_timestamp_ms} ms")
        faces = self.detect(frame, bgr)
        self._last_timestamp_ms = timestamp_ms
        return faces

    def detect_video(self, frames: Iterable[tuple[float, ImageSource]], bgr: bool = False) -> Iterator[VideoFaces]:
        """`detect_for_video` over (timestamp_ms, frame) pairs, lazily: one `VideoFaces` per frame.

        >>> for result in detector.detect_video(camera_frames()):  # yields (ms, RGB array)
        ...     print(result.timestamp_ms, len(result.faces))
        """
        for timestamp_ms, frame in frames:
            yield VideoFaces(timestamp_ms, self.detect_for_video(frame, timestamp_ms, bgr))

    def detect_batch(self, images: Sequence[ImageSource], bgr: bool = False) -> list[list[Face]]:
        """`detect` over several images in one model call where the model allows batches."""
        if len(images) == 0:
            return []
        if len(images) == 1:
            return [self.detect(images[0], bgr)]
        prepared = [self.prepare(image, bgr) for image in images]
        batches = [batch for batch, _ in prepared]
        outputs = self.infer(np.concatenate(batches))
        thresholds = self.thresholds()
        return [self.decode(outputs, i, letterbox, thresholds) for i, (_, letterbox) in enumerate(prepared)]
