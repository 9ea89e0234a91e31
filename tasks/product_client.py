"""What the web side uses for product synthesis beyond submitting jobs: mask previews and corrections,
and re-running a picture on another canvas. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from engine.product.mask import (
    ADD_COLOR,
    ERASE_COLOR,
    MaskError,
    apply_brush,
    binary,
    check_mask,
    cut_out,
    overlay,
    to_image,
)
from engine.product.request import rerun_request
from storage import repo
from storage.materials import MaterialLibrary, MaterialView
from tasks.client import InvalidRequest, JobView, StudioClient

BRUSH_COLORS = {"add": ADD_COLOR, "erase": ERASE_COLOR}


@dataclass
class MaskPreview:
    material: MaterialView
    photo: Image.Image
    mask: Image.Image | None
    overlay: Image.Image  # the photo with the background dimmed, or the photo alone before a cut-out
    cutout: Image.Image | None  # RGBA, cropped to the product

    @property
    def status(self) -> str:
        m = self.material
        if self.mask is None:
            return f"**{m.name}**: no mask yet. Cut out the product, or paint it with the green brush."
        source = {"alpha": "the photo's own transparency", "segmenter": "background removal",
                  "brush": "your brush correction"}[m.mask_source]
        note = f" {m.mask_note}" if m.mask_note else ""
        return f"**{m.name}**: mask from {source}.{note}"


class ProductClient:
    def __init__(self, library: MaterialLibrary, studio: StudioClient):
        self.library, self.studio = library, studio

    def preview(self, owner_id: str, material_id: str) -> MaskPreview:
        material = self.library.get(owner_id, material_id)
        if material is None:
            raise InvalidRequest(f"No material {material_id} in your library.")
        photo = self.library.image(material)
        mask = self.library.mask(material)
        return MaskPreview(material, photo, mask, overlay(photo, mask) if mask else photo.convert("RGB"),
                           cut_out(photo, mask) if mask is not None and binary(mask).any() else None)

    def _save(self, owner_id: str, material_id: str, mask: Image.Image) -> MaterialView:
        try:
            note = check_mask(mask)
        except MaskError as exc:
            raise InvalidRequest(str(exc)) from exc
        return self.library.save_mask(owner_id, material_id, mask, "brush", note)

    def correct_mask(self, owner_id: str, material_id: str, strokes: Image.Image) -> MaterialView:
        """Apply brush strokes (green adds, red erases) to the material's mask, or to an empty one."""
        preview = self.preview(owner_id, material_id)
        base = preview.mask if preview.mask is not None else Image.new("L", preview.photo.size, 0)
        return self._save(owner_id, material_id, apply_brush(base, strokes))

    def replace_mask(self, owner_id: str, material_id: str, mask: Image.Image) -> MaterialView:
        """A whole new mask (white on the product), e.g. painted in another tool."""
        return self._save(owner_id, material_id, to_image(binary(mask)))

    def rerun(self, owner_id: str, asset_id: str, canvas_format: str, width: int | None = None,
              height: int | None = None, origin: str = "api") -> JobView:
        """Re-render a product picture's scene, seed and product on another canvas."""
        with self.studio.db.session() as session:
            asset = repo.get_asset(session, asset_id, owner_id)
            params = dict(asset.params) if asset is not None else {}
        if params.get("kind") != "product":
            raise InvalidRequest(f"No product picture {asset_id} to re-run.")
        return self.studio.submit(owner_id, "product", rerun_request(asset_id, params, canvas_format, width, height), origin)
