"""A corpus of hostile and awkward inputs, built at test time (nothing binary is committed).

``image_corpus()`` gives files a user might upload as a picture: things that are no image at all under an
image's name, damaged and cut-off images, decompression bombs, and the odd but valid images a studio must
convert correctly (CMYK, 16-bit, palette transparency, EXIF rotation, animations). ``model_corpus()`` gives
files a user might upload as a LoRA: pickles and torch checkpoints under a ``.safetensors`` name, and
safetensors files whose header lies. ``HOSTILE_NAMES`` are file names that try to leave a folder, and
``HOSTILE_TEXTS`` text that looks like SQL, script or a template, for every text field.

Each entry says what the studio must do with it: refuse it (with words a user understands) or accept and
convert it, with a check of the converted picture. ``write_corpus(folder)`` writes the files out, for a look
by hand (``python -m tests.bad_inputs tests/data/bad``; that folder is ignored by git).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

REFUSE, ACCEPT = "refuse", "accept"

# What the messages of storage/images.py say, in words a user reads (matched case-insensitively).
NOT_AN_IMAGE = "not an image"
DAMAGED = "damaged or incomplete"
TOO_MANY_PIXELS = "pixels"
EMPTY = "empty"
HEIC = "heic"
SVG = "svg drawing"
TOO_SMALL = "at least"

Check = Callable[[Image.Image, list[str]], None]


@dataclass(frozen=True)
class BadFile:
    """One upload: its test id, the name it is sent under, its bytes, and what the studio must do."""

    id: str
    filename: str
    data: bytes
    expect: str  # REFUSE or ACCEPT
    reason: str = ""  # for REFUSE: words the message must contain (lower case)
    check: Check | None = field(default=None, compare=False)  # for ACCEPT: (stored picture, notes) -> asserts
    size: tuple[int, int] | None = None  # for ACCEPT: the upright size the stored picture must have
    absent: bytes = b""  # bytes of the upload that must not survive into the stored file

    def __repr__(self) -> str:  # pytest ids and failure messages stay short
        return f"BadFile({self.id})"


# --- small builders -----------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noisy(size: tuple[int, int] = (128, 96), seed: int = 7) -> Image.Image:
    """A picture with detail everywhere (so a cut-off file misses real data), made without numpy."""
    image = Image.effect_noise(size, 60).convert("RGB")
    draw = ImageDraw.Draw(image)
    for i in range(0, size[0], 16):
        draw.rectangle((i, (i * seed) % size[1], i + 10, (i * seed) % size[1] + 20), fill=(i % 255, 90, 200 - i % 200))
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, scanlines: bytes | None = None,
            compressed: bytes | None = None) -> bytes:
    """A PNG written by hand: ``scanlines`` (each row with its filter byte) are deflated, or ``compressed``
    is the IDAT as given (a header may then promise far more than the file holds)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = compressed if compressed is not None else zlib.compress(scanlines or b"", 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A 1-bit all-black PNG of any size, deflated row by row: tens of kilobytes for hundreds of megapixels."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    parts = [packer.compress(row) for _ in range(height)]
    parts.append(packer.flush())
    return raw_png(width, height, 1, 0, compressed=b"".join(parts))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class _Gadget:
    """What a malicious pickle carries: unpickling it would call ``os.system``. Only pickled, never loaded."""

    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/studio-pwned-by-pickle",))


def pickle_payload(protocol: int = 4) -> bytes:
    return pickle.dumps({"lora_unet_down.lora_down.weight": [0.0] * 4, "gadget": _Gadget()}, protocol=protocol)


def torch_checkpoint() -> bytes:
    """What ``torch.save`` writes since torch 1.6, laid out by hand (no torch needed): a zip of a pickle, its
    tensors' storages, and the format's version and byte order."""
    return zip_bytes({"archive/data.pkl": pickle_payload(2), "archive/data/0": b"\x00" * 32,
                      "archive/byteorder": b"little", "archive/version": b"3\n"})


def safetensors_bytes(header: dict | bytes, body: bytes = b"", header_size: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if header_size is None else header_size) + raw + body


# --- checks of accepted pictures ------------------------------------------------------------------------------


def close(pixel, expected, tolerance: int = 12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, expected))


