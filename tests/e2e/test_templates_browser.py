"""A real browser uses the Template square and the Image-to-image tab: a studio template with a blank to fill
opens Create set up, its picture is saved back as the user's own template; and a result sent from Create to
Image-to-image is redrawn keeping its edges."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.e2e.browser import UI_TIMEOUT_MS, image_loaded, sync_api
from tests.support import ROOT, http_json

pytestmark = pytest.mark.e2e

TEMPLATE_TITLE = "Spring Festival poster"


def studio_template(title: str) -> dict:
    catalogue = json.loads((ROOT / "templates" / "industry_templates.json").read_text(encoding="utf-8"))
    templates = catalogue if isinstance(catalogue, list) else catalogue["templates"]
    return next(t for t in templates if t["title"] == title)


def style_label(name: str) -> str:
    """The style dropdown's label for a style: "<label> · <label_zh>", as the form shows it."""
    styles = json.loads((ROOT / "templates" / "styles.json").read_text(encoding="utf-8"))
    styles = styles if isinstance(styles, list) else styles["styles"]
    style = next(s for s in styles if s["name"] == name)
    return f"{style['label']} · {style['label_zh']}"


def dismiss_toast(page, text: str) -> None:
    toast = page.get_by_test_id("toast-body").filter(has_text=text)
    sync_api.expect(toast).to_be_visible()
    toast.get_by_test_id("toast-close").first.click()
    sync_api.expect(toast).to_have_count(0)


def listing_summary(studio, search: str = "", source: str = "all") -> str:
    """What the square's summary says for these filters, counted through the REST API."""
    status, cards = http_json("GET", f"{studio.url}/api/v1/templates?search={search}&source={source}")
    assert status == 200, (status, cards)
    return f"{len(cards)} template(s)" if cards else "No template matches: clear the search or the tags."


def newest_asset(studio, origin: str, search: str | None = None) -> dict:
    query = f"origin={origin}&limit=1" + (f"&search={search}" if search else "")
    status, assets = http_json("GET", f"{studio.url}/api/v1/assets?{query}")
    assert status == 200 and assets, (status, assets)
    return assets[0]


