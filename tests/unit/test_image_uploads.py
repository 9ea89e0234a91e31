"""Reading uploaded images: a corpus of good, odd and bad uploads, all built here in code."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from storage.images import ImageUploadError, UploadedImage, read_image_upload


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int = 160, height: int = 120, seed: int = 0) -> Image.Image:
    """An image that barely compresses, so cutting its file in half cuts into the pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim width×height, with a correct CRC; no pixels allocated."""
    data = bytearray(encoded(Image.new("L", (64, 64)), "PNG"))
    # Signature (8 bytes), then the IHDR chunk: length (4), type (4), width (4), height (4), ...
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def refusal(data: bytes, **limits) -> str:
    with pytest.raises(ImageUploadError) as caught:
        read_image_upload(data, **limits)
    return str(caught.value)


def pixel(upload: UploadedImage, x: int, y: int) -> tuple[int, ...]:
    return upload.image.getpixel((x, y))


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- refusals --------------------------------------------------------------------------------------------------


def test_empty_and_oversized_files_are_refused_before_reading():
    assert refusal(b"") == "The file is empty."
    message = refusal(b"\0" * 3_100_000, max_bytes=2_000_000)
    assert message == "The file is 3.1 MB; the limit is 2 MB."


@pytest.mark.parametrize("data", [
    b"Dear diary, today I renamed this text file to holiday.png.\n" * 20,
    np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
], ids=["text-named-png", "random-bytes"])
def test_files_that_are_not_images_are_refused(data):
    assert "not an image" in refusal(data)


def test_an_image_in_a_format_outside_the_list_is_refused():
    assert "not an image" in refusal(encoded(noise(), "ICO"))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_a_file_cut_in_half_is_reported_as_damaged(fmt):
    data = encoded(noise(), fmt)
    message = refusal(data[: len(data) // 2])
    assert "damaged" in message and "incomplete" in message


def test_a_jpeg_cut_short_is_reported_as_damaged():
    data = encoded(noise(), "JPEG", quality=95)
    assert "damaged" in refusal(data[:-200])


def test_a_png_with_scrambled_pixel_data_is_reported_as_damaged():
    data = bytearray(encoded(noise(), "PNG"))
    middle = len(data) // 2
    data[middle : middle + 300] = np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8).tobytes()
    assert "damaged" in refusal(bytes(data))


def test_a_header_past_the_pixel_limit_is_refused_before_decoding():
    # The patched file holds 64×64 pixels of data: had it been decoded, it would read as damaged.
    message = refusal(png_claiming(9000, 9000))
    assert message == "The image is 9000×9000 pixels (81 megapixels); the limit is 64 megapixels."


def test_a_header_past_pillows_own_bomb_limit_is_refused():
    message = refusal(png_claiming(30000, 30000))
    assert "too many pixels" in message and "64 megapixels" in message


def test_a_decompression_bomb_is_refused():
    # A real 12000×12000 image (144 megapixels) that compresses to a few kilobytes, past Pillow's own
    # warning threshold (about 89 megapixels), which is turned into a refusal.
    bomb = encoded(Image.new("1", (12000, 12000)), "PNG")
    assert len(bomb) < 1_000_000
    assert "megapixels" in refusal(bomb)
    message = refusal(bomb, max_pixels=100_000_000)
    assert "too many pixels" in message and "100 megapixels" in message


def test_a_compressed_image_over_a_lowered_pixel_limit_is_refused():
    data = encoded(Image.new("L", (3000, 3000)), "PNG")
    assert len(data) < 100_000
    message = refusal(data, max_pixels=4_000_000)
    assert message == "The image is 3000×3000 pixels (9 megapixels); the limit is 4 megapixels."


def test_a_tiny_image_is_refused_with_its_size():
    message = refusal(encoded(Image.new("RGB", (20, 20), "red"), "PNG"))
    assert message == "The image is 20×20 pixels; it must be at least 64 pixels on each side."


def test_a_strip_that_downscaling_would_make_too_thin_is_refused():
    message = refusal(encoded(Image.new("RGB", (5000, 70)), "PNG"), max_side=4096)
    assert "4096×57" in message and "at least 64 pixels" in message


# --- accepted uploads ------------------------------------------------------------------------------------------


def test_a_plain_png_comes_back_unchanged():
    source = noise()
    upload = read_image_upload(encoded(source, "PNG"))
    assert upload.image.mode == "RGB" and upload.notes == ()
    assert upload.source_format == "PNG" and upload.source_size == (160, 120)
    assert np.array_equal(np.asarray(upload.image), np.asarray(source))


def test_a_cmyk_jpeg_becomes_rgb_with_a_note():
    upload = read_image_upload(encoded(Image.new("CMYK", (96, 96), (0, 255, 255, 0)), "JPEG", quality=95))
    assert upload.image.mode == "RGB" and upload.source_format == "JPEG"
    assert near(pixel(upload, 48, 48), (255, 0, 0))
    assert any("CMYK" in note for note in upload.notes)


def test_a_16_bit_greyscale_png_is_stretched_to_8_bit():
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (80, 1))
    data = encoded(Image.fromarray(gradient), "PNG")
    with Image.open(io.BytesIO(data)) as check:
        assert check.mode == "I;16"
    upload = read_image_upload(data)
    assert upload.image.mode == "RGB" and upload.image.size == (256, 80)
    assert pixel(upload, 0, 40) == (0, 0, 0)
    assert pixel(upload, 255, 40) == (255, 255, 255)
    assert 120 <= pixel(upload, 128, 40)[0] <= 135
    assert any("16-bit" in note for note in upload.notes)


def test_a_float_tiff_is_stretched_over_its_actual_range():
    values = np.tile(np.linspace(-2.5, 7.5, 100, dtype=np.float32), (70, 1))
    upload = read_image_upload(encoded(Image.fromarray(values), "TIFF"))
    assert pixel(upload, 0, 0) == (0, 0, 0) and pixel(upload, 99, 0) == (255, 255, 255)
    assert any("floating-point" in note and "-2.5–7.5" in note for note in upload.notes)


def test_a_palette_png_with_a_transparent_index_becomes_rgba():
    image = Image.new("P", (80, 80), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (40, 0, 80, 80))
    upload = read_image_upload(encoded(image, "PNG", transparency=0))
    assert upload.image.mode == "RGBA" and upload.has_alpha
    assert pixel(upload, 10, 10)[3] == 0
    assert pixel(upload, 70, 10) == (255, 0, 0, 255)


def test_an_exif_rotated_jpeg_is_turned_upright():
    # Stored 120×80 with a red top-left corner; orientation 6 means "turn 90° clockwise to view".
    stored = Image.new("RGB", (120, 80), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 30))
    exif = stored.getexif()
    exif[0x0112] = 6
    upload = read_image_upload(encoded(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert upload.image.size == (80, 120) and upload.source_size == (80, 120)
    assert near(pixel(upload, 70, 10), (255, 0, 0))  # the red corner is now top-right
    assert near(pixel(upload, 10, 10), (0, 0, 255))
    assert upload.notes == ("Rotated upright from the photo's EXIF orientation.",)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_an_animation_keeps_its_first_frame(fmt):
    red, green, blue = (Image.new("RGB", (80, 80), colour) for colour in ("red", "lime", "blue"))
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = encoded(red, fmt, save_all=True, append_images=[green, blue], duration=100, **options)
    upload = read_image_upload(data)
    assert upload.source_format == fmt and upload.image.mode == "RGB"
    assert pixel(upload, 40, 40) == (255, 0, 0)
    assert upload.notes == ("Animated image: the first of 3 frames is used.",)


def test_a_long_image_is_downscaled_to_max_side():
    upload = read_image_upload(encoded(Image.new("RGB", (5000, 100), "green"), "PNG"), max_side=4096)
    assert upload.image.size == (4096, 82) and upload.source_size == (5000, 100)
    assert upload.notes == ("Downscaled from 5000×100 to 4096×82.",)


def test_an_rgba_png_with_opaque_alpha_becomes_rgb():
    upload = read_image_upload(encoded(noise().convert("RGBA"), "PNG"))
    assert upload.image.mode == "RGB" and not upload.has_alpha


def test_an_rgba_png_with_real_transparency_keeps_it():
    source = noise().convert("RGBA")
    source.putalpha(Image.linear_gradient("L").resize(source.size))
    upload = read_image_upload(encoded(source, "PNG"))
    assert upload.image.mode == "RGBA" and upload.has_alpha
    with Image.open(io.BytesIO(upload.png_bytes())) as again:
        assert again.mode == "RGBA"
        assert np.array_equal(np.asarray(again), np.asarray(source))


@pytest.mark.parametrize(("mode", "fmt", "expected"), [
    ("1", "PNG", "RGB"),
    ("L", "PNG", "RGB"),
    ("LA", "PNG", "RGBA"),
    ("P", "GIF", "RGB"),
    ("PA", "TIFF", "RGBA"),
    ("LAB", "TIFF", "RGB"),
    ("I", "TIFF", "RGB"),
    ("I;16B", "TIFF", "RGB"),
    ("CMYK", "TIFF", "RGB"),
    ("RGB", "BMP", "RGB"),
])
def test_every_mode_comes_out_as_rgb_or_rgba(mode, fmt, expected):
    image = Image.new(mode, (70, 70))
    if expected == "RGBA":
        image.putalpha(Image.linear_gradient("L").resize(image.size))
    upload = read_image_upload(encoded(image, fmt))
    assert upload.image.mode == expected and upload.image.size == (70, 70)
