"""Driving Debian's chromium through Playwright: never `playwright install`, which downloads browsers."""

from __future__ import annotations

from pathlib import Path

from playwright import sync_api

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
UI_TIMEOUT_MS = 60_000


def image_loaded(locator, timeout_ms: float = 10_000) -> bool:
    """Whether the image really loaded (not a broken-image icon); thumbnails load lazily, so wait a little."""
    try:
        locator.page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                       arg=locator.element_handle(), timeout=timeout_ms)
    except sync_api.TimeoutError:
        return False
    return True


def set_number(page, elem_id: str, value: int) -> None:
    """Type into a slider's or number's box and leave it, as a user does; a box that was still being drawn
    (an accordion just opened on a busy machine) can drop what was typed, and then the user types again."""
    box = page.locator(f"#{elem_id} input[type=number]")
    for attempt in range(3):
        box.fill(str(value))
        box.press("Enter")
        box.blur()
        try:
            sync_api.expect(box).to_have_value(str(value), timeout=3_000)
            return
        except AssertionError:
            if attempt == 2:
                raise
