"""`Detector`: the same face-detection API over every bundle format and runtime.

Everything the pipeline needs (input size and layout, mean, priors, variances, output
mapping, default thresholds) comes from the bundle's manifest, never from defaults here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from featherface.config import PriorConfig, Thresholds
from featherface.records import FileEntry, Manifest

from .box_coding import make_priors
from .bundle import read_manifest, verified_checkpoint, verified_file
from .faces import Face, faces_from_arrays, postprocess_arrays
from .image_io import ImageSource, load_image
from .preprocess import Letterbox, preprocess
from .runtimes import Runtime, RuntimeUnavailable, TorchRuntime, open_runtime, require_torch


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline around a model file needs, as read from a manifest."""

    input_size: int
    mean_bgr: tuple[float, float, float]
    priors: PriorConfig
    thresholds: Thresholds
    output_map: dict[str, str]  # our output name -> the file's tensor name

    @classmethod
    def from_manifest(cls, manifest: Manifest, entry: FileEntry) -> "ModelSpec":
        if manifest.input.height != manifest.input.width:
            raise ValueError("only square inputs are supported")
        return cls(
            input_size=int(manifest.input.height),
            mean_bgr=tuple(float(m) for m in manifest.input.mean),
            priors=manifest.priors,
            thresholds=manifest.thresholds,
            output_map=dict(entry.output_map),
        )


class Detector:
    """Face detector over one model file of a bundle.

    >>> detector = Detector.load("dist/pi4")
    >>> faces = detector.detect("photo.jpg")  # boxes and landmarks in photo pixels
    """

    def __init__(self, runtime: Runtime, spec: ModelSpec, model_file: str = "") -> None:
        self.runtime = runtime
        self.spec = spec
        self.model_file = model_file
        self._priors = make_priors(spec.input_size, spec.input_size, spec.priors)

    @classmethod
    def load(
        cls, bundle_dir: str | Path, runtime: str | None = None, num_threads: int | None = None,
        file: str | None = None, weights: str | Path | None = None,
    ) -> "Detector":
        """Open a bundle's model file (default: its preferred one), verifying its sha256.

        runtime="torch" (implied by `weights`) runs the PyTorch reference instead: the
        manifest's `arch` with `weights` (default: the variant's own weights), refused
        unless it is the checkpoint the manifest records, when the manifest records one."""
        manifest = read_manifest(bundle_dir)
        if runtime == "torch" or weights is not None:
            return cls._load_torch(manifest, runtime, num_threads, file, weights)
        path, entry = verified_file(bundle_dir, manifest, file)
        return cls(open_runtime(path, runtime, num_threads), ModelSpec.from_manifest(manifest, entry), path.name)

    @classmethod
    def _load_torch(
        cls, manifest: Manifest, runtime: str | None, num_threads: int | None, file: str | None, weights: str | Path | None,
    ) -> "Detector":
        if runtime not in (None, "torch"):
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
        return cls(TorchRuntime(manifest.arch, path, names, num_threads), spec, path.name)

    def __enter__(self) -> "Detector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the runtime (interpreter or session)."""
        self.runtime = None  # type: ignore[assignment]

    def thresholds(self, score: float | None = None, nms: float | None = None, top_k: int | None = None) -> Thresholds:
        """The bundle's thresholds, with any given value overriding its own."""
        base = self.spec.thresholds
        return Thresholds(
            score=base.score if score is None else score,
            nms_iou=base.nms_iou if nms is None else nms,
            top_k=base.top_k if top_k is None else top_k,
        )

    def prepare(self, image: ImageSource, bgr: bool = False) -> tuple[np.ndarray, Letterbox]:
        """Load and letterbox one image to the model's input: (NCHW float32 batch of 1, letterbox).

        For an NHWC runtime the batch is an NCHW view of an NHWC buffer, so `infer` passes
        it on without a copy."""
        layout = self.runtime.input_layout
        batch, box = preprocess(load_image(image, bgr=bgr), self.spec.input_size, self.spec.mean_bgr, layout)
        return (batch.transpose(0, 3, 1, 2) if layout == "NHWC" else batch), box

    def run_raw(self, batch_nchw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a prepared NCHW batch: outputs by the file's own tensor names."""
        batch = batch_nchw.transpose(0, 2, 3, 1) if self.runtime.input_layout == "NHWC" else batch_nchw
        return self.runtime.run(np.ascontiguousarray(batch, dtype=np.float32))

    def infer(self, batch_nchw: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on a prepared NCHW batch: {"loc", "conf", "landmarks"}."""
        raw = self.run_raw(batch_nchw)
        return {name: raw[tensor] for name, tensor in self.spec.output_map.items()}

    def decode_arrays(
        self, outputs: dict[str, np.ndarray], index: int, letterbox: Letterbox, thresholds: Thresholds
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image `index` of a batch as arrays: boxes [K, 4], scores [K], landmarks [K, 10]."""
        size = self.spec.input_size
        return postprocess_arrays(
            outputs["loc"][index], outputs["conf"][index], outputs["landmarks"][index],
            self._priors, letterbox, size, size, thresholds, self.spec.priors.variances,
        )

    def decode(self, outputs: dict[str, np.ndarray], index: int, letterbox: Letterbox, thresholds: Thresholds) -> list[Face]:
        return faces_from_arrays(*self.decode_arrays(outputs, index, letterbox, thresholds))

    def detect(
        self, image: ImageSource, score_threshold: float | None = None, nms_threshold: float | None = None,
        top_k: int | None = None, bgr: bool = False,
    ) -> list[Face]:
        """Faces in `image` (path, PIL image, or HxWx3 uint8 RGB array; BGR with bgr=True),
        best first, in the image's own pixel coordinates. Thresholds default to the bundle's."""
        return self.detect_batch([image], score_threshold, nms_threshold, top_k, bgr)[0]

    def detect_batch(
        self, images: Sequence[ImageSource], score_threshold: float | None = None,
        nms_threshold: float | None = None, top_k: int | None = None, bgr: bool = False,
    ) -> list[list[Face]]:
        """`detect` over several images in one model call where the model allows batches."""
        thresholds = self.thresholds(score_threshold, nms_threshold, top_k)
        prepared = [self.prepare(image, bgr) for image in images]
        batches = [batch for batch, _ in prepared]
        outputs = self.infer(batches[0] if len(batches) == 1 else np.concatenate(batches))  # one image: no copy
        return [self.decode(outputs, i, letterbox, thresholds) for i, (_, letterbox) in enumerate(prepared)]