def test_choose_a_template_fill_its_blank_and_generate(page, studio, tmp_path):
    expect = sync_api.expect
    template = studio_template(TEMPLATE_TITLE)
    (blank,) = template["fields"]
    style = template["settings"]["style"]

    # Each listing replaces the gallery and the selection, and listings run side by side: wait for each to show
    # before the next, or a slower earlier one lands last.
    summary = page.locator("#templates-summary")
    page.get_by_role("tab", name="Template square").click()
    expect(summary).to_have_text(listing_summary(studio))
    search = page.locator("#templates-search").get_by_role("textbox")
    search.fill("festival")
    search.press("Enter")
    expect(summary).to_have_text(listing_summary(studio, "festival"))
    card = page.locator("#templates-gallery button").filter(has_text=f"{TEMPLATE_TITLE} · ")
    expect(card).to_have_count(1)
    assert image_loaded(card.locator("img")), "the template's card picture did not load"
    card.locator("img").click()
    expect(page.locator("#templates-details")).to_contain_text(TEMPLATE_TITLE)
    field = page.locator("#templates-field-0")
    expect(field).to_be_visible()
    expect(field).to_contain_text(f"{blank['label']} · {blank['label_zh']}")
    expect(page.locator("#templates-field-1")).to_be_hidden()
    use = page.locator("#templates-use")
    expect(use).to_be_enabled()

    # Using it with the blank empty says which blank to fill; nothing opens.
    use.click()
    dismiss_toast(page, f"Fill in: {blank['label']}")
    expect(page.get_by_role("tab", name="Template square", selected=True)).to_be_visible()

    field.get_by_role("textbox").fill("dragon")
    use.click()
    expect(page.get_by_role("tab", name="Create", exact=True, selected=True)).to_be_visible()
    dismiss_toast(page, f"“{TEMPLATE_TITLE}” is set up in Create: check it and press Generate.")
    expect(page.locator("#create-prompt textarea")).to_have_value(re.compile(r"\bdragon\b"))
    expect(page.locator("#create-style input")).to_have_value(style_label(style))

    page.locator("#create-generate").click()
    status = page.locator("#create-status")
    expect(status).to_contain_text(re.compile(r"Done: 1 image\(s\), \d+×\d+ px"), timeout=UI_TIMEOUT_MS)
    seed = int(re.search(r"seed (\d+)", status.inner_text()).group(1))
    expect(page.locator("#create-gallery img")).to_have_count(1)
    assert image_loaded(page.locator("#create-gallery img").first)

    asset = newest_asset(studio, "create")
    assert "dragon" in asset["prompt"], asset["prompt"]
    assert asset["params"]["style"] == style and asset["params"]["seed"] == seed, asset["params"]

    # My assets: select that picture and save it as the user's own template. Opening the tab lists the assets,
    # newest first, and clears the selection: wait for the list before selecting.
    page.get_by_role("tab", name="My assets").click()
    expect(page.get_by_text(re.compile(r"^\d+ asset\(s\)$"))).to_be_visible()
    picture = page.locator("#assets-gallery button").filter(has_text="dragon").first
    expect(picture).to_be_visible()
    picture.click()
    expect(page.locator("#assets-info")).to_contain_text(f"seed {seed}")
    title = f"Dragon poster {uuid.uuid4().hex[:8]}"
    page.locator(".label-wrap").filter(has_text="Save as template").click()
    title_box = page.locator("#assets-template-title").get_by_role("textbox")
    expect(title_box).to_be_visible()
    title_box.fill(title)
    expect(page.locator("#assets-template-shared input[type=checkbox]")).not_to_be_checked()
    page.locator("#assets-template-save").click()
    expect(page.locator("#assets-template-status")).to_contain_text(
        f"Saved “{title}” to the Template square (Create; only you see it).")

    # The Template square lists it under Mine. Opening the square lists again (still searching "festival")
    # and clears the selected template.
    page.get_by_role("tab", name="Template square").click()
    expect(page.locator("#templates-details")).to_have_text("Select a template.")
    page.get_by_role("radio", name="Mine", exact=True).check()
    expect(summary).to_have_text(listing_summary(studio, "festival", "mine"))
    search.fill("")
    search.press("Enter")
    expect(summary).to_have_text(listing_summary(studio, "", "mine"))
    mine = page.locator("#templates-gallery button").filter(has_text=title)
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text("→ Create · mine")
    expect(page.locator("#templates-gallery button").filter(has_text=f"{TEMPLATE_TITLE} · ")).to_have_count(0)
    assert image_loaded(mine.locator("img")), "the saved template's picture did not load"
    page.screenshot(path=str(tmp_path / "templates-mine.png"), full_page=True)

    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def test_send_a_result_to_image_to_image_and_keep_its_edges(page, studio, tmp_path):
    expect = sync_api.expect
    word = f"lighthouse{uuid.uuid4().hex[:8]}"
    page.locator("#create-prompt textarea").fill(f"a {word} on a rocky shore")
    page.locator("#create-generate").click()
    expect(page.locator("#create-status")).to_contain_text("Done: 1 image(s)", timeout=UI_TIMEOUT_MS)
    source = newest_asset(studio, "create", search=word)

    # Select the picture; the panel beside the gallery shows its link once the selection has arrived.
    page.locator("#create-gallery img").first.click()
    expect(page.get_by_role("link", name="Download PNG")).to_have_attribute(
        "href", f"/api/v1/assets/{source['id']}/file")
    page.locator("#create-send").click()
    expect(page.get_by_role("tab", name="Image-to-image", exact=True, selected=True)).to_be_visible()
    source_info = page.locator("#img2img-source-info")
    expect(source_info).to_contain_text("Source: your result")
    expect(source_info).to_contain_text(source["id"])
    expect(page.locator("#img2img-source img")).to_be_visible()

    keep_edges = page.locator("#img2img-keep-edges input[type=checkbox]")
    expect(keep_edges).to_be_enabled()
    keep_edges.check()
    expect(keep_edges).to_be_checked()
    redraw = f"harbour{uuid.uuid4().hex[:8]}"
    page.locator("#img2img-prompt textarea").fill(f"the {redraw} as a pencil drawing")
    page.locator("#img2img-generate").click()
    status = page.locator("#img2img-status")
    expect(status).to_contain_text(re.compile(r"Done: 1 picture\(s\), \d+×\d+ px"), timeout=UI_TIMEOUT_MS)
    expect(status).to_contain_text("Structure (edges) map")
    expect(page.locator("#img2img-gallery img")).to_have_count(1)
    maps = page.locator("#img2img-maps img")
    expect(maps).to_have_count(1)
    assert image_loaded(maps.first), "the edges map did not load"
    page.screenshot(path=str(tmp_path / "img2img.png"), full_page=True)

    result = newest_asset(studio, "img2img", search=redraw)
    assert result["stage"] == "final" and result["parent_id"] == source["id"], result
    assert result["params"]["controls"] == [{"kind": "edges", "weight": 0.8}], result["params"]
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"
