"""Fuzzing the image and detect path: any bytes named .jpg / .png, and any array, either
load as an RGB image (and give faces inside it) or are refused with ImageError, never
another exception. Bounded by a fixed number of examples; no per-example deadline (speed
belongs to the benchmarks)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from featherface.sdk.detector import Detector
from featherface.sdk.image_io import ImageError, load_image


def _valid_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buffer, format="PNG")
    return buffer.getvalue()


def _valid_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


SEEDS = [_valid_png(), _valid_jpeg()]


@st.composite
def mutated_images(draw) -> bytes:
    """A valid PNG or JPEG with bytes flipped, cut or appended, or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=16))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_images(), suffix=st.sampled_from([".jpg", ".png"]))
def test_any_bytes_load_or_raise_image_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        rgb = load_image(path)
    except ImageError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.fixture(scope="module")
def detector(tiny_onnx_bundle) -> Detector:
    return Detector.load(tiny_onnx_bundle)


def assert_faces_inside(faces, height: int, width: int) -> None:
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height
        assert 0 <= face.score <= 1 and np.isfinite(face.landmarks).all()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated_images(), suffix=st.sampled_from([".jpg", ".png"]))
def test_detect_on_any_bytes_gives_faces_inside_the_image_or_image_error(detector, tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        faces = detector.detect(path)
    except ImageError as err:
        assert str(path) in str(err) and "\n" not in str(err)
    else:
        assert_faces_inside(faces, *load_image(path).shape[:2])


@settings(max_examples=200, deadline=None)
@given(
    image=arrays(
        dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
        shape=st.one_of(
            st.tuples(st.integers(1, 200), st.integers(1, 200)),
            st.tuples(st.integers(1, 200), st.integers(1, 200), st.integers(1, 5)),
            array_shapes(min_dims=1, max_dims=4, max_side=6),
        ),
    ),
    bgr=st.booleans(),
)
def test_detect_on_any_array_gives_faces_inside_the_image_or_image_error(detector, image, bgr):
    valid = image.dtype == np.uint8 and min(image.shape[:2], default=0) >= 2 and (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4)))
    if valid:
        assert_faces_inside(detector.detect(image, bgr=bgr), *image.shape[:2])
    else:
        with pytest.raises(ImageError):
            detector.detect(image, bgr=bgr)
