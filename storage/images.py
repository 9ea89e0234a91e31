"""Uploaded image bytes read into a clean PIL image, or refused with a message a user understands.

This runs in the web process, so it needs only Pillow and numpy. Every size limit is checked against
the image header before any pixels are decoded, and the pixels are fully decoded here, so a damaged
file is refused now rather than failing later in a job.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Restricting Image.open to these keeps Pillow's rarer plugins (EPS runs Ghostscript) away from uploads.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
NOT_AN_IMAGE = "This file is not an image the studio can read: upload a PNG, JPEG, WebP, GIF, BMP or TIFF picture."
DAMAGED = "The image is damaged or incomplete (was the upload cut off?); please save or export it again."
HEIF = ("This is a HEIC/HEIF/AVIF photo (as iPhones and some cameras save them), which the studio cannot read: "
        "export it as JPEG or PNG and upload that (on an iPhone: Settings › Camera › Formats › Most Compatible).")
SVG = "This is an SVG drawing, which the studio does not read (it can point at other files): export it as PNG."
# The first bytes of the formats in FORMATS: a file that starts like one but cannot be read is damaged.
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
# The brands of an ISO media file ("ftyp" box) that hold HEIF or AVIF pictures.
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}

CONTROL_CHARS = re.compile("[\x00-\x1f\x7f]")
ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# Orientations 5 to 8 turn the picture a quarter, so its upright width and height are swapped.
QUARTER_TURNS = {5, 6, 7, 8}
GREY_DEPTHS = {"I;16": "16-bit", "I;16B": "16-bit", "I;16L": "16-bit", "I;16N": "16-bit", "I": "32-bit",
               "F": "32-bit floating-point"}


class ImageUploadError(ValueError):
    """An upload that cannot be used; the message says why, in words a user understands."""


@dataclass(frozen=True)
class UploadedImage:
    """An upload ready to use, with what was done to it."""

    image: Image.Image  # mode "RGB", or "RGBA" when the upload carries real transparency
    notes: tuple[str, ...]  # what was done to it, for the user
    source_format: str  # "PNG", "JPEG", "GIF", "WEBP", ...
    source_size: tuple[int, int]  # (width, height) as uploaded, after EXIF rotation

    @property
    def has_alpha(self) -> bool:
        """Whether the image carries real transparency (it is then RGBA)."""
        return self.image.mode == "RGBA"

    def png_bytes(self) -> bytes:
        """The image as PNG, alpha kept."""
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


def read_image_upload(data: bytes, *, min_side: int = 64, max_side: int = 4096, max_pixels: int = 64_000_000,
                      max_bytes: int = 50_000_000, exact_size: tuple[int, int] | None = None,
                      what: str = "image") -> UploadedImage:
    """The upload as an RGB or RGBA image of at most max_side pixels a side; ImageUploadError when unusable.
    ``exact_size``: the only upright size accepted (checked from the header, before decoding)."""
    if not data:
        raise ImageUploadError("The file is empty.")
    if len(data) > max_bytes:
        raise ImageUploadError(f"The file is {_number(len(data) / 1e6)} MB; "
                               f"the limit is {_number(max_bytes / 1e6)} MB.")
    with _pillow_errors(max_pixels, data), Image.open(io.BytesIO(data), formats=FORMATS) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageUploadError(f"The image is {width}×{height} pixels ({_number(width * height / 1e6)} "
                                   f"megapixels); the limit is {_number(max_pixels / 1e6)} megapixels.")
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
        source_size = (height, width) if orientation in QUARTER_TURNS else (width, height)
        if exact_size is not None and source_size != tuple(exact_size):
            raise ImageUploadError(f"The {what} is {source_size[0]}×{source_size[1]} pixels; it must be "
                                   f"{exact_size[0]}×{exact_size[1]} pixels, the size of its photo.")
        target = _fitted_size(source_size, min_side, max_side)
        notes: list[str] = []
        if orientation in range(2, 9):
            notes.append("Rotated upright from the photo's EXIF orientation.")
        frames = getattr(img, "n_frames", 1)
        # An MPO is how cameras save a JPEG with previews or depth maps: to the user it is one JPEG photo.
        if img.format == "MPO":
            source_format = "JPEG"
        else:
            source_format = str(img.format)
            if frames > 1:
                used = "Multi-page image: the first of {} pages" if source_format == "TIFF" else \
                    "Animated image: the first of {} frames"
                notes.append(used.format(frames) + " is used.")
        img.load()
        image = ImageOps.exif_transpose(img)
    image = _rgb_or_rgba(image, notes)
    if target != source_size:
        image = image.resize(target, Image.Resampling.LANCZOS)
        notes.append(f"Downscaled from {source_size[0]}×{source_size[1]} to {target[0]}×{target[1]}.")
    return UploadedImage(image=image, notes=tuple(notes), source_format=source_format, source_size=source_size)


def read_mask_upload(data: bytes, size: tuple[int, int], *, max_bytes: int = 50_000_000) -> Image.Image:
    """An uploaded mask for a picture of ``size`` as an "L" image, 255 on what it marks: its alpha where it
    has real transparency (palette transparency included), else its brightness. Read with the same care as
    a picture (the size checked from the header before decoding, EXIF rotation applied); ImageUploadError
    when unusable or not ``size``."""
    image = read_image_upload(data, min_side=1, max_side=max(size), max_bytes=max_bytes, exact_size=size,
                              what="mask").image
    return image.getchannel("A") if image.mode == "RGBA" else image.convert("L")


def clean_file_name(filename: str | None, limit: int = 200) -> str:
    """An uploaded file's name as a label: its last part after any / or \\ (no folders, absolute or relative),
    without control characters, at most ``limit`` characters with its extension kept; "" for a name of dots."""
    name = re.split(r"[/\\]", str(filename or ""))[-1]
    name = " ".join(CONTROL_CHARS.sub(" ", name).split())
    if not name.strip("."):
        return ""
    if len(name) > limit:
        stem, dot, extension = name.rpartition(".")
        extension = extension if dot and stem and len(extension) <= 16 else ""
        tail = f".{extension}" if extension else ""
        name = name[: limit - len(tail) - 1].rstrip() + "…" + tail
    return name


def _sniffed(data: bytes) -> str | None:
    """A message for a file Pillow may not read whose kind its first bytes tell: HEIC, SVG, a damaged picture."""
    head = data[:1024]
    if head[4:8] == b"ftyp" and (head[8:12] in HEIF_BRANDS or any(
            head[i:i + 4] in HEIF_BRANDS for i in range(16, min(len(head), int.from_bytes(head[:4], "big")), 4))):
        return HEIF
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in data[:4096].lower():
        return SVG
    if head.startswith(SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return DAMAGED
    return None


@contextmanager
def _pillow_errors(max_pixels: int, data: bytes = b"") -> Iterator[None]:
    """Turns what Pillow raises while opening and decoding an upload into an ImageUploadError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageUploadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            # Pillow's own limit refuses the header before handing back its size, so the message has none.
            raise ImageUploadError("The image has too many pixels to open safely; "
                                   f"the limit is {_number(max_pixels / 1e6)} megapixels.") from error
        except UnidentifiedImageError as error:
            raise ImageUploadError(_sniffed(data) or NOT_AN_IMAGE) from error
        # Pillow signals broken or cut-off data with many exception types, OSError and SyntaxError the most common.
        except Exception as error:
            raise ImageUploadError(DAMAGED) from error


