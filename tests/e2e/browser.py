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
