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
     ("num_threads", 0), ("num_threads", "4"), ("score_threshold", True), ("top_k", True), ("top_k", np.float64(5))],
)
def test_bad_option_values_are_refused_naming_the_field(field, value):
    from featherface.sdk import DetectorOptions

    with pytest.raises(ValueError, match=f"DetectorOptions.{field} must be"):
        DetectorOptions(**{field: value})


def test_numpy_numbers_are_options_like_python_ones():
    """Thresholds often come out of NumPy (a percentile, a config array)."""
    from featherface.sdk import DetectorOptions

    options = DetectorOptions(score_threshold=np.float32(0.6), nms_iou=np.float64(0.3), top_k=np.int64(5), num_threads=np.int32(2))
    assert options.thresholds_over(DEPLOY_THRESHOLDS) == Thresholds(score=np.float32(0.6), nms_iou=0.3, top_k=5)


def test_options_override_the_bundles_thresholds_one_value_each(tiny_onnx_bundle):
    from featherface.sdk import Detector, DetectorOptions

    with Detector.load(tiny_onnx_bundle) as detector:
        assert detector.thresholds() == DEPLOY_THRESHOLDS  # the manifest's
    options = DetectorOptions(score_threshold=0.25, nms_iou=0.6, top_k=7, num_threads=1)
    with Detector.load(tiny_onnx_bundle, options) as detector:
        assert detector.thresholds() == Thresholds(score=0.25, nms_iou=0.6, top_k=7)


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


def test_a_with_options_detector_shares_the_runtime_without_owning_it(tiny_onnx_bundle, image):
    from featherface.sdk import Detector

    detector = Detector.load(tiny_onnx_bundle)
    strict = detector.with_options(score_threshold=0.9)
    strict.close()  # releases nothing: the detector it came from still runs
    assert strict.runtime is None and detector.runtime is not None
    detector.detect(image)
    loose = detector.with_options(score_threshold=0.1)
    detector.close()
    with pytest.raises(RuntimeError, match="is closed: the Detector it was made from with with_options was closed"):
        loose.detect(image)


def test_an_empty_batch_is_an_empty_list(tiny_onnx_bundle):
    from featherface.sdk import Detector

    with Detector.load(tiny_onnx_bundle) as detector:
        assert detector.detect_batch([]) == []


def test_a_letterbox_maps_no_points_to_no_points():
    from featherface.sdk.preprocess import Letterbox

    box = Letterbox(0.5, 3, 4, 8, 8)
    for rows in (np.zeros((0, 4)), np.zeros((0, 10))):
        assert box.to_image(rows).shape == rows.shape and box.to_model(rows).shape == rows.shape