def _fitted_size(size: tuple[int, int], min_side: int, max_side: int) -> tuple[int, int]:
    """The size after scaling the longer side down to max_side; refuses images too small on a side."""
    width, height = size
    if min(width, height) < min_side:
        raise ImageUploadError(f"The image is {width}×{height} pixels; "
                               f"it must be at least {min_side} pixels on each side.")
    if max(width, height) <= max_side:
        return size
    scale = max_side / max(width, height)
    target = (max_side, round(height * scale)) if width >= height else (round(width * scale), max_side)
    if min(target) < min_side:
        raise ImageUploadError(f"The image is {width}×{height} pixels; scaled to fit {max_side} pixels it would be "
                               f"{target[0]}×{target[1]}, and it must be at least {min_side} pixels on each side.")
    return target


def _rgb_or_rgba(image: Image.Image, notes: list[str]) -> Image.Image:
    """The image in RGB, or RGBA when it has pixels that are not fully opaque."""
    if image.mode in GREY_DEPTHS:
        return _stretched_to_8bit(image, notes).convert("RGB")
    if image.mode == "CMYK":
        notes.append("Converted from CMYK to RGB colour.")
        return image.convert("RGB")
    if image.mode not in ALPHA_MODES and "transparency" not in image.info:
        return image.convert("RGB")
    # Pillow has no direct route from premultiplied La to RGBA.
    rgba = (image.convert("LA") if image.mode == "La" else image).convert("RGBA")
    alpha_low, _ = rgba.getextrema()[3]
    return rgba.convert("RGB") if alpha_low == 255 else rgba


def _stretched_to_8bit(image: Image.Image, notes: list[str]) -> Image.Image:
    """A high-depth greyscale image as 8-bit "L", its actual range of values stretched to 0-255."""
    values = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(values)
    low, high = (values[finite].min(), values[finite].max()) if finite.any() else (0.0, 0.0)
    # NaN and infinity (possible in float TIFFs) show as the darkest value rather than spoiling the range.
    values = np.where(finite, values, low)
    scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    notes.append(f"Converted {GREY_DEPTHS[image.mode]} greyscale to 8-bit, stretching its values "
                 f"({_number(low)}–{_number(high)}) to 0–255.")
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _number(value: float) -> str:
    """A number for a message, with at most one decimal: 73.2, 50, 900."""
    return f"{value:.1f}".rstrip("0").rstrip(".")
