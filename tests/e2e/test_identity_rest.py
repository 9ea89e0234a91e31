"""Identity portraits and the photo studio through the REST API, over HTTP against the running studio (tiny
profile, real worker): the catalogues, a PhotoMaker portrait and an attribute edit, an avatar per style, and
a digital avatar from checked photos through training and photo templates to its deletion."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from tests.support_faces import PERSON_A, PERSON_B, face_photo, person_photos

pytestmark = pytest.mark.e2e

FAST = {"steps": 2, "seed": 3}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def http(studio):
    with httpx.Client(base_url=f"{studio.url}/api/v1", timeout=30) as client:
        yield client


def run_job(studio, http, kind: str, params: dict, timeout: float = 120) -> dict:
    response = http.post("/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    done = studio.wait_job(response.json()["id"], timeout=timeout)
    assert done["state"] == "succeeded", f"job ended {done['state']}: {done['error']}"
    return done


def face_material(http, image: Image.Image, name: str) -> str:
    response = http.post("/materials", files={"file": (name, png(image), "image/png")}, data={"kind": "face"})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_the_catalogues(http):
    presets = http.get("/portrait-presets").json()
    names = {s["name"] for s in presets["stylizations"]}
    assert {"sketch", "comic-book", "van-gogh", "ukiyo-e", "watercolour", "pixel-art", "cyberpunk", "ink-wash", "pop-art"} <= names
    assert [a["name"] for a in presets["attributes"]] == ["age", "hairstyle", "hair_colour", "expression", "glasses", "beard",
                                                          "makeup", "clothing"]
    styles = http.get("/avatar-styles").json()
    assert len(styles) >= 50 and all(s["label_zh"] for s in styles)
    templates = http.get("/photo-templates").json()
    assert len(templates) >= 20
    drawn = next(t for t in templates if t["composition_url"])
    composition = http.get(drawn["composition_url"].removeprefix("/api/v1"))
    assert composition.status_code == 200 and composition.headers["content-type"] == "image/png"


def test_a_portrait_its_similarity_and_an_attribute_edit(studio, http):
    photo = face_material(http, person_photos(PERSON_A, 1, seed=21)[0], "me.png")
    done = run_job(studio, http, "identity", dict(FAST, prompt="一个女孩在海边", photos=[photo], stylization="watercolour",
                                                  count=1, best_of=2))
    asset = http.get(f"/assets/{done['asset_ids'][0]}").json()
    assert "similarity" in asset["params"] and asset["params"]["preset"] == "watercolour"
    assert "watercolour" in asset["params"]["full_prompt"]
    assert "girl" in asset["params"]["full_prompt"]  # the class word in English for an English-reading model

    refused = http.post(f"/portraits/{asset['id']}/edit", json={"edits": {"glasses": "monocle"}})
    assert refused.status_code == 422 and "monocle" in refused.json()["detail"]
    edit = http.post(f"/portraits/{asset['id']}/edit", json={"edits": {"glasses": "round"}})
    assert edit.status_code == 202, edit.text
    after = studio.wait_job(edit.json()["id"], 120)
    assert after["state"] == "succeeded", after["error"]
    edited = http.get(f"/assets/{after['asset_ids'][0]}").json()
    assert edited["params"]["seed"] == asset["params"]["seed"] and edited["params"]["edit_of"] == asset["id"]

    missing = http.post("/jobs", json={"kind": "identity", "params": {"prompt": "a sunset", "photos": [photo]}})
    assert missing.status_code == 422 and "class word" in missing.json()["detail"]


def test_an_avatar_per_style(studio, http):
    photo = face_material(http, person_photos(PERSON_B, 1, seed=22)[0], "friend.png")
    styles = [s["name"] for s in http.get("/avatar-styles").json()][:2]
    done = run_job(studio, http, "avatar_batch", dict(FAST, subject="a man", photos=[photo], styles=styles, best_of=1))
    presets = sorted(http.get(f"/assets/{a}").json()["params"]["preset"] for a in done["asset_ids"])
    assert presets == sorted(styles)


def test_a_digital_avatar_from_photos_to_templates_and_deletion(studio, http):
    uploads = [(f"me-{i}.png", png(p)) for i, p in enumerate(person_photos(PERSON_A, 5, seed=23))]
    uploads += [("other.png", png(person_photos(PERSON_B, 1, seed=24)[0])), ("nobody.png", png(face_photo([], seed=25))),
                ("empty.png", b"")]
    parts = [("photos", (name, data, "image/png")) for name, data in uploads]

    checked = http.post("/avatars/check-photos", files=parts).json()
    assert [c["ok"] for c in checked] == [True] * 7 + [False]
    assert all(a["name"] != "Studio me" for a in http.get("/avatars").json())  # checking stores nothing

    created = http.post("/avatars", files=parts, data={"name": "Studio me", "subject": "a woman"})
    assert created.status_code == 202, created.text
    avatar_id = created.json()["avatar"]["id"]
    check = studio.wait_job(created.json()["job"]["id"], 60)
    assert check["state"] == "succeeded", check["error"]
    avatar = http.get(f"/avatars/{avatar_id}").json()
    verdicts = {p["name"]: p for p in avatar["photos"]}
    assert "different person" in verdicts["other.png"]["problems"][0]
    assert verdicts["nobody.png"]["problems"][0].startswith("No face found")
    assert avatar["usable_photos"] == 5 and avatar["state"] == "checked"
    usable = next(p for p in avatar["photos"] if p["verdict"] == "usable")
    crop = http.get(f"/avatars/{avatar_id}/photos/{usable['id']}/crop")
    assert crop.status_code == 200 and Image.open(io.BytesIO(crop.content)).size == (64, 64)

    too_early = http.post("/jobs", json={"kind": "photo_template", "params": {"avatar_id": avatar_id, "templates": ["linkedin"]}})
    assert too_early.status_code == 422 and "not trained yet" in too_early.json()["detail"]

    train = http.post(f"/avatars/{avatar_id}/train", json={"steps": 20, "sample_every": 10, "checkpoint_every": 10})
    assert train.status_code == 202, train.text
    assert studio.wait_job(train.json()["id"], 120)["state"] == "succeeded"
    assert http.get(f"/avatars/{avatar_id}").json()["state"] == "ready"

    done = run_job(studio, http, "photo_template", dict(FAST, avatar_id=avatar_id, templates=["linkedin", "graduation"], best_of=1))
    assert len(done["asset_ids"]) == 2

    assert http.delete(f"/avatars/{avatar_id}").status_code == 204
    assert http.get(f"/avatars/{avatar_id}").status_code == 404
    assert http.get(f"/avatars/{avatar_id}/photos/{usable['id']}/crop").status_code == 404
    assert http.get(f"/loras/{train.json()['params']['lora_id']}").status_code == 404


def test_unknown_avatars_are_not_found(http):
    assert http.get("/avatars/nope").status_code == 404
    assert http.delete("/avatars/nope").status_code == 404
    assert http.post("/avatars/nope/train", json={}).status_code == 404
    refused = http.post("/avatars", files=[("photos", ("a.png", b"not an image", "image/png"))], data={"subject": "a man"})
    assert refused.status_code == 422 and "at least 5" in refused.json()["detail"]
