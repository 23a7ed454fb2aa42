"""`DetectorOptions`: one documented name per value (score threshold, NMS IoU, top-k,
threads), validated where it is made, applied by every detect; `close()` releases the
runtime; `featherface.sdk` exports the three names a caller needs."""
from __future__ import annotations

import numpy as np
import pytest

from featherface.config import DEPLOY_THRESHOLDS, Thresholds


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)


def test_the_sdk_exports_detector_options_and_face():
    import featherface.sdk as sdk
    from featherface.sdk import Detector, DetectorOptions, Face

    assert sdk.__all__ == ["Detector", "DetectorOptions", "Face", "VideoFaces"]
    assert Detector.__module__ == "featherface.sdk.detector" and Face.__module__ == "featherface.sdk.faces"
    assert DetectorOptions().thresholds_over(DEPLOY_THRESHOLDS) == DEPLOY_THRESHOLDS


@pytest.mark.parametrize(
    "field, value",
    [("score_threshold", 1.5), ("score_threshold", -0.1), ("nms_iou", 2), ("top_k", -1), ("top_k", 2.5),
     ("num_threads", 0), ("num_threads", "4")],
)
def test_bad_option_values_are_refused_naming_the_field(field, value):
    from featherface.sdk import DetectorOptions

    with pytest.raises(ValueError, match=f"DetectorOptions.{field} must be"):
        DetectorOptions(**{field: value})


def test_options_override_the_bundles_thresholds_one_value_each(tiny_onnx_bundle):
    from featherface.sdk import Detector, DetectorOptions

    with Detector.load(tiny_onnx_bundle) as detector:
        assert detector.thresholds() == DEPLOY_THRESHOLDS  # the manifest's
    options = DetectorOptions(score_threshold=0.25, nms_iou=0.6, top_k=7, num_threads=1)
    with Detector.load(tiny_onnx_bundle, options) as detector:
        assert detector.thresholds() == Thresholds(score=0.25, nms_iou=0.6, top_k=7)
        assert detector.thresholds(score=0.9) == Thresholds(score=0.9, nms_iou=0.6, top_k=7)


def test_every_detect_applies_the_options(tiny_onnx_bundle, image):
    from featherface.sdk import Detector, DetectorOptions

    with Detector.load(tiny_onnx_bundle, DetectorOptions(score_threshold=0.0, nms_iou=1.0, top_k=0)) as everything:
        all_faces = everything.detect(image)
        assert len(all_faces) > 5  # random weights: every anchor scores above 0
        capped = everything.with_options(top_k=5)
        assert capped.detect(image) == all_faces[:5]
        assert capped.detect_batch([image, image]) == [all_faces[:5]] * 2
        strict = everything.with_options(score_threshold=0.999999)
        assert strict.detect(image) == [f for f in all_faces if f.score > 0.999999]


def test_close_releases_the_runtime_and_a_closed_detector_says_so(tiny_onnx_bundle, image):
    from featherface.sdk import Detector

    with Detector.load(tiny_onnx_bundle) as detector:
        runtime = detector.runtime
        assert runtime.session is not None
        detector.detect(image)
    assert detector.runtime is None and runtime.session is None  # the ONNX Runtime session is gone
    with pytest.raises(RuntimeError, match="is closed"):
        detector.detect(image)
    detector.close()  # closing twice is harmless
