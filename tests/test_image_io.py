"""load_image: every file flavour comes out upright HxWx3 uint8 RGB; bad inputs one clear line."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featherface.sdk.image_io import ImageError, load_image

RED, BLUE = (230, 20, 20), (20, 20, 230)


def save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def jpeg_bytes(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def assert_rgb_uint8(rgb: np.ndarray, height: int, width: int) -> None:
    assert rgb.shape == (height, width, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags["C_CONTIGUOUS"]


def assert_one_line_error(excinfo: pytest.ExceptionInfo, name: str, problem: str) -> None:
    message = str(excinfo.value)
    assert message.startswith("cannot read image ")
    assert name in message and problem in message
    assert "\n" not in message
    error = excinfo.value  # no chained Pillow traceback under the one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --- files that load ------------------------------------------------------------------


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "rgb.png")
    rgb = load_image(path)
    assert_rgb_uint8(rgb, 7, 9)
    np.testing.assert_array_equal(rgb, pixels)
    np.testing.assert_array_equal(load_image(str(path)), pixels)  # str path too


def test_exif_orientation_6_jpeg_comes_out_rotated_clockwise(tmp_path):
    # Stored 40 wide x 20 tall, left half red, right half blue; orientation 6 means
    # "rotate 90 degrees clockwise to display", so the left half ends up on top.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20], stored[:, 20:] = RED, BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(Image.fromarray(stored), tmp_path / "rotated.jpg", exif=exif, quality=95)
    rgb = load_image(path)
    assert_rgb_uint8(rgb, 40, 20)
    np.testing.assert_allclose(rgb[2:18].reshape(-1, 3).mean(0), RED, atol=6)
    np.testing.assert_allclose(rgb[22:38].reshape(-1, 3).mean(0), BLUE, atol=6)


def test_exif_orientation_applied_to_pil_image_input(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(Image.new("RGB", (40, 20), RED), tmp_path / "rotated.jpg", exif=exif)
    with Image.open(path) as image:
        assert load_image(image).shape == (40, 20, 3)


def test_grayscale_png_is_replicated_to_three_channels(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    rgb = load_image(save(Image.fromarray(gray, mode="L"), tmp_path / "gray.png"))
    assert_rgb_uint8(rgb, 3, 4)
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))


def test_rgba_png_drops_alpha_without_compositing(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[...] = (10, 20, 30, 0)  # fully transparent: compositing would give black
    rgba[0, 0] = (200, 100, 50, 255)
    rgb = load_image(save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "rgba.png"))
    assert_rgb_uint8(rgb, 4, 5)
    np.testing.assert_array_equal(rgb, rgba[..., :3])


def test_gray_alpha_png_drops_alpha(tmp_path):
    image = Image.new("LA", (3, 3), (77, 0))
    rgb = load_image(save(image, tmp_path / "la.png"))
    np.testing.assert_array_equal(rgb, np.full((3, 3, 3), 77, np.uint8))


def test_palette_png_with_transparency_gives_palette_colours(tmp_path):
    image = Image.new("P", (4, 2), 0)
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (3 * 253))
    image.putpixel((1, 0), 1)
    image.putpixel((2, 1), 2)
    image.info["transparency"] = 0
    rgb = load_image(save(image, tmp_path / "palette.png", transparency=0))
    assert_rgb_uint8(rgb, 2, 4)
    assert tuple(rgb[0, 1]) == (255, 0, 0)
    assert tuple(rgb[1, 2]) == (0, 255, 0)
    assert tuple(rgb[0, 0]) == (0, 0, 0)


def test_16_bit_png_scales_full_range_to_8_bit(tmp_path):
    samples = np.array([[0, 257, 128 * 257, 65535], [65535, 65280, 1000, 30000]], np.uint16)
    image = Image.fromarray(samples)
    assert image.mode == "I;16"
    rgb = load_image(save(image, tmp_path / "deep.png"))
    assert_rgb_uint8(rgb, 2, 4)
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    np.testing.assert_array_equal(rgb[1, :, 0], [255, 254, 4, 117])  # round(v / 257)
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_mode_i_and_f_images_scale_without_clipping():
    as_int = Image.fromarray(np.array([[0, 65535], [257, 32896]], dtype=np.int32))
    assert as_int.mode == "I"
    np.testing.assert_array_equal(load_image(as_int)[..., 0], [[0, 255], [1, 128]])
    as_float = Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32))
    assert as_float.mode == "F"
    np.testing.assert_array_equal(load_image(as_float)[..., 0], [[0, 255], [128, 64]])


def test_bilevel_image_maps_to_black_and_white():
    image = Image.new("1", (3, 2), 0)
    image.putpixel((0, 0), 1)
    rgb = load_image(image)
    assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[1, 2]) == (0, 0, 0)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    rgb = load_image(path)
    assert_rgb_uint8(rgb, 16, 16)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), (255, 0, 0), atol=6)


def test_ycbcr_image_is_converted_to_rgb():
    image = Image.new("RGB", (4, 4), RED).convert("YCbCr")
    np.testing.assert_allclose(load_image(image)[0, 0], RED, atol=3)


# --- files that do not --------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path / "nowhere.jpg")
    assert_one_line_error(excinfo, "nowhere.jpg", "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "empty.jpg", "empty file")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "notes.jpg", "not an image")


def test_directory(tmp_path):
    with pytest.raises(ImageError) as excinfo:
        load_image(tmp_path)
    assert_one_line_error(excinfo, str(tmp_path), "directory")


def test_truncated_jpeg(tmp_path):
    data = jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "cut.jpg", "truncated")


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "cut.png", "truncated")


def test_png_cut_inside_its_header(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    path = tmp_path / "stub.png"
    path.write_bytes(buffer.getvalue()[:12])
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "stub.png", "truncated")


def test_truncated_file_opened_lazily_by_caller(tmp_path):
    data = jpeg_bytes()
    path = tmp_path / "lazy.jpg"
    path.write_bytes(data[: len(data) // 2])
    with Image.open(path) as image, pytest.raises(ImageError) as excinfo:
        load_image(image)
    assert_one_line_error(excinfo, "lazy.jpg", "truncated")


def test_one_pixel_image_is_too_small(tmp_path):
    path = save(Image.new("RGB", (1, 1)), tmp_path / "dot.png")
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "dot.png", "image too small")
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((1, 5, 3), np.uint8))


@pytest.mark.parametrize("side", [12, 20])  # Pillow warns above the limit, errors above 2x
def test_decompression_bomb_is_an_image_error(tmp_path, monkeypatch, side):
    path = save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError) as excinfo:
        load_image(path)
    assert_one_line_error(excinfo, "bomb.png", "too large")


# --- NumPy arrays ---------------------------------------------------------------------


def test_rgb_array_passes_through_and_bgr_option_swaps_channels():
    rgb = np.random.default_rng(3).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    out = load_image(rgb)
    np.testing.assert_array_equal(out, rgb)
    swapped = load_image(rgb[..., ::-1], bgr=True)  # an OpenCV-style BGR frame
    np.testing.assert_array_equal(swapped, rgb)
    assert swapped.flags["C_CONTIGUOUS"]


def test_gray_and_alpha_arrays():
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(load_image(gray), np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_array_equal(load_image(gray[..., None]), load_image(gray))
    rgba = np.random.default_rng(4).integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(rgba), rgba[..., :3])
    np.testing.assert_array_equal(load_image(rgba, bgr=True), rgba[..., 2::-1])


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (np.zeros((4, 4, 3), np.float32), "float32"),
        (np.zeros((4, 4, 3), np.uint16), "uint16"),
        (np.zeros((4, 4, 2), np.uint8), "(4, 4, 2)"),
        (np.zeros((2, 4, 4, 3), np.uint8), "(2, 4, 4, 3)"),
        (np.zeros((4,), np.uint8), "(4,)"),
    ],
)
def test_bad_arrays_name_the_problem(array, problem):
    with pytest.raises(ImageError) as excinfo:
        load_image(array)
    assert problem in str(excinfo.value)


def test_other_source_types_are_a_type_error():
    with pytest.raises(TypeError, match="list"):
        load_image([[0, 0, 0]])  # type: ignore[arg-type]
