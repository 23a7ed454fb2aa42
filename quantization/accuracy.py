"""WIDER FACE AP of a quantized file against PyTorch FP32 at the same input size, and the
AP budget a quantized file must hold."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from featherface.config import INT8_AP_BUDGET, WIDER_EVAL_THRESHOLDS, InputSize
from featherface.evaluation import DetectFn, detector_detect_fn, evaluate_detector
from featherface.records import ManifestAP
from featherface.sdk.detector import Detector
from featherface.sdk.runtimes import open_runtime
from featherface.verify.files import build_spec, mapped_outputs
from featherface.widerface import SETTINGS, WiderAP


@dataclass(frozen=True)
class APBudget:
    """The most AP (in points, 0-100) a quantized file may lose against PyTorch FP32."""

    easy: float = INT8_AP_BUDGET["easy"]
    medium: float = INT8_AP_BUDGET["medium"]
    hard: float = INT8_AP_BUDGET["hard"]

    def losses(self, reference: WiderAP, candidate: WiderAP) -> dict[str, float]:
        """AP points lost per setting (negative: the file did better)."""
        return {s: round(100 * (getattr(reference, s) - getattr(candidate, s)), 3) for s in SETTINGS}

    def holds(self, reference: WiderAP, candidate: WiderAP) -> bool:
        losses = self.losses(reference, candidate)
        return all(losses[s] <= getattr(self, s) for s in SETTINGS)

    def describe(self) -> str:
        return f"easy {self.easy}, medium {self.medium}, hard {self.hard} AP points"


def model_file_detect_fn(path: str | Path, size: InputSize, num_threads: int | None = None) -> DetectFn:
    """A WIDER FACE detect function over a model file being built (any runtime of the SDK):
    `detector_detect_fn`, once its outputs are told apart by shape (it has no manifest yet)."""
    detector = Detector(open_runtime(path, num_threads=num_threads), build_spec(size, {}), Path(path).name)
    mapped_outputs(detector, detector.run_raw(np.zeros((1, 3, size.height, size.width), np.float32)))
    return detector_detect_fn(detector)


def wider_ap(detect: DetectFn, widerface_root: str | Path, progress: Callable[[str], None] | None = None) -> WiderAP:
    """Easy / medium / hard AP of `detect` on every WIDER_val image, predictions in a scratch
    directory."""
    with tempfile.TemporaryDirectory(prefix="featherface-ap-") as scratch:
        return evaluate_detector(detect, widerface_root, scratch, progress=progress)


def manifest_ap(ap: WiderAP, status: str | None = None) -> ManifestAP:
    """The manifest's AP record (`reference_accuracy`, each file's `accuracy`): no wall time,
    which would make two builds of the same files differ."""
    return ManifestAP(status=status, protocol=ap.protocol or None, **ap.by_setting(), images=ap.images,
                      curves={s: dict(curve) for s, curve in ap.curves.items()})


class AccuracyCheck:
    """WIDER FACE AP (deployment protocol: letterboxed to the bundle's size) of model files
    against PyTorch FP32 at the same size; PyTorch's AP is computed once and shared."""

    def __init__(self, data: str | Path, model, size: InputSize, threads: int | None = 2) -> None:
        self.data, self.model, self.size, self.threads = Path(data), model, size, threads
        self._reference: WiderAP | None = None
        self._measured: dict[str, WiderAP] = {}  # sha256 -> AP: the INT8 search's last file ships as is

    @property
    def protocol(self) -> str:
        from featherface.evaluation import protocol_name

        return protocol_name(self.size)

    def reference(self, progress: Callable[[str], None] = lambda _: None) -> WiderAP:
        if self._reference is None:
            from featherface.training.evaluate import detect_for_eval

            progress(f"WIDER val AP of PyTorch FP32 ({self.protocol})")
            model, size = self.model, self.size
            result = wider_ap(lambda rgb: detect_for_eval(model, rgb, size, WIDER_EVAL_THRESHOLDS), self.data)
            self._reference = replace(result, protocol=self.protocol)
        return self._reference

    def manifest_reference(self, progress: Callable[[str], None] = lambda _: None) -> ManifestAP:
        """The manifest's `reference_accuracy`."""
        return manifest_ap(self.reference(progress))

    def of_path(self, path: Path) -> WiderAP:
        """AP of one file (measured once per content)."""
        from featherface.sdk.bundle import sha256_of

        digest = sha256_of(path)
        if digest not in self._measured:
            result = wider_ap(model_file_detect_fn(path, self.size, self.threads), self.data)
            self._measured[digest] = replace(result, protocol=self.protocol)
        return self._measured[digest]

    def of_file(self, model_file, progress: Callable[[str], None] = lambda _: None) -> ManifestAP:
        """The file's manifest `accuracy`: its AP and the difference to PyTorch in points."""
        import platform

        if model_file.format == "coreml" and platform.system() != "Darwin":
            return ManifestAP(status="not measured", reason="Core ML runs only on macOS (parity was checked with the MIL evaluator)")
        reference = manifest_ap(self.reference(progress))
        progress(f"WIDER val AP of {model_file.path.name} ({self.protocol})")
        measured = manifest_ap(self.of_path(model_file.path), status="measured")
        return replace(measured, delta_vs_torch={s: round(d, 2) for s, d in measured.delta_points(reference).items()})