def _check_cmyk(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGB", image.mode
    assert close(image.getpixel((10, 10)), (0, 255, 255)), image.getpixel((10, 10))  # cyan
    assert close(image.getpixel((image.width - 10, 10)), (255, 0, 255)), image.getpixel((image.width - 10, 10))  # magenta
    assert any("CMYK" in n for n in notes), notes


def _check_grey16(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGB", image.mode
    row = [image.getpixel((x, image.height // 2))[0] for x in range(image.width)]
    assert row[0] == 0 and row[-1] == 255, (row[0], row[-1])  # the value range stretched to 0-255
    assert row == sorted(row), "the gradient must stay a gradient"
    assert any("16-bit" in n for n in notes), notes


def _check_rgb16(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGB", image.mode
    assert close(image.getpixel((5, 5)), (0xC8, 0x64, 0x19), 2), image.getpixel((5, 5))


def _check_palette_alpha(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGBA", f"palette transparency must be kept as alpha, got {image.mode}"
    assert image.getpixel((5, 5))[3] == 0, image.getpixel((5, 5))  # the transparent index
    assert image.getpixel((image.width - 5, 5)) == (0, 0, 255, 255), image.getpixel((image.width - 5, 5))
    assert image.getpixel((5, image.height - 5)) == (0, 200, 0, 128), image.getpixel((5, image.height - 5))


def _check_exif_upright(image: Image.Image, notes: list[str]) -> None:
    # Stored 96×64 with orientation 6 (turn 90° clockwise to view): the red corner ends up top right.
    assert image.size == (64, 96), image.size
    assert close(image.getpixel((image.width - 5, 5)), (255, 0, 0), 40), image.getpixel((image.width - 5, 5))
    assert close(image.getpixel((5, 5)), (255, 255, 255), 40), image.getpixel((5, 5))
    assert any("EXIF" in n for n in notes), notes


def _first_frame_red(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGB", image.mode
    assert close(image.getpixel((image.width // 2, image.height // 2)), (255, 0, 0), 16), \
        image.getpixel((image.width // 2, image.height // 2))
    assert any("first of 3 frames" in n for n in notes), notes


def _plain_rgb(image: Image.Image, notes: list[str]) -> None:
    assert image.mode == "RGB", image.mode


# --- the corpora ------------------------------------------------------------------------------------------------


def svg(reference: str) -> bytes:
    return (f'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="256" height="256"><image href="{reference}" xlink:href="{reference}" width="256" height="256"/>'
            '</svg>\n').encode()


def image_corpus(canary_url: str = "http://127.0.0.1:9/canary.png", size: tuple[int, int] = (96, 80)) -> list[BadFile]:
    """Every picture-like upload. ``canary_url`` is where an SVG points: nothing may ever fetch it.
    Accepted pictures are ``size`` (at least 64 px a side, the smallest upload), except the EXIF one."""
    w, h = size
    good = noisy((128, 96))
    good_png, good_jpeg = encode(good, "PNG"), encode(good, "JPEG", quality=90)

    cmyk = Image.new("CMYK", size, (255, 0, 0, 0))
    cmyk.paste((0, 255, 0, 0), (w // 2, 0, w, h))

    grey16 = Image.frombytes("I;16", size, b"".join(struct.pack("<H", 1000 + x * 500) for _y in range(h) for x in range(w)))
    rgb16_rows = b"".join(b"\x00" + struct.pack(">HHH", 0xC800, 0x6400, 0x1900) * w for _ in range(h))

    palette = Image.new("P", size, 0)
    palette.putpalette([255, 0, 0, 0, 0, 255, 0, 200, 0] + [0] * (256 * 3 - 9))
    palette.paste(1, (w // 2, 0, w, h))
    palette.paste(2, (0, h // 2, w // 2, h))
    palette_png = encode(palette, "PNG", transparency=bytes([0, 255, 128]))

    turned = Image.new("RGB", (96, 64), "white")
    turned.paste((255, 0, 0), (0, 0, 20, 20))
    exif = turned.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    exif_jpeg = encode(turned, "JPEG", quality=95, exif=exif)

    frames = [Image.new("RGB", size, colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    webp = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100, loop=0)

    trailing_zip = zip_bytes({"payload.txt": b"SMUGGLED-PAYLOAD-" * 20})
    heic = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic" + \
        struct.pack(">I", 40) + b"meta" + b"\x00" * 32 + struct.pack(">I", 16) + b"mdat" + b"\x00" * 8
    elf = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + b"\x00" * 200
    html = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>\n"
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n(/etc/passwd) (r) file\nshowpage\n"
    broken_crc = bytearray(good_png)
    broken_crc[29:33] = b"\x00\x00\x00\x00"  # the IHDR chunk's CRC

    return [
        # Not pictures at all, under a picture's name.
        BadFile("text-as-png", "notes.png", b"Quarterly numbers: 12, 15, 19.\nNot a picture.\n", REFUSE, NOT_AN_IMAGE),
        BadFile("zip-as-png", "archive.png", zip_bytes({"a.txt": b"hello"}), REFUSE, NOT_AN_IMAGE),
        BadFile("elf-as-png", "program.png", elf, REFUSE, NOT_AN_IMAGE),
        BadFile("html-as-png", "page.png", html, REFUSE, NOT_AN_IMAGE),
        BadFile("eps-as-png", "vector.png", eps, REFUSE, NOT_AN_IMAGE),
        BadFile("zero-bytes", "empty.png", b"", REFUSE, EMPTY),
        BadFile("svg-external-http", "logo.svg", svg(canary_url), REFUSE, SVG),
        BadFile("svg-file-passwd", "logo2.svg", svg("file:///etc/passwd"), REFUSE, SVG),
        BadFile("svg-xxe", "logo3.svg", b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><text>&x;</text></svg>',
                REFUSE, SVG),
        BadFile("heic", "IMG_0001.HEIC", heic, REFUSE, HEIC),
        # Damaged pictures.
        BadFile("truncated-png", "cut.png", good_png[: len(good_png) * 6 // 10], REFUSE, DAMAGED),
        BadFile("truncated-jpeg", "cut.jpg", good_jpeg[: len(good_jpeg) // 2], REFUSE, DAMAGED),
        BadFile("png-bad-crc", "crc.png", bytes(broken_crc), REFUSE, DAMAGED),
        # Too many pixels: our own limit, Pillow's warning limit, Pillow's hard limit, a header that lies.
        BadFile("72-megapixels", "big.png", blank_bilevel_png(9000, 8000), REFUSE, TOO_MANY_PIXELS),
        BadFile("bomb-100-megapixels", "bomb1.png", blank_bilevel_png(10000, 10000), REFUSE, TOO_MANY_PIXELS),
        BadFile("bomb-400-megapixels", "bomb2.png", blank_bilevel_png(20000, 20000), REFUSE, TOO_MANY_PIXELS),
        BadFile("header-30000x30000", "liar.png", raw_png(30000, 30000, 8, 2, compressed=zlib.compress(b"\x00" * 64)),
                REFUSE, TOO_MANY_PIXELS),
        BadFile("one-pixel", "dot.png", encode(Image.new("RGB", (1, 1), "red"), "PNG"), REFUSE, TOO_SMALL),
        # Odd but valid pictures: converted, not refused.
        BadFile("cmyk-jpeg", "print.jpg", encode(cmyk, "JPEG", quality=95), ACCEPT, check=_check_cmyk, size=size),
        BadFile("grey-16bit-png", "scan16.png", encode(grey16, "PNG"), ACCEPT, check=_check_grey16, size=size),
        BadFile("rgb-16bit-png", "photo48.png", raw_png(w, h, 16, 2, rgb16_rows), ACCEPT, check=_check_rgb16, size=size),
        BadFile("palette-alpha-png", "sprite.png", palette_png, ACCEPT, check=_check_palette_alpha, size=size),
        BadFile("exif-rotated-jpeg", "phone.jpg", exif_jpeg, ACCEPT, check=_check_exif_upright, size=(64, 96)),
        BadFile("animated-gif", "anim.gif", gif, ACCEPT, check=_first_frame_red, size=size),
        BadFile("animated-webp", "anim.webp", webp, ACCEPT, check=_first_frame_red, size=size),
        BadFile("animated-png", "anim.png", apng, ACCEPT, check=_first_frame_red, size=size),
        BadFile("png-with-trailing-zip", "polyglot.png", good_png + trailing_zip, ACCEPT, check=_plain_rgb,
                size=good.size, absent=b"SMUGGLED-PAYLOAD"),
    ]


def tiny_lora_file(key: str = "lora_unet_down_blocks_0_attentions_0.lora_down.weight") -> bytes:
    """A well-formed safetensors file with one LoRA-named tensor: it passes the upload checks (a worker then
    matches it against the base model)."""
    return safetensors_bytes({key: {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, struct.pack("<4f", 0, 1, 2, 3))


def model_corpus() -> list[BadFile]:
    """Every LoRA-like upload the studio must refuse before anything is stored (none is a usable LoRA)."""
    lora_key = "lora_unet_down_blocks_0.lora_down.weight"
    return [
        BadFile("pickle-as-safetensors", "style.safetensors", pickle_payload(4), REFUSE, "pickle"),
        BadFile("pickle-protocol-2-as-safetensors", "style2.safetensors", pickle_payload(2), REFUSE, "pickle"),
        BadFile("pickle-protocol-0-as-safetensors", "style0.safetensors", pickle_payload(0), REFUSE, "not a safetensors"),
        BadFile("torch-pt-as-safetensors", "style3.safetensors", torch_checkpoint(), REFUSE, "pytorch checkpoint"),
        BadFile("torch-pt", "style.pt", torch_checkpoint(), REFUSE, "safetensors"),
        BadFile("ckpt-name", "model.ckpt", pickle_payload(2), REFUSE, "safetensors"),
        BadFile("zero-bytes", "empty.safetensors", b"", REFUSE, EMPTY),
        BadFile("png-as-safetensors", "picture.safetensors", encode(noisy((64, 64)), "PNG"), REFUSE, "not a safetensors"),
        BadFile("header-longer-than-file", "liar.safetensors",
                safetensors_bytes({lora_key: {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 8,
                                  header_size=1 << 40), REFUSE, "not a safetensors"),
        BadFile("header-not-json", "garbled.safetensors", safetensors_bytes(b"{not json at all" + b"\xff" * 8), REFUSE,
                "not a safetensors"),
        BadFile("header-a-list", "list.safetensors", safetensors_bytes([1, 2, 3]), REFUSE, "not a safetensors"),  # type: ignore[arg-type]
        BadFile("tensor-outside-file", "outside.safetensors",
                safetensors_bytes({lora_key: {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, b"\x00" * 16),
                REFUSE, "outside the file"),
        BadFile("tensor-shape-disagrees", "shape.safetensors",
                safetensors_bytes({lora_key: {"dtype": "F32", "shape": [64, 64], "data_offsets": [0, 16]}}, b"\x00" * 16),
                REFUSE, "damaged"),
        BadFile("tensor-bad-dtype", "dtype.safetensors",
                safetensors_bytes({lora_key: {"dtype": "OBJECT", "shape": [4], "data_offsets": [0, 16]}}, b"\x00" * 16),
                REFUSE, "no valid type"),
        BadFile("tensor-dtype-a-list", "dtypes.safetensors",
                safetensors_bytes({lora_key: {"dtype": ["F32"], "shape": [4], "data_offsets": [0, 16]}}, b"\x00" * 16),
                REFUSE, "no valid type"),
        BadFile("no-lora-keys", "whole.safetensors",
                safetensors_bytes({"model.diffusion.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                  b"\x00" * 16), REFUSE, "no lora weights"),
    ]


# File names that try to leave the store, hide their end, or overflow a column.
HOSTILE_NAMES = {
    "dotdot-slash": "../../etc/passwd.png",
    "dotdot-backslash": "..\\..\\x.png",
    "absolute-posix": "/etc/passwd.png",
    "absolute-windows": "C:\\Windows\\System32\\x.png",
    "nul-byte": "innocent.png\x00.exe.png",
    "very-long": "a" * 5000 + ".png",
    "dot-only": "..",
    "control-chars": "line\r\nbreak\ttab.png",
}

# Text for every text field: SQL, script and template injections, and characters that trip storage.
HOSTILE_TEXTS = {
    "sql-drop": "'; DROP TABLE assets; --",
    "sql-or": '" OR 1=1 --',
    "script-tag": "<script>alert(1)</script>",
    "jinja": "{{7*7}}",
    "jndi": "${jndi:ldap://x}",
    "format-string": "{0.__class__} {prompt} %s %(x)s %n",
    "like-wildcards": "100%_off",
    "unicode": "\u202eexe.gnp 海边的猫 🐈",
}
# Characters no text column can hold everywhere (PostgreSQL refuses NUL; UTF-8 has no lone surrogates):
# refused or cleaned, never a 500.
UNSTORABLE_TEXTS = {
    "nul-byte": "cat\x00dog",
    "lone-surrogate": "cat\ud800dog",
}


def write_corpus(folder: Path) -> list[Path]:
    """Write every corpus file to ``folder`` (images/ and models/), named by its id; returns the paths."""
    written = []
    for sub, corpus in (("images", image_corpus()), ("models", model_corpus())):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for item in corpus:
            path = folder / sub / f"{item.id}{Path(item.filename).suffix}"
            path.write_bytes(item.data)
            written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/bad")
    for path in write_corpus(target):
        print(f"{path.stat().st_size:>10}  {path}")
