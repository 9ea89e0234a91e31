"""A real browser uses the Game assets tab: transparent character sprites with a sprite sheet, then a style LoRA
trained from five pictures with its live loss curve and samples."""

from __future__ import annotations

import io
import urllib.request
import uuid

import pytest
from PIL import Image

from tests.e2e.browser import UI_TIMEOUT_MS, image_loaded, set_number, sync_api
from tests.support import http_json, training_pngs

pytestmark = pytest.mark.e2e



def stored_image(studio, asset: dict) -> Image.Image:
    with urllib.request.urlopen(studio.url + asset["file_url"], timeout=10) as response:
        image = Image.open(io.BytesIO(response.read()))
        image.load()
        return image


def test_generate_transparent_sprites_and_a_sprite_sheet(page, studio):
    expect = sync_api.expect
    word = f"golem{uuid.uuid4().hex[:8]}"
    page.get_by_role("tab", name="Game assets").click()
    page.locator("#game-prompt textarea").fill(f"a mossy stone {word}")
    expect(page.locator("#game-asset-type").get_by_label("Character · 角色")).to_be_checked()
    expect(page.locator("#game-transparent input[type=checkbox]")).to_be_checked()
    page.locator("#game-sheet input[type=checkbox]").check()
    set_number(page, "game-count", 3)
    page.get_by_text("Size, steps and seed").click()
    expect(page.locator("#game-steps input[type=number]")).to_be_visible()
    set_number(page, "game-steps", 2)
    expect(page.locator("#game-steps input[type=number]")).to_have_value("2")
    page.locator("#game-generate").click()

    expect(page.locator("#game-status")).to_contain_text("Done: 4 asset(s)", timeout=UI_TIMEOUT_MS)
    gallery = page.locator("#game-gallery")
    expect(gallery.locator("img")).to_have_count(4)
    for index in range(4):
        assert image_loaded(gallery.locator("img").nth(index)), f"gallery image {index} did not load"
    expect(gallery).to_contain_text("sprite sheet")

    _, assets = http_json("GET", f"{studio.url}/api/v1/assets?origin=game&search={word}")
    assert len(assets) == 4, [a["id"] for a in assets]
    assert sorted(a["kind"] for a in assets) == ["image", "image", "image", "sprite_sheet"]
    (sheet,) = [a for a in assets if a["kind"] == "sprite_sheet"]
    assert len(sheet["params"]["frames"]) == 3
    assert {a["params"]["steps"] for a in assets} == {2}
    for asset in assets:
        image = stored_image(studio, asset)
        assert image.format == "PNG" and image.mode == "RGBA"
        assert image.size == (asset["width"], asset["height"])
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def test_train_a_style_and_watch_its_curve_and_samples(page, studio, tmp_path):
    expect = sync_api.expect
    paths = []
    for name, data in training_pngs(5):
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    name = f"Blocks {uuid.uuid4().hex[:8]}"

    page.get_by_role("tab", name="Game assets").click()
    page.get_by_role("tab", name="Train a style").click()
    page.locator("#train-files input[type=file]").set_input_files([str(p) for p in paths])
    expect(page.locator("#train-files").get_by_role("row")).to_have_count(5)
    page.locator("#train-check").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("5 of 5 image(s) usable")
    verdicts = page.locator("#train-verdicts")
    # The table keeps a hidden row to measure its cells: count the visible ones.
    for path in paths:
        expect(verdicts.get_by_text(path.name, exact=True).filter(visible=True)).to_have_count(1)
    expect(verdicts.get_by_text("✓ usable", exact=True).filter(visible=True)).to_have_count(5)

    page.get_by_label("LoRA name").fill(name)
    page.get_by_label("Trigger word").fill("blockstyle")
    set_number(page, "train-steps", 20)
    page.get_by_text("More training settings").click()
    set_number(page, "train-sample-every", 10)
    page.locator("#train-start").click()

    expect(status).to_contain_text(f"Trained '{name}': 20 steps", timeout=UI_TIMEOUT_MS)
    samples = page.locator("#train-samples img")
    expect(samples).to_have_count(2)
    assert all(image_loaded(samples.nth(i)) for i in range(2)), "a training sample did not load"
    expect(page.locator("#train-samples")).to_contain_text("step 10")
    # The loss curve and its smoothed line, on numeric axes (step 1 to 20).
    plot = page.locator("#train-loss")
    expect(plot.locator("[aria-roledescription='line mark']")).to_have_count(2)
    expect(plot.locator("[aria-label^=\"X-axis titled 'step' for a linear scale\"]")).to_have_count(1)
    expect(plot.locator("[aria-label^='step: 20; loss: ']")).to_have_count(2)
    expect(plot.locator("[aria-label*='loss: undefined']")).to_have_count(0)

    _, loras = http_json("GET", f"{studio.url}/api/v1/loras?usable=true")
    (lora,) = [item for item in loras if item["name"] == name]
    assert len(lora["losses"]) == 20 and sorted(s["step"] for s in lora["samples"]) == [10, 20]
    assert lora["trigger"] == "blockstyle" and len(lora["images"]) == 5
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"

    # After a reload the training can be shown again, curve and samples.
    page.reload()
    page.get_by_role("tab", name="Game assets").click()
    page.get_by_role("tab", name="Train a style").click()
    page.locator("#train-watch input").click()
    page.get_by_role("option", name=f"{name} · ready").click()
    expect(status).to_contain_text(f"Trained '{name}': 20 steps", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#train-samples img")).to_have_count(2)
    expect(plot.locator("[aria-label^='step: 20; loss: ']")).to_have_count(2)
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"
