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
        width, height = self.canvas
        layers = []
        for name, image in self.layers().items():
            box = self.box if name == "product" else Box(0, 0, width, height)
            layers.append({"name": name, "file": f"{name}.png", "mode": image.mode, "left": box.left, "top": box.top,
                           "width": box.width, "height": box.height})
        return {"format": "studio-layered-picture", "version": 1, "canvas": {"width": width, "height": height},
                "product_box": {"left": self.box.left, "top": self.box.top, "width": self.box.width, "height": self.box.height},
                "layers": layers, **self.info}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def manifest_bytes(picture: LayeredPicture) -> bytes:
    return json.dumps(picture.manifest(), ensure_ascii=False, indent=2).encode("utf-8")


def zip_bytes(picture: LayeredPicture) -> bytes:
    """Every layer as PNG plus the manifest; deterministic, so the same picture gives the same file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, image in picture.layers().items():
            archive.writestr(zipfile.ZipInfo(f"{name}.png", date_time=(2020, 1, 1, 0, 0, 0)), png_bytes(image))
        archive.writestr(zipfile.ZipInfo("manifest.json", date_time=(2020, 1, 1, 0, 0, 0)), manifest_bytes(picture))
    return buffer.getvalue()


def psd_bytes(picture: LayeredPicture) -> bytes:
    """A Photoshop file, bottom to top: background, shadow, product (cropped to its box, so it moves as one
    piece), and the mask as a hidden layer."""
    psd = PSDImage.new("RGB", picture.canvas)
    psd.append(PixelLayer.frompil(picture.background.convert("RGB"), psd, "Background"))
    if picture.shadow is not None:
        shadow_box = picture.shadow.getchannel("A").getbbox()
        if shadow_box:
            psd.append(PixelLayer.frompil(picture.shadow.crop(shadow_box), psd, "Shadow",
                                          top=shadow_box[1], left=shadow_box[0]))
    box = picture.box
    product = picture.product.crop((box.left, box.top, box.right, box.bottom))
    psd.append(PixelLayer.frompil(product, psd, "Product", top=box.top, left=box.left))
    mask_layer = PixelLayer.frompil(picture.mask.convert("RGB"), psd, "Mask")
    mask_layer.visible = False
    psd.append(mask_layer)
    buffer = io.BytesIO()
    psd.save(buffer)
    return buffer.getvalue()
