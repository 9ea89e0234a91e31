"""A real browser (Debian chromium through Playwright) uses the Create and My assets tabs."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e.browser import UI_TIMEOUT_MS, image_loaded, sync_api
from tests.support import http_json

pytestmark = pytest.mark.e2e


def test_create_then_find_it_in_my_assets(page, studio, tmp_path):
    expect = sync_api.expect
    banner = page.locator(".noise-banner").filter(has_text="images are random noise").first
    expect(banner).to_be_visible()

    # An empty prompt is refused with a message the user can act on.
    page.locator("#create-generate").click()
    toast = page.get_by_test_id("toast-body").filter(has_text="The prompt is empty")
    expect(toast).to_be_visible()
    toast.get_by_test_id("toast-close").click()
    expect(toast).to_have_count(0)
    expect(page.locator("#create-gallery img")).to_have_count(0)

    word = f"otter{uuid.uuid4().hex[:8]}"
    prompt = f"a sleepy {word} in a kelp forest"
    page.locator("#create-prompt textarea").fill(prompt)
    page.locator("#create-generate").click()

    status = page.locator("#create-status")
    expect(status).to_contain_text("Done: 1 image(s), 64×64 px", timeout=UI_TIMEOUT_MS)
    seed = re.search(r"seed (\d+)", status.inner_text()).group(1)
    gallery = page.locator("#create-gallery")
    image = gallery.locator("img").first
    expect(image).to_be_visible()
    assert gallery.locator("img").count() == 1
    assert image_loaded(image), "the generated image did not load in the gallery"
    expect(gallery).to_contain_text(f"seed {seed}")
    page.screenshot(path=str(tmp_path / "create.png"), full_page=True)

    # The image was stored as an asset made in the Create tab.
    _, assets = http_json("GET", f"{studio.url}/api/v1/assets?search={word}")
    assert [(a["origin"], a["params"]["seed"], a["prompt"]) for a in assets] == [("create", int(seed), prompt)]

    # My assets lists it with its prompt as caption.
    page.get_by_role("tab", name="My assets").click()
    assets_gallery = page.locator("#assets-gallery")
    expect(page.locator(".noise-banner").filter(has_text="images are random noise").last).to_be_visible()
    card = assets_gallery.locator("button", has_text=word).first
    expect(card).to_be_visible()
    assert image_loaded(card.locator("img"))
    page.screenshot(path=str(tmp_path / "assets.png"), full_page=True)

    # Search narrows the list: another word finds nothing, the prompt's word finds it.
    search = page.get_by_label("Search prompts")
    search.fill(f"walrus{uuid.uuid4().hex[:8]}")
    search.press("Enter")
    expect(page.get_by_text("0 asset(s)", exact=True)).to_be_visible()
    expect(assets_gallery.locator("img")).to_have_count(0)
    search.fill(word)
    search.press("Enter")
    expect(page.get_by_text("1 asset(s)", exact=True)).to_be_visible()
    expect(assets_gallery.locator("button", has_text=word)).to_have_count(1)

    # Select it: its size, seed and download link show; favourite it; send its settings back to Create.
    assets_gallery.locator("button", has_text=word).first.click()
    info = page.locator("#assets-info")
    expect(info).to_contain_text(f"64×64 px · seed {seed}")
    expect(info.get_by_role("link", name="Download PNG")).to_have_attribute("href", re.compile(r"/api/v1/assets/\w+/file"))
    page.locator("#assets-favourite").click()
    expect(info).to_contain_text("★ favourite")
    _, favourites = http_json("GET", f"{studio.url}/api/v1/assets?favourites=true&search={word}")
    assert len(favourites) == 1
    page.locator("#assets-reuse").click()
    expect(page.get_by_role("tab", name="Create", selected=True)).to_be_visible()
    expect(page.locator("#create-prompt textarea")).to_have_value(prompt)
    expect(page.get_by_label("Seed (-1 = random)")).to_have_value(seed)

    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def test_a_creation_chat_in_the_browser(page, studio, tmp_path):
    expect = sync_api.expect
    page.get_by_role("tab", name="Creation chat").click()
    word = f"heron{uuid.uuid4().hex[:6]}"
    message = page.locator("#chat-message textarea")
    history = page.locator("#chat-history")
    candidates = page.locator("#chat-candidates")
    mapping = page.locator("#chat-mapping")

    # An empty message gets a reply in the chat and creates nothing.
    page.locator("#chat-send").click()
    expect(history).to_contain_text("The message is empty")

    turns = [(f"a {word} standing in a pond", word), ("改成黄昏", "at dusk"), ("不要人物", "people, person, human figure"),
             ("换成水彩风格", "watercolor")]
    for text, prompt_has in turns:
        message.fill(text)
        page.locator("#chat-send").click()
        expect(mapping).to_contain_text(prompt_has, timeout=UI_TIMEOUT_MS)
        expect(history).to_contain_text(text)
        expect(candidates.locator("img")).to_have_count(4, timeout=UI_TIMEOUT_MS)
    assert image_loaded(candidates.locator("img").first)
    captions = candidates.inner_text()
    scores = [float(s) for s in re.findall(r"CLIP (-?\d+\.\d)", captions)]
    assert len(scores) == 4 and scores == sorted(scores, reverse=True)
    expect(history.locator("img").first).to_be_visible()  # images inline in the conversation
    page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)

    _, listing = http_json("GET", f"{studio.url}/api/v1/conversations")
    conv = next(c for c in listing if word in c["title"])
    _, body = http_json("GET", f"{studio.url}/api/v1/conversations/{conv['id']}")
    assert len(body["path"]) == 4 and len({t["seed"] for t in body["turns"]}) == 1

    # Undo the last turn: the conversation reads three turns again and the mapping is turn 3's.
    page.locator("#chat-undo").click()
    expect(history).not_to_contain_text("换成水彩风格")
    expect(mapping).to_contain_text("people, person, human figure")
    expect(mapping).not_to_contain_text("watercolor")
    _, body = http_json("GET", f"{studio.url}/api/v1/conversations/{conv['id']}")
    assert len(body["path"]) == 3 and len(body["turns"]) == 4

    # Pick the second candidate and continue in Create with its settings.
    candidates.locator("button").nth(1).click()
    expect(page.locator("#chat-selected")).to_contain_text("Candidate 2")
    page.locator("#chat-continue").click()
    expect(page.get_by_role("tab", name="Create", selected=True)).to_be_visible()
    expect(page.locator("#create-prompt textarea")).to_have_value(re.compile(f"{word}.*at dusk"))
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"
