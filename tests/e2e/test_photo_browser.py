"""A real browser uses the PhotoMaker & avatars tab: a digital avatar made from checked photos (one of them
of another person), trained, rendered into photo templates and deleted with every file of it; and a
PhotoMaker portrait from one photo with a stylization, then an attribute edit of it."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from pathlib import Path

import pytest

from storage.files import FileStore
from tests.e2e.browser import UI_TIMEOUT_MS, image_loaded, set_number, sync_api
from tests.support_faces import PERSON_A, PERSON_B, person_photos

pytestmark = pytest.mark.e2e

LIKENESS = re.compile(r"face similarity -?\d\.\d\d|no face found")


def write_photos(directory: Path, prefix: str, photos) -> list[Path]:
    paths = []
    for index, photo in enumerate(photos):
        paths.append(directory / f"{prefix}-{index + 1}.png")
        photo.save(paths[-1])
    return paths


def dismiss_toast(page, text: str) -> None:
    toast = page.get_by_test_id("toast-body").filter(has_text=text)
    sync_api.expect(toast).to_be_visible()
    toast.get_by_test_id("toast-close").click()
    sync_api.expect(toast).to_have_count(0)


def visible_cells(table, text: str):
    # A Gradio table keeps a hidden row to measure its cells: count the visible ones.
    return table.get_by_text(text).filter(visible=True)


def avatar_files(database: Path, name: str) -> tuple[list[tuple[str, str]], dict]:
    """Every file of the named avatar as (hash, extension), and the ids of its rows."""
    with sqlite3.connect(database) as db:
        avatar_id, lora_id = db.execute("SELECT id, lora_id FROM avatars WHERE name = ?", (name,)).fetchone()
        photos = db.execute("SELECT file_hash, crop_hash FROM avatar_photos WHERE avatar_id = ?", (avatar_id,)).fetchall()
        lora_hash, job_id, dataset = db.execute("SELECT file_hash, job_id, dataset FROM trained_models WHERE id = ?",
                                                (lora_id,)).fetchone()
        samples = db.execute("SELECT file_hash FROM assets WHERE job_id = ? AND stage = 'sample'", (job_id,)).fetchall()
    files = [(f, "png") for f, _ in photos] + [(c, "png") for _, c in photos if c] + [(lora_hash, "safetensors")]
    files += [(item["hash"], "png") for item in json.loads(dataset)] + [(s, "png") for (s,) in samples]
    return files, {"avatar": avatar_id, "lora": lora_id}


def test_a_digital_avatar_from_checked_photos_to_templates_and_deleted(page, studio, tmp_path):
    expect = sync_api.expect
    name = f"Avatar {uuid.uuid4().hex[:8]}"
    paths = write_photos(tmp_path, "alice", person_photos(PERSON_A, 6, seed=11))
    paths += write_photos(tmp_path, "bob", person_photos(PERSON_B, 1, seed=12))
    page.get_by_role("tab", name="PhotoMaker & avatars").click()
    page.get_by_role("tab", name="Photo studio").click()

    page.locator("#studio-name textarea").fill(name)
    page.locator("#studio-subject textarea").fill("a woman")
    page.locator("#studio-files input[type=file]").set_input_files([str(p) for p in paths])
    expect(page.locator("#studio-files").get_by_role("row")).to_have_count(7)
    page.locator("#studio-check").click()
    status = page.locator("#studio-status")
    expect(status).to_contain_text("7 of 7 photo(s) pass the upload checks")
    verdicts = page.locator("#studio-verdicts")
    expect(visible_cells(verdicts, "✓ usable")).to_have_count(7)
    for path in paths:
        expect(visible_cells(verdicts, path.name)).to_have_count(1)

    page.locator("#studio-create").click()
    expect(status).to_contain_text("Checked: 6 of 7 photos usable", timeout=UI_TIMEOUT_MS)
    photos = page.locator("#studio-photos")
    expect(visible_cells(photos, "✓ usable")).to_have_count(6)
    rejected = photos.get_by_role("row").filter(has_text="bob-1.png").filter(visible=True)
    expect(rejected).to_contain_text("✗ rejected")
    expect(rejected).to_contain_text("different person")
    expect(page.locator("#studio-crops img")).to_have_count(6)
    assert image_loaded(page.locator("#studio-crops img").first), "a face crop did not load"
    expect(page.locator("#studio-avatar input")).to_have_value(f"{name} · checked")
    expect(page.locator("#studio-avatar-state")).to_contain_text("Ready to train")

    set_number(page, "studio-train-steps", 20)
    page.locator("#studio-train").click()
    expect(page.locator("#studio-train-status")).to_contain_text(f"Trained '{name}' (20 steps)", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#studio-avatar input")).to_have_value(f"{name} · ready")

    templates = page.locator("#studio-templates")
    templates.get_by_label("ID photo, white background").check()  # with a composition sketch
    templates.get_by_label("Speaker on stage").check()  # without
    set_number(page, "studio-best-of", 1)
    page.locator("#studio-render").click()
    expect(page.locator("#studio-render-status")).to_contain_text("Done: 2 picture(s)", timeout=UI_TIMEOUT_MS)
    gallery = page.locator("#studio-gallery")
    expect(gallery.locator("img")).to_have_count(2)
    assert all(image_loaded(gallery.locator("img").nth(i)) for i in range(2)), "a rendered photo did not load"
    captions = gallery.get_by_text(LIKENESS)
    expect(captions).to_have_count(2)
    text = gallery.inner_text()
    assert "ID photo, white background" in text and "Speaker on stage" in text, text

    data_dir = studio.log_path.parent
    files, ids = avatar_files(data_dir / "studio.sqlite", name)
    store = FileStore(data_dir / "files")
    assert len(files) >= 7 + 6 + 1 and all(store.exists(*f) for f in files), "the avatar's files are not all stored"

    # Deleting asks for the confirmation first.
    page.locator("#studio-delete").click()
    dismiss_toast(page, "I understand this deletes")
    page.locator("#studio-delete-confirm input[type=checkbox]").check()
    page.locator("#studio-delete").click()
    expect(page.locator("#studio-delete-status")).to_contain_text(f"Deleted '{name}'")
    expect(page.locator("#studio-avatar input")).to_have_value("")
    expect(page.locator("#studio-delete-confirm input[type=checkbox]")).not_to_be_checked()
    left = [f for f in files if store.exists(*f)]
    assert left == [], f"files of the deleted avatar remain: {left}"
    with sqlite3.connect(data_dir / "studio.sqlite") as db:
        assert db.execute("SELECT count(*) FROM avatars WHERE id = ?", (ids["avatar"],)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM avatar_photos WHERE avatar_id = ?", (ids["avatar"],)).fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM trained_models WHERE id = ?", (ids["lora"],)).fetchone() == (0,)
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


def test_photomaker_portrait_with_a_stylization_then_an_edit(page, studio, tmp_path):
    expect = sync_api.expect
    (photo,) = write_photos(tmp_path, "face", person_photos(PERSON_A, 1, seed=21))
    page.get_by_role("tab", name="PhotoMaker & avatars").click()
    page.get_by_role("tab", name="PhotoMaker", exact=True).click()

    page.locator("#photo-files input[type=file]").set_input_files(str(photo))
    expect(page.locator("#photo-files").get_by_role("row")).to_have_count(1)
    # A prompt that does not say who is in it is refused before anything is uploaded.
    page.locator("#photo-prompt textarea").fill("a garden at dusk")
    page.locator("#photo-generate").click()
    dismiss_toast(page, "with a class word")

    page.locator("#photo-prompt textarea").fill("a man in a garden")
    page.locator("#photo-stylization input").click()
    page.get_by_role("option", name="Pencil sketch · 铅笔素描").click()
    set_number(page, "photo-count", 1)
    set_number(page, "photo-best-of", 1)
    page.locator("#photo-generate").click()
    status = page.locator("#photo-status")
    expect(status).to_contain_text("Done: 1 picture(s)", timeout=UI_TIMEOUT_MS)
    gallery = page.locator("#photo-gallery")
    expect(gallery.locator("img")).to_have_count(1)
    assert image_loaded(gallery.locator("img").first), "the portrait did not load"
    expect(gallery.get_by_text(re.compile(r"Pencil sketch · (face similarity|no face found)"))).to_have_count(1)

    # Select it and redraw it with glasses: the before/after view shows both.
    edit = page.locator("#photo-edit")
    expect(edit).to_be_disabled()
    gallery.locator("img").first.click()
    expect(page.locator("#photo-selected")).to_contain_text("Pencil sketch")
    expect(edit).to_be_enabled()
    page.locator("#photo-edit-attr-glasses input").click()
    page.get_by_role("option", name="Round glasses · 圆框眼镜").click()
    edit.click()
    expect(status).to_contain_text("Edited: Pencil sketch", timeout=UI_TIMEOUT_MS)
    slider = page.locator("#photo-before-after img")
    expect(slider).to_have_count(2)
    assert all(image_loaded(slider.nth(i)) for i in range(2)), "the before/after pictures did not load"
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"
