"""Synthetic "photos" for the tiny profile's face pack (engine/tiny_faces.py), whose detector finds bright
squares on a dark background and whose recognizer tells people apart by colour.

A photo is a dark, noisy background (values 10-60) with one bright square per face: its colour is the
person, with per-pixel noise and a fine chequer texture so the face is sharp (the variance of the
Laplacian over it is in the hundreds, against engine.faces.MIN_SHARPNESS of 60) unless ``blur`` softens it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

PERSON_A = (250, 200, 150)
PERSON_B = (150, 200, 250)
PHOTO_SIZE = (480, 640)  # width, height: a portrait phone photo
FACE_NOISE = 20  # per-pixel noise on a face, ± this
TEXTURE = 12  # a 2 px chequer of ± this on a face: fine detail, as skin and hair have
# Photos at most this many bits apart (of a 64-bit difference hash) are near-duplicates, as
# storage.loras.DUPLICATE_BITS counts them.
DUPLICATE_BITS = 4

Face = tuple[int, int, int, tuple[int, int, int]]  # x, y (top-left corner), side, RGB colour


def face_photo(faces: list[Face], size: tuple[int, int] = PHOTO_SIZE, seed: int = 0, blur: float = 0.0) -> Image.Image:
    """A ``size`` (width, height) photo with a bright square of ``side`` px at (x, y) per face; ``blur`` is a
    Gaussian blur's radius over the whole photo (3 takes a face's sharpness below MIN_SHARPNESS)."""
    width, height = size
    rng = np.random.default_rng(seed)
    pixels = rng.integers(10, 61, (height, width, 3)).astype(np.int16)
    for x, y, side, colour in faces:
        rows, columns = np.mgrid[0:side, 0:side]
        chequer = np.where((rows // 2 + columns // 2) % 2, TEXTURE, -TEXTURE)[..., None]
        square = np.asarray(colour, dtype=np.int16) + chequer + rng.integers(-FACE_NOISE, FACE_NOISE + 1, (side, side, 3))
        # Clipped to the photo: a face may reach past its edge.
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + side, height), min(x + side, width)
        pixels[y0:y1, x0:x1] = square[y0 - y:y1 - y, x0 - x:x1 - x]
    photo = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return photo.filter(ImageFilter.GaussianBlur(blur)) if blur else photo


def difference_hash(image: Image.Image) -> int:
    """64 bits: whether each pixel of a 9×8 grey thumbnail is brighter than its right neighbour (the hash
    storage.loras compares uploads by)."""
    grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = 0
    for brighter in (grey[:, :-1] > grey[:, 1:]).flatten():
        bits = (bits << 1) | int(brighter)
    return bits


def person_photos(colour: tuple[int, int, int], count: int, seed: int = 0, size: tuple[int, int] = PHOTO_SIZE) -> list[Image.Image]:
    """``count`` photos of one person: the face 150-260 px across at different places, its colour jittered
    by up to 4 units per channel, different noise, and no two photos near-duplicates of each other."""
    width, height = size
    rng = np.random.default_rng(seed)
    photos: list[Image.Image] = []
    hashes: list[int] = []
    while len(photos) < count:
        side = int(rng.integers(150, min(261, width + 1, height + 1)))
        x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        jittered = tuple(int(np.clip(c + rng.integers(-4, 5), 0, 255)) for c in colour)
        photo = face_photo([(x, y, side, jittered)], size, seed=int(rng.integers(2**31)))
        bits = difference_hash(photo)
        if all(bin(bits ^ other).count("1") > DUPLICATE_BITS for other in hashes):
            photos.append(photo)
            hashes.append(bits)
    return photos
