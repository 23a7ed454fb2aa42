"""Fuzzing the image path: any bytes named .jpg / .png either load as an RGB image or are
refused with ImageError, never another exception."""
from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

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
