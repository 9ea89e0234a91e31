"""A real browser makes a product picture: upload a photo, cut it out, correct the mask with the brush,
generate on a custom canvas, and download the layers as a zip."""

from __future__ import annotations

import io
import json
import urllib.request
import uuid
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.e2e.browser import UI_TIMEOUT_MS, image_loaded, sync_api
from tests.support import http_json

pytestmark = pytest.mark.e2e

PHOTO_SIZE = (160, 200)
CANVAS = (96, 128)


def bottle_photo(path) -> np.ndarray:
    """A blue bottle with a red cap on a light background; returns the known mask."""
    photo = Image.new("RGB", PHOTO_SIZE, (240, 240, 240))
    draw = ImageDraw.Draw(photo)
    draw.rectangle((60, 50, 100, 185), fill=(30, 90, 160))
    draw.rectangle((72, 25, 88, 50), fill=(200, 40, 40))
    photo.save(path)
    return np.asarray(photo.convert("L")) < 200


def material_mask(studio, material: dict) -> np.ndarray:
    with urllib.request.urlopen(studio.url + material["mask_url"], timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("L")) > 127


def test_upload_correct_the_mask_generate_and_download_the_layers(page, studio, tmp_path):
    expect = sync_api.expect
    name = f"bottle{uuid.uuid4().hex[:8]}"
    known = bottle_photo(tmp_path / f"{name}.png")
    page.get_by_role("tab", name="Product synthesis").click()

    # Generating before choosing a product says what to do.
    page.locator("#product-generate").click()
    toast = page.get_by_test_id("toast-body").filter(has_text="Pick the product photo")
    expect(toast).to_be_visible()
    toast.get_by_test_id("toast-close").click()

    page.locator("#product-upload input[type=file]").set_input_files(str(tmp_path / f"{name}.png"))
    status = page.locator("#product-mask-status")
    expect(status).to_contain_text(f"{name}: no mask yet", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#product-material input")).to_have_value(f"{name} (product, 160×200)")

    page.locator("#product-cutout").click()
    # The first cut-out loads the segmenter on the worker.
    expect(status).to_contain_text("mask from background removal", timeout=UI_TIMEOUT_MS)
    _, materials = http_json("GET", f"{studio.url}/api/v1/materials?search={name}")
    cut = material_mask(studio, materials[0])
    assert (cut & known).sum() / (cut | known).sum() > 0.95

    # Saving before painting says to paint first, and leaves the editor ready for strokes.
    page.locator("#product-save-mask").click()
    notice = page.get_by_test_id("toast-body").filter(has_text="Paint on the photo first")
    expect(notice).to_be_visible()
    expect(status).not_to_contain_text("Error")

    # Paint a green stroke over the background to the right of the bottle: the mask grows there.
    editor = page.locator("#product-mask-editor")
    page.wait_for_timeout(2500)  # the editor redraws its canvas with the new mask after the status shows
    canvas = editor.locator("canvas").last
    # A stroke drawn while a busy editor is still redrawing (it drops the chosen tool), or under a notice, is
    # lost, and saving says to paint first; a user picks the brush and paints again, and so does the test
    # (at most four strokes).
    for attempt in range(4):
        for close in page.get_by_test_id("toast-close").all():
            close.click()
        # The brush again each time: an editor that redraws with the new mask after the click drops the tool.
        editor.get_by_role("button", name="Brush", exact=True).click()
        page.wait_for_timeout(300)
        # Centred, so the whole stroke is inside the viewport (a mouse event outside it reaches nothing).
        canvas.evaluate("element => element.scrollIntoView({block: 'center'})")
        box = canvas.bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= page.viewport_size["height"], box
        page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        for i in range(1, 11):
            page.mouse.move(box["x"] + box["width"] * (0.75 + 0.01 * i), box["y"] + box["height"] * (0.4 + 0.02 * i))
        page.mouse.up()
        page.wait_for_timeout(1500)  # the editor exports its layer after the stroke ends
        page.locator("#product-save-mask").click()
        saved = status.filter(has_text="mask from your brush correction")
        lost = page.get_by_test_id("toast-body").filter(has_text="Paint on the photo first")
        expect(saved.or_(lost).first).to_be_visible(timeout=UI_TIMEOUT_MS)
        if saved.count() or attempt == 3:
            break
        page.wait_for_timeout(2500)
    expect(status).to_contain_text("mask from your brush correction")
    _, materials = http_json("GET", f"{studio.url}/api/v1/materials?search={name}")
    corrected = material_mask(studio, materials[0])
    assert corrected.sum() > cut.sum()
    assert (corrected & ~known)[:, 110:].any(), "the stroke right of the bottle did not reach the mask"

    page.locator("#product-format").get_by_label("Custom pixels").check()
    page.locator("#product-width input").fill(str(CANVAS[0]))
    page.locator("#product-height input").fill(str(CANVAS[1]))
    page.locator("#product-generate").click()
    expect(page.locator("#product-status")).to_contain_text(f"Done: 1 picture(s), {CANVAS[0]}×{CANVAS[1]} px",
                                                            timeout=UI_TIMEOUT_MS)
    picture = page.locator("#product-gallery img").first
    assert image_loaded(picture)
    picture.click()
    expect(page.locator("#product-layers img")).to_have_count(4)

    link = page.locator("#product-downloads a").filter(has_text="Layers as PNG (zip)")
    with page.expect_download() as download_info:
        link.click()
    archive = zipfile.ZipFile(download_info.value.path())
    names = set(archive.namelist())
    assert names == {"background.png", "shadow.png", "product.png", "mask.png", "composite.png", "manifest.json"}
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["canvas"] == {"width": CANVAS[0], "height": CANVAS[1]}
    assert manifest["material"]["name"] == name
    composite = Image.open(io.BytesIO(archive.read("composite.png")))
    assert composite.size == CANVAS
    assert not page.errors
