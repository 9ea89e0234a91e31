"""A layered product picture and its exports: PNG layers, a manifest, a zip, and a PSD for designers.

After LayerDiff's idea of composable images: background, shadow and product stay separate, so a designer
can move the product, change the shadow or swap the background without regenerating anything.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass

from PIL import Image
from psd_tools import PSDImage
from psd_tools.api.layers import PixelLayer

from engine.product.compose import Box

LAYER_NAMES = ("background", "shadow", "product", "mask", "composite")


@dataclass
class LayeredPicture:
    background: Image.Image  # RGB, canvas-sized
    shadow: Image.Image | None  # RGBA, canvas-sized; None when the scene has no shadow
    product: Image.Image  # RGBA, canvas-sized, feathered edge
    mask: Image.Image  # L, canvas-sized
    composite: Image.Image  # RGB
    box: Box  # the product's place on the canvas
    info: dict  # scene, prompts, seed, sizes: what the manifest records beside the layers

    @property
    def canvas(self) -> tuple[int, int]:
        return self.composite.size

    def layers(self) -> dict[str, Image.Image]:
        found = {"background": self.background, "shadow": self.shadow, "product": self.product,
                 "mask": self.mask, "composite": self.composite}
        return {name: image for name, image in found.items() if image is not None}

    def manifest(self) -> dict:
        """Every layer file is the canvas's size, so the PNGs stack as they are; ``product_box`` says where
        the product sits, for a designer who moves it."""
        width, height = self.canvas
        layers = [{"name": name, "file": f"{name}.png", "mode": image.mode, "left": 0, "top": 0, "width": width,
                   "height": height} for name, image in self.layers().items()]
        return {"format": "studio-layered-picture", "version": 1, "canvas": {"width": width, "height": height},
                "product_box": {"left": self.box.left, "top": self.box.top, "width": self.box.width, "height": self.box.height},
                "layers": layers, **self.info}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def manifest_bytes(picture: LayeredPicture) -> bytes:
    return json.dumps(picture.manifest(), ensure_ascii=False, indent=2).encode("utf-8")


def zip_bytes(picture: LayeredPicture, pngs: dict[str, bytes] | None = None) -> bytes:
    """Every layer as PNG plus the manifest; ``pngs`` reuses layers already encoded. Deterministic, so
    the same picture gives the same file; PNGs are stored as they are (they are compressed already)."""
    pngs = pngs or {name: png_bytes(image) for name, image in picture.layers().items()}
    stamp = (2020, 1, 1, 0, 0, 0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in picture.layers():
            archive.writestr(zipfile.ZipInfo(f"{name}.png", date_time=stamp), pngs[name], compress_type=zipfile.ZIP_STORED)
        archive.writestr(zipfile.ZipInfo("manifest.json", date_time=stamp), manifest_bytes(picture),
                         compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def psd_bytes(picture: LayeredPicture) -> bytes:
    """A Photoshop file, bottom to top: background, shadow, product (cropped to its box, so it moves as one
    piece), and the mask as a hidden layer. ``frompil`` adds each layer to the file."""
    psd = PSDImage.new("RGB", picture.canvas)
    PixelLayer.frompil(picture.background.convert("RGB"), psd, "Background")
    if picture.shadow is not None:
        shadow_box = picture.shadow.getchannel("A").getbbox()
        if shadow_box:
            PixelLayer.frompil(picture.shadow.crop(shadow_box), psd, "Shadow", top=shadow_box[1], left=shadow_box[0])
    box = picture.box
    product = picture.product.crop((box.left, box.top, box.right, box.bottom))
    PixelLayer.frompil(product, psd, "Product", top=box.top, left=box.left)
    PixelLayer.frompil(picture.mask.convert("RGB"), psd, "Mask").visible = False
    buffer = io.BytesIO()
    psd.save(buffer)
    return buffer.getvalue()


def export_files(picture: LayeredPicture) -> dict[str, bytes]:
    """Each layer's PNG (composite aside), the manifest, the PSD and the zip, each layer encoded once."""
    pngs = {name: png_bytes(image) for name, image in picture.layers().items()}
    files = {name: data for name, data in pngs.items() if name != "composite"}
    files.update(manifest=manifest_bytes(picture), psd=psd_bytes(picture), zip=zip_bytes(picture, pngs))
    return files
