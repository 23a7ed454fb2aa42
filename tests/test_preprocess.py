"""Letterbox geometry, exact coordinate mapping, BGR-minus-mean normalisation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from featherface.config import MEAN_BGR
from featherface.sdk.preprocess import (
    Letterbox,
    letterbox,
    normalize,
    preprocess,
    preprocess_original_size,
)

MEAN_RGB = tuple(int(v) for v in MEAN_BGR[::-1])
COLOUR = (200, 50, 10)


def solid(height: int, width: int, colour=COLOUR) -> np.ndarray:
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = colour
    return image


# --- letterbox ------------------------------------------------------------------------


def test_wide_image_scales_to_the_longer_side_at_the_top_left():
    canvas, box = letterbox(solid(100, 200), 64)
    assert box == Letterbox(scale=0.32, pad_x=0, pad_y=0, image_width=200, image_height=100)
    assert canvas.shape == (64, 64, 3) and canvas.dtype == np.uint8
    assert (canvas[:32, :64] == COLOUR).all()
    assert (canvas[32:] == MEAN_RGB).all()  # padding = mean colour, i.e. 0 after subtraction


def test_tall_image_pads_on_the_right():
    canvas, box = letterbox(solid(200, 100), 64)
    assert box.scale == 0.32
    assert (canvas[:, :32] == COLOUR).all()
    assert (canvas[:, 32:] == MEAN_RGB).all()


def test_small_image_is_upscaled():
    canvas, box = letterbox(solid(10, 20), 64)
    assert box.scale == 3.2
    assert (canvas[:32] == COLOUR).all() and (canvas[32:] == MEAN_RGB).all()


def test_content_size_rounds_half_up():
    # 5 x 0.5 = 2.5 -> 3 columns (Python's round() would give 2)
    canvas, _ = letterbox(solid(8, 5), 4)
    assert (canvas[:, :3] == COLOUR).all() and (canvas[:, 3:] == MEAN_RGB).all()


def test_the_pillow_resizer_is_pil_bilinear():
    image = np.random.default_rng(0).integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    canvas, _ = letterbox(image, 64, resizer="pillow")
    expected = np.asarray(Image.fromarray(image).resize((64, 48), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(canvas[:48], expected)


def test_image_already_at_size_is_copied_unchanged():
    image = np.random.default_rng(1).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    canvas, box = letterbox(image, 32)
    np.testing.assert_array_equal(canvas, image)
    assert box.scale == 1.0


def test_padding_colour_follows_the_mean():
    canvas, _ = letterbox(solid(10, 20), 20, mean_bgr=(1.0, 2.4, 2.6))
    assert tuple(canvas[-1, -1]) == (3, 2, 1)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)],
)
def test_letterbox_rejects_non_rgb_uint8(image):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        letterbox(image, 8)


# --- coordinate mapping -----------------------------------------------------------------


def test_to_model_and_to_image_hand_computed():
    _, box = letterbox(solid(100, 200), 64)
    np.testing.assert_allclose(box.to_model(np.array([100.0, 50.0])), [32.0, 16.0])
    boxes = np.array([[[32.0, 16.0, 64.0, 32.0]]])  # any leading shape
    np.testing.assert_allclose(box.to_image(boxes), [[[100.0, 50.0, 200.0, 100.0]]])
    padded = Letterbox(scale=2.0, pad_x=3, pad_y=5, image_width=10, image_height=10)
    landmarks = np.arange(10, dtype=np.float64).reshape(1, 10)
    expected = (landmarks.reshape(5, 2) - (3, 5)) / 2.0
    np.testing.assert_allclose(padded.to_image(landmarks), expected.reshape(1, 10))


def test_mapping_rejects_odd_last_axis():
    with pytest.raises(ValueError, match="pairs"):
        Letterbox(1.0, 0, 0, 4, 4).to_image(np.zeros((2, 3)))


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(2, 5000),
    width=st.integers(2, 5000),
    size=st.sampled_from([32, 64, 320, 640, 1024]),
    pad=st.tuples(st.integers(0, 50), st.integers(0, 50)),
    pairs=st.sampled_from([1, 2, 5]),
    data=st.data(),
)
def test_to_image_inverts_to_model(height, width, size, pad, pairs, data):
    box = Letterbox(size / max(height, width), pad[0], pad[1], width, height)
    coordinate = st.floats(-10_000, 10_000, allow_nan=False, allow_infinity=False)
    points = np.array(data.draw(st.lists(coordinate, min_size=2 * pairs, max_size=2 * pairs)))
    points = points.reshape(1, 2 * pairs)
    np.testing.assert_allclose(box.to_image(box.to_model(points)), points, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(box.to_model(box.to_image(points)), points, rtol=1e-9, atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(height=st.integers(2, 300), width=st.integers(2, 300), size=st.sampled_from([32, 64]))
def test_mapped_image_corner_matches_the_content_within_half_a_pixel(height, width, size):
    canvas, box = letterbox(solid(height, width), size)
    corner_x, corner_y = box.to_model(np.array([width, height], dtype=np.float64))
    content_width = int((canvas[0, :, 0] == COLOUR[0]).sum())
    content_height = int((canvas[:, 0, 0] == COLOUR[0]).sum())
    assert max(content_width, content_height) == size
    # at least one row/column of content survives even when the side rounds to 0
    assert abs(content_width - corner_x) <= 0.5 or content_width == 1
    assert abs(content_height - corner_y) <= 0.5 or content_height == 1


# --- normalisation ----------------------------------------------------------------------


def test_normalize_is_bgr_minus_mean_nchw_and_nhwc():
    image = np.array([[[10, 20, 30], [200, 150, 100], [0, 0, 255]]], dtype=np.uint8)  # 1x3
    expected_hwc = image[..., ::-1].astype(np.float32) - np.array(MEAN_BGR, np.float32)
    nchw = normalize(image)
    assert nchw.shape == (1, 3, 1, 3) and nchw.dtype == np.float32
    assert nchw.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(nchw[0], expected_hwc.transpose(2, 0, 1))
    assert nchw[0, 0, 0, 0] == 30 - 104  # channel 0 is blue
    nhwc = normalize(image, layout="NHWC")
    assert nhwc.shape == (1, 1, 3, 3) and nhwc.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(nhwc[0], expected_hwc)


def test_normalize_rejects_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        normalize(solid(2, 2), layout="CHW")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mean_bgr", [MEAN_BGR, (104.4, 116.6, 123.5)])
def test_preprocess_padding_is_exactly_zero(layout, mean_bgr):
    tensor, box = preprocess(solid(100, 200), 64, mean_bgr, layout)
    hwc = tensor[0] if layout == "NHWC" else tensor[0].transpose(1, 2, 0)
    assert tensor.shape == ((1, 64, 64, 3) if layout == "NHWC" else (1, 3, 64, 64))
    assert tensor.dtype == np.float32
    assert (hwc[32:] == 0).all()
    np.testing.assert_allclose(hwc[:32], np.broadcast_to(
        np.array(COLOUR[::-1], np.float32) - np.array(mean_bgr, np.float32), (32, 64, 3)))
    assert box.scale == 0.32


def test_preprocess_equals_letterbox_then_normalize():
    image = np.random.default_rng(2).integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    tensor, box = preprocess(image, 64)
    canvas, same_box = letterbox(image, 64)
    np.testing.assert_array_equal(tensor, normalize(canvas))
    assert box == same_box


def test_preprocess_original_size_keeps_pixels_and_identity_mapping():
    image = np.random.default_rng(3).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    tensor, box = preprocess_original_size(image)
    assert tensor.shape == (1, 3, 37, 53)
    np.testing.assert_array_equal(tensor, normalize(image))
    assert box == Letterbox(1.0, 0, 0, 53, 37)
    points = np.array([[1.5, 2.5, 30.0, 20.0]])
    np.testing.assert_array_equal(box.to_image(points), points)
    nhwc, _ = preprocess_original_size(image, MEAN_BGR, "NHWC")
    assert nhwc.shape == (1, 37, 53, 3)
