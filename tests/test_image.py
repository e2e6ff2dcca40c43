"""gpuaug.data.image: decoding one file to a uint8 (C, H, W) tensor, modes, EXIF, errors."""

from __future__ import annotations

import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import textured_image
from PIL import Image

from gpuaug.data.image import (
    IMAGE_EXTENSIONS,
    INTERPOLATIONS,
    KERAS_IMAGE_EXTENSIONS,
    ImageLoadError,
    check_image_header,
    decode_check,
    load_image,
    pil_to_mode,
)


@pytest.fixture
def rgb_array() -> np.ndarray:
    return textured_image(np.random.default_rng(1), 12, 20)


@pytest.fixture
def rgb_png(tmp_path: Path, rgb_array: np.ndarray) -> Path:
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_array).save(path)
    return path


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _png16(path: Path, arr: np.ndarray) -> Path:
    """A 16-bit RGB (3 channels) or RGBA (4) PNG; PIL cannot write these itself."""
    height, width, channels = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    color_type = {3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


# --- constants ---------------------------------------------------------------------------


def test_extensions_are_keras_list_plus_gif_and_webp():
    assert set(IMAGE_EXTENSIONS) == set(KERAS_IMAGE_EXTENSIONS) | {"gif", "webp"}


def test_interpolations_are_keras_names():
    assert set(INTERPOLATIONS) == {"nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"}


# --- load_image: layout and values ------------------------------------------------------


def test_load_image_returns_contiguous_uint8_chw(rgb_png):
    image = load_image(rgb_png, (12, 20))
    assert image.dtype == torch.uint8
    assert image.shape == (3, 12, 20)
    assert image.is_contiguous()


def test_load_image_keeps_exact_pixels_without_resize(rgb_png, rgb_array):
    np.testing.assert_array_equal(_hwc(load_image(rgb_png, None)), rgb_array)


def test_load_image_target_size_is_height_then_width(rgb_png):
    assert load_image(rgb_png, (7, 30)).shape == (3, 7, 30)


@pytest.mark.parametrize("interpolation", sorted(INTERPOLATIONS))
def test_load_image_resizes_with_the_named_pil_filter(rgb_png, interpolation):
    expected = Image.open(rgb_png).resize((9, 5), INTERPOLATIONS[interpolation])
    got = load_image(rgb_png, (5, 9), interpolation=interpolation)
    np.testing.assert_array_equal(_hwc(got), np.asarray(expected))


def test_load_image_default_interpolation_is_nearest(rgb_png):
    expected = Image.open(rgb_png).resize((9, 5), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(_hwc(load_image(rgb_png, (5, 9))), np.asarray(expected))


@pytest.mark.parametrize(("color_mode", "channels"), [("grayscale", 1), ("rgb", 3), ("rgba", 4)])
def test_load_image_channels_follow_color_mode(rgb_png, color_mode, channels):
    assert load_image(rgb_png, (6, 6), color_mode=color_mode).shape == (channels, 6, 6)


def test_grayscale_from_rgb_uses_pil_luma(rgb_png):
    expected = np.asarray(Image.open(rgb_png).convert("L"))
    np.testing.assert_array_equal(load_image(rgb_png, None, "grayscale")[0].numpy(), expected)


def test_rgba_from_rgb_has_opaque_alpha(rgb_png):
    assert (load_image(rgb_png, None, "rgba")[3] == 255).all()


@pytest.mark.parametrize("ext", ["gif", "webp", "bmp", "ppm", "tif", "jpeg"])
def test_every_supported_format_loads(tmp_path, rgb_array, ext):
    path = tmp_path / f"x.{ext}"
    Image.fromarray(rgb_array).save(path)
    assert load_image(path, (8, 8)).shape == (3, 8, 8)


def test_large_jpeg_loads(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (6000, 4000), (10, 200, 30)).save(path, quality=50)
    image = load_image(path, (15, 20), interpolation="bilinear")
    assert image.shape == (3, 15, 20)


# --- EXIF orientation --------------------------------------------------------------------


def _with_orientation(path: Path, arr: np.ndarray, orientation: int, **save_kwargs) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif.tobytes(), **save_kwargs)
    return path


def test_exif_orientation_6_rotates_clockwise(tmp_path, rgb_array):
    path = _with_orientation(tmp_path / "o6.png", rgb_array, 6)
    np.testing.assert_array_equal(_hwc(load_image(path, None)), np.rot90(rgb_array, k=-1))


def test_exif_orientation_8_rotates_counterclockwise(tmp_path, rgb_array):
    path = _with_orientation(tmp_path / "o8.png", rgb_array, 8)
    np.testing.assert_array_equal(_hwc(load_image(path, None)), np.rot90(rgb_array, k=1))


def test_exif_orientation_is_applied_before_resizing(tmp_path, rgb_array):
    path = _with_orientation(tmp_path / "o6.jpg", rgb_array, 6, quality=95)
    rotated = Image.open(path).transpose(Image.Transpose.ROTATE_270)
    expected = rotated.resize((4, 10), Image.Resampling.BILINEAR)
    got = load_image(path, (10, 4), interpolation="bilinear")
    np.testing.assert_array_equal(_hwc(got), np.asarray(expected))


def test_exif_orientation_1_changes_nothing(tmp_path, rgb_array):
    path = _with_orientation(tmp_path / "o1.png", rgb_array, 1)
    np.testing.assert_array_equal(_hwc(load_image(path, None)), rgb_array)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_corrupt_exif_is_ignored(tmp_path, rgb_array):
    path = tmp_path / "bad_exif.png"
    Image.fromarray(rgb_array).save(path, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05junk")
    np.testing.assert_array_equal(_hwc(load_image(path, None)), rgb_array)


# --- mode conversions --------------------------------------------------------------------

_SIXTEEN_BIT = np.array([[0, 128, 129, 257, 32896, 65535]], dtype=np.uint16)
_SIXTEEN_BIT_AS_8 = np.array([[0, 0, 1, 1, 128, 255]], dtype=np.uint8)


def test_16bit_grayscale_png_is_scaled_by_1_over_257_rounded(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(_SIXTEEN_BIT).save(path)
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(load_image(path, None, "grayscale")[0].numpy(), _SIXTEEN_BIT_AS_8)


def test_16bit_grayscale_png_as_rgb_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(_SIXTEEN_BIT).save(path)
    image = load_image(path, None, "rgb")
    for channel in image:
        np.testing.assert_array_equal(channel.numpy(), _SIXTEEN_BIT_AS_8)


def test_16bit_grayscale_as_rgba_is_opaque(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(_SIXTEEN_BIT).save(path)
    image = load_image(path, None, "rgba")
    np.testing.assert_array_equal(image[0].numpy(), _SIXTEEN_BIT_AS_8)
    assert (image[3] == 255).all()


def test_32bit_integer_grayscale_is_clipped_to_16bit_range_then_scaled(tmp_path):
    path = tmp_path / "i32.tif"
    values = np.array([[-5, 257, 65535, 100_000]], dtype=np.int32)
    Image.fromarray(values, mode="I").save(path)
    assert Image.open(path).mode == "I"
    got = load_image(path, None, "grayscale")[0].numpy()
    np.testing.assert_array_equal(got, [[0, 1, 255, 255]])


def test_16bit_rgb_png_keeps_pillows_high_byte(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    path = _png16(tmp_path / "rgb16.png", values)
    np.testing.assert_array_equal(_hwc(load_image(path, None)), (values >> 8).astype(np.uint8))


def test_16bit_rgba_png_loads_as_rgba(tmp_path):
    values = np.random.default_rng(0).integers(0, 65536, (4, 5, 4)).astype(np.uint16)
    path = _png16(tmp_path / "rgba16.png", values)
    np.testing.assert_array_equal(
        _hwc(load_image(path, None, "rgba")), (values >> 8).astype(np.uint8)
    )


def _palette_png(path: Path, rgb_array: np.ndarray, transparency) -> Path:
    img = Image.fromarray(rgb_array).quantize(8)
    img.save(path, transparency=transparency)
    return path


def test_palette_with_transparency_bytes_converts_without_pil_warning(tmp_path, rgb_array):
    alpha = bytes([0, 128] + [255] * 6)
    path = _palette_png(tmp_path / "p.png", rgb_array, alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = load_image(path, None, "rgb")
    palette = Image.open(path).convert("RGBA").convert("RGB")
    np.testing.assert_array_equal(_hwc(image), np.asarray(palette))


def test_palette_with_transparency_keeps_alpha_for_rgba(tmp_path, rgb_array):
    path = _palette_png(tmp_path / "p.png", rgb_array, 0)
    image = load_image(path, None, "rgba")
    index = np.asarray(Image.open(path))
    np.testing.assert_array_equal(image[3].numpy() == 0, index == 0)


def test_palette_without_transparency_matches_pil_convert(tmp_path, rgb_array):
    path = tmp_path / "p.gif"
    Image.fromarray(rgb_array).quantize(16).save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_hwc(load_image(path, None)), expected)


def test_rgba_read_as_rgb_drops_alpha_without_compositing(tmp_path, rgb_array):
    rgba = np.dstack([rgb_array, np.zeros(rgb_array.shape[:2], np.uint8)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    np.testing.assert_array_equal(_hwc(load_image(path, None, "rgb")), rgb_array)


def test_la_image_as_grayscale_drops_alpha(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    la = np.dstack([gray, np.full_like(gray, 7)])
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    np.testing.assert_array_equal(load_image(path, None, "grayscale")[0].numpy(), gray)


def test_la_image_as_rgb_repeats_gray(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 12
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([gray, gray]), mode="LA").save(path)
    image = load_image(path, None, "rgb")
    for channel in image:
        np.testing.assert_array_equal(channel.numpy(), gray)


def test_cmyk_jpeg_is_converted_like_pil(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (10, 200, 30, 40)).save(path, quality=100)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(_hwc(load_image(path, None)), expected)


def test_bilevel_image_becomes_0_or_255(tmp_path):
    path = tmp_path / "one.png"
    Image.fromarray(np.eye(4, dtype=bool)).save(path)
    got = load_image(path, None, "grayscale")[0].numpy()
    np.testing.assert_array_equal(got, np.eye(4, dtype=np.uint8) * 255)


def test_pil_to_mode_returns_same_image_when_mode_matches(rgb_png):
    img = Image.open(rgb_png)
    assert pil_to_mode(img, "rgb") is img


def test_pil_to_mode_rejects_unknown_color_mode(rgb_png):
    with pytest.raises(ValueError, match="`color_mode` must be one of"):
        pil_to_mode(Image.open(rgb_png), "bgr")


# --- argument validation -----------------------------------------------------------------


def test_load_image_rejects_unknown_interpolation(rgb_png):
    with pytest.raises(ValueError, match="`interpolation` must be one of .*got 'cubic'"):
        load_image(rgb_png, (4, 4), interpolation="cubic")


def test_load_image_rejects_unknown_color_mode(rgb_png):
    with pytest.raises(ValueError, match="`color_mode` must be one of .*got 'hsv'"):
        load_image(rgb_png, (4, 4), color_mode="hsv")


@pytest.mark.parametrize("size", [(0, 4), (4, -1)])
def test_load_image_rejects_non_positive_target_size(rgb_png, size):
    with pytest.raises(ValueError, match="`target_size` must hold two positive ints"):
        load_image(rgb_png, size)


@pytest.mark.parametrize("size", [4, (4,), (4.0, 4), (4, 4, 3)])
def test_load_image_rejects_target_size_that_is_not_an_int_pair(rgb_png, size):
    with pytest.raises(TypeError, match="`target_size`"):
        load_image(rgb_png, size)


# --- bad files ---------------------------------------------------------------------------


def test_zero_byte_file_fails_header_check_naming_it(tmp_path):
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(ImageLoadError, match="empty.jpg.*empty \\(0 bytes\\)"):
        check_image_header(path)


def test_text_file_with_image_extension_fails_header_check(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.png.*cannot identify image file"):
        check_image_header(path)


def test_missing_file_fails_with_its_name(tmp_path):
    with pytest.raises(ImageLoadError, match="nope.png.*FileNotFoundError"):
        load_image(tmp_path / "nope.png", None)


def test_macos_metadata_file_gets_a_hint(tmp_path):
    path = tmp_path / "._photo.jpg"
    path.write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    with pytest.raises(ImageLoadError, match="macOS metadata"):
        check_image_header(path)


def _truncated_png(path: Path, rgb_array: np.ndarray) -> Path:
    Image.fromarray(rgb_array).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_file_passes_header_check(tmp_path, rgb_array):
    check_image_header(_truncated_png(tmp_path / "cut.png", rgb_array))


def test_truncated_file_fails_at_load_naming_it(tmp_path, rgb_array):
    path = _truncated_png(tmp_path / "cut.png", rgb_array)
    with pytest.raises(ImageLoadError, match="cut.png"):
        load_image(path, (4, 4))


def test_truncated_file_fails_decode_check(tmp_path, rgb_array):
    with pytest.raises(ImageLoadError, match="cut.png"):
        decode_check(_truncated_png(tmp_path / "cut.png", rgb_array))


def test_corrupt_jpeg_fails_at_load(tmp_path, rgb_array):
    path = tmp_path / "bad.jpg"
    Image.fromarray(rgb_array).save(path, quality=90)
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[:300]) + b"\xff\xd9")  # cut the scan data, end-of-image marker
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        load_image(path, None)


def test_decompression_bomb_is_refused_naming_the_limit(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # 10000 px: PIL would only warn
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(ImageLoadError, match="bomb.png.*MAX_IMAGE_PIXELS"):
            check_image_header(path)


def test_decompression_bomb_over_twice_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL itself raises here
    with pytest.raises(ImageLoadError, match="bomb.png.*decompression bomb"):
        load_image(path, None)


def test_raising_max_image_pixels_accepts_the_image(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(path, None, "grayscale").shape == (1, 100, 100)


# --- ImageLoadError ----------------------------------------------------------------------


def test_image_load_error_names_path_and_reason():
    error = ImageLoadError("/data/cats/x.jpg", "image file is truncated")
    assert error.path == "/data/cats/x.jpg"
    assert error.reason == "image file is truncated"
    assert "/data/cats/x.jpg" in str(error) and "image file is truncated" in str(error)
    assert isinstance(error, RuntimeError)


def test_image_load_error_pickles():
    error = pickle.loads(pickle.dumps(ImageLoadError("a.png", "bad")))
    assert (error.path, error.reason) == ("a.png", "bad")


def test_image_load_error_rebuilds_from_a_message_alone():
    # torch's DataLoader re-raises worker exceptions as exc_type(message).
    error = ImageLoadError("Caught ImageLoadError in DataLoader worker process 0 ...")
    assert str(error).startswith("Caught ImageLoadError")
    assert error.reason is None
