"""Users' own templates: saved from their results, private or shared, served next to the studio's own."""

import io
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from engine.game.request import load_asset_types, resolve_game_asset
from engine.identity_request import resolve_identity
from engine.img2img_request import resolve_img2img
from engine.params import resolve_generation
from engine.portraits import load_portrait_catalogue
from engine.product.request import resolve_product
from engine.product.scenes import Scene, load_scenes
from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.files import FileStore
from storage.models import JobState
from storage.previews import StylePreviews
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from tasks.template_client import (
    StudioTemplateReadOnly,
    TemplateClient,
    TemplateError,
    TemplateNotFound,
    nearest_aspect,
    slug,
)
from ui.api import router
from ui.auth import Authenticator
from ui.services import Services

STUDIO_TEMPLATES = {"templates": [
    {"name": "festival-poster", "title": "Festival poster", "title_zh": "节日海报", "description": "A poster.",
     "description_zh": "海报。", "tab": "create", "tags": ["festival", "poster"],
     "prompt": "a poster of {subject}, lanterns", "negative_prompt": "text",
     "fields": [{"name": "subject", "label": "Subject", "label_zh": "主体", "example": "a dragon"}],
     "settings": {"style": "none", "aspect": "3:4"}},
    {"name": "white-background", "title": "White background", "title_zh": "白底图", "description": "",
     "description_zh": "", "tab": "product", "tags": ["e-commerce", "product"],
     "prompt": "pure white seamless studio background", "negative_prompt": "", "fields": [],
     "settings": {"canvas_format": "1:1", "variants": 2}},
]}


@pytest.fixture(scope="module")
def profile():
    return load_profiles()["tiny"]


@pytest.fixture
def studio(db, tmp_path, profile):
    """Alice and Bob, the file store, and the template client over a small studio catalogue."""
    catalogue = tmp_path / "industry_templates.json"
    catalogue.write_text(json.dumps(STUDIO_TEMPLATES), encoding="utf-8")
    files = FileStore(tmp_path / "files")
    with db.session() as session:
        alice, bob = repo.ensure_user(session, "alice").id, repo.ensure_user(session, "bob").id
    templates = TemplateClient(db, files, profile, catalogue_path=catalogue)
    return {"db": db, "files": files, "templates": templates, "alice": alice, "bob": bob}


@pytest.fixture
def studio_client(studio, tmp_path, profile):
    """The web side's job client: checks that a saved template's request is one its tab accepts."""
    return StudioClient(studio["db"], create_celery(Settings(data_dir=tmp_path)), profile, load_styles())


def png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


def result(studio, owner: str, kind: str, job_params: dict, params: dict, color: str = "red",
           state: str = JobState.SUCCEEDED, stage: str = "final", size: tuple[int, int] = (96, 64)) -> str:
    """A job of ``kind`` that ended in ``state`` and one picture of it, stored as a worker stores them."""
    digest = studio["files"].put(png(color), "png")
    with studio["db"].session() as session:
        job = repo.create_job(session, owner, kind, job_params, "tiny", "api")
        repo.finish_job(session, job.id, state, "done" if state == JobState.SUCCEEDED else state)
        return repo.store_asset(session, owner_id=owner, job_id=job.id, kind="image", origin="api", stage=stage,
                                output_index=0, file_hash=digest, mime="image/png", width=size[0], height=size[1],
                                prompt=params.get("prompt", ""), params=params).id


def generated(studio, owner: str, color: str = "red", kind: str = "generate", **kw) -> str:
    """A Create result: 96×64 pictures (3:2), the job's count of them, each stored with count 1."""
    params = resolve_generation({"prompt": "a red fox in snow", "negative_prompt": "blurry", "style": "anime",
                                 "width": 96, "height": 64, "count": 3, "steps": 6, "guidance": 6.5},
                                load_profiles()["tiny"], load_styles()).to_dict()
    return result(studio, owner, kind, params, dict(params, count=1, stage="final"), color=color, **kw)


def resolves(studio_client, studio, card, **extra) -> dict:
    """The tab's own checks accept the template's request (with what the user picks in the tab)."""
    kind, raw = studio["templates"].request(card, {})
    return studio_client.validate(kind, dict(raw, **extra))


# ------------------------------------------------------------------------------------ saving results


def test_a_create_result_becomes_a_create_template_with_its_aspect(studio, studio_client):
    templates, alice = studio["templates"], studio["alice"]
    asset_id = generated(studio, alice)
    card = templates.save_from_asset(alice, asset_id, "My Poster!", tags=["Autumn Sale", "poster", "海报"])
    template = card.template
    assert card.key.startswith("user:") and card.source == "mine" and card.owner == "alice" and not card.shared
    assert (template.name, template.title, template.title_zh) == ("my-poster", "My Poster!", "My Poster!")
    assert template.tab == "create"
    assert (template.prompt, template.negative_prompt, template.fields) == ("a red fox in snow", "blurry", ())
    assert template.settings == {"style": "anime", "aspect": "3:2", "steps": 6, "guidance": 6.5, "count": 3}
    assert template.tags == ("autumn-sale", "poster", "海报")
    with studio["db"].session() as session:
        assert card.preview_hash == repo.get_asset(session, asset_id, alice).file_hash
    params = resolves(studio_client, studio, card)
    assert params["width"] > params["height"] and params["style"] == "anime"  # 3:2 as near as the tiny sizes allow

    cards = templates.list(alice)
    assert [c.key for c in cards] == ["studio:festival-poster", "studio:white-background", card.key]
    assert templates.get(alice, card.key) == card
    assert templates.tags(alice) == ["autumn-sale", "e-commerce", "festival", "poster", "product", "海报"]


def test_an_image_to_image_result_keeps_its_strength_keeps_and_style(studio, studio_client):
    raw = {"source_asset_id": "a1", "prompt": "", "style": "anime", "strength": 0.7, "count": 2,
           "keeps": [{"kind": "edges", "weight": 0.6}]}
    params = resolve_img2img(raw, load_profiles()["tiny"], load_styles()).to_dict()
    asset_id = result(studio, studio["alice"], "img2img", params, dict(params, count=1))
    card = studio["templates"].save_from_asset(studio["alice"], asset_id, "Anime restyle")
    # A style alone drew a neutral subject: the template's prompt says so.
    assert (card.template.tab, card.template.prompt) == ("img2img", "the same subject")
    assert card.template.tags == ("restyle",)
    assert card.template.settings == {"style": "anime", "strength": 0.7, "keeps": [{"kind": "edges", "weight": 0.6}],
                                      "steps": params["steps"], "guidance": params["guidance"], "count": 2}
    checked = resolves(studio_client, studio, card, source_asset_id=asset_id)
    assert checked["controls"] == [{"kind": "edges", "weight": 0.6}]


def test_a_game_asset_keeps_the_users_words_without_the_asset_types(studio, studio_client):
    raw = {"prompt": "a knight with a lance", "negative_prompt": "blurry", "asset_type": "character",
           "style": "pixel-8bit", "transparent": True, "sprite_sheet": True, "count": 6}
    params = resolve_game_asset(raw, load_profiles()["tiny"], load_styles(), load_asset_types()).to_dict()
    asset_id = result(studio, studio["alice"], "game_asset", params, dict(params, count=1))
    card = studio["templates"].save_from_asset(studio["alice"], asset_id, "Knight sprites")
    template = card.template
    assert (template.tab, template.prompt, template.negative_prompt) == ("game", "a knight with a lance", "blurry")
    assert template.settings == {"asset_type": "character", "style": "pixel-8bit", "transparent": True,
                                 "sprite_sheet": True, "count": 4, "steps": params["steps"],
                                 "guidance": params["guidance"]}
    assert resolves(studio_client, studio, card)["subject"] == "a knight with a lance"


def test_a_photomaker_portrait_keeps_its_stylization_and_candidates(studio, studio_client):
    raw = {"prompt": "a woman reading in a garden", "photos": ["m1"], "stylization": "anime-film", "count": 2,
           "best_of": 3}
    request = resolve_identity(raw, load_profiles()["tiny"], load_portrait_catalogue())
    item = request.items[0]
    params = dict(item.params.to_dict(), count=1, kind="identity", preset=item.name, best_of=request.best_of)
    asset_id = result(studio, studio["alice"], "identity", request.to_dict(), params)
    card = studio["templates"].save_from_asset(studio["alice"], asset_id, "Anime portrait", title_zh="动画肖像")
    assert (card.template.tab, card.template.prompt) == ("photomaker", raw["prompt"])
    assert card.template.title_zh == "动画肖像"
    assert card.template.settings == {"stylization": "anime-film", "count": 2, "best_of": 3,
                                      "steps": item.params.steps, "guidance": item.params.guidance}
    assert resolves(studio_client, studio, card, photos=["m1"])["best_of"] == 3


def test_a_product_picture_on_a_preset_scene_becomes_a_written_scene(studio, studio_client):
    raw = {"material_id": "m1", "scenes": ["podium"], "canvas_format": "4:5", "variants": 2}
    request = resolve_product(raw, load_profiles()["tiny"], load_scenes())
    scene = Scene.from_dict(request.scenes[0])
    params = {"kind": "product", "scene": request.scenes[0], "canvas_format": "4:5", "width": request.width,
              "height": request.height, "steps": request.steps, "guidance": request.guidance,
              "prompt": scene.full_prompt, "negative_prompt": scene.negative}
    asset_id = result(studio, studio["alice"], "product", request.to_dict(), params)
    card = studio["templates"].save_from_asset(studio["alice"], asset_id, "Podium shot")
    assert card.template.prompt == f"{scene.prompt}, {scene.lighting}" and card.template.negative_prompt == ""
    assert card.template.settings == {"variants": 2, "steps": request.steps, "guidance": request.guidance,
                                      "canvas_format": "4:5"}
    # One written scene: the same number of pictures as the job it was saved from.
    assert len(resolves(studio_client, studio, card, material_id="m1")["outputs"]) == 2


def test_only_the_owners_final_results_of_succeeded_jobs_can_be_saved(studio):
    templates, alice, bob = studio["templates"], studio["alice"], studio["bob"]
    with pytest.raises(TemplateError, match="No result nope among yours"):
        templates.save_from_asset(alice, "nope", "A")
    theirs = generated(studio, bob)
    with pytest.raises(TemplateError, match=f"No result {theirs} among yours"):
        templates.save_from_asset(alice, theirs, "A")
    candidate = generated(studio, alice, color="blue", stage="candidate")
    with pytest.raises(TemplateError, match=f"No result {candidate} among yours"):
        templates.save_from_asset(alice, candidate, "A")
    failed = generated(studio, alice, color="green", state=JobState.FAILED)
    with pytest.raises(TemplateError, match="comes from a job that failed; only results of jobs that succeeded"):
        templates.save_from_asset(alice, failed, "A")
    chat = generated(studio, alice, color="white", kind="chat_turn")
    with pytest.raises(TemplateError, match="made by a chat turn job; only results of Create, Image-to-image, "
                                            "Product, Game assets, PhotoMaker can be saved"):
        templates.save_from_asset(alice, chat, "A")
    with pytest.raises(TemplateError, match="Give the template a title"):
        templates.save_from_asset(alice, generated(studio, alice, color="black"), "  ")
    with pytest.raises(TemplateError, match=r"tag '\{x\}'"):
        templates.save_from_asset(alice, generated(studio, alice, color="gray"), "A", tags=["{x}"])
    assert templates.list(alice, source="mine") == []


def test_names_are_unique_per_owner(studio):
    templates, alice, bob = studio["templates"], studio["alice"], studio["bob"]
    asset_id = generated(studio, alice)
    names = [templates.save_from_asset(alice, asset_id, "My poster").template.name for _ in range(3)]
    assert names == ["my-poster", "my-poster-2", "my-poster-3"]
    bobs = templates.save_from_asset(bob, generated(studio, bob, color="blue"), "My poster")
    assert bobs.template.name == "my-poster"
    assert templates.save_from_asset(alice, asset_id, "春节海报").template.name == "template"
    assert slug("Café — Crème brûlée!") == "cafe-creme-brulee"
    assert [nearest_aspect(*size) for size in ((1024, 1024), (1344, 768), (600, 900), (1000, 1010))] == \
        ["1:1", "16:9", "2:3", "1:1"]


# ------------------------------------------------------------------------------------ sharing, deleting


def test_a_private_template_is_its_owners_alone_and_a_shared_one_everyones_to_use(studio):
    templates, alice, bob = studio["templates"], studio["alice"], studio["bob"]
    private = templates.save_from_asset(alice, generated(studio, alice), "Private")
    assert templates.get(bob, private.key) is None
    assert templates.list(bob, source="shared") == []
    assert "Private" not in [c.template.title for c in templates.list(bob)]

    shared = templates.set_shared(alice, private.key, True)
    assert shared.shared and shared.source == "mine"
    seen = templates.get(bob, private.key)
    assert (seen.source, seen.owner, seen.editable) == ("shared", "alice", False)
    mine = templates.save_from_asset(bob, generated(studio, bob, color="blue"), "Bob's own")
    assert [c.key for c in templates.list(bob, source="all")][-2:] == [mine.key, private.key]
    assert [c.key for c in templates.list(bob, source="mine")] == [mine.key]
    for change in (lambda: templates.set_shared(bob, private.key, False), lambda: templates.delete(bob, private.key)):
        with pytest.raises(TemplateNotFound, match=f"No template {private.key} among yours"):
            change()
    assert templates.get(bob, private.key).shared

    templates.set_shared(alice, private.key, False)
    assert templates.get(bob, private.key) is None


def test_studio_templates_are_listed_searched_and_read_only(studio):
    templates, alice = studio["templates"], studio["alice"]
    mine = templates.save_from_asset(alice, generated(studio, alice), "Fox poster", tags=["poster"])
    assert [c.key for c in templates.list(alice, tags=["poster"])] == ["studio:festival-poster", mine.key]
    assert [c.template.name for c in templates.list(alice, search="LANTERNS")] == ["festival-poster"]
    assert [c.template.name for c in templates.list(alice, search="海报")] == ["festival-poster"]
    assert [c.source for c in templates.list(alice, source="studio")] == ["studio", "studio"]
    with pytest.raises(TemplateError, match="Unknown template source 'everyone'"):
        templates.list(alice, source="everyone")
    with pytest.raises(StudioTemplateReadOnly, match="studio's own templates, which cannot be changed or deleted"):
        templates.delete(alice, "studio:festival-poster")
    with pytest.raises(StudioTemplateReadOnly):
        templates.set_shared(alice, "studio:festival-poster", True)
    with pytest.raises(TemplateNotFound, match="No template studio:nope"):
        templates.delete(alice, "studio:nope")
    assert templates.get(alice, "nonsense") is None and templates.get(alice, "user:") is None


def test_deleting_the_result_keeps_the_templates_picture(studio):
    templates, files, alice = studio["templates"], studio["files"], studio["alice"]
    asset_id = generated(studio, alice)
    card = templates.save_from_asset(alice, asset_id, "Keeper")
    with studio["db"].session() as session:
        assert repo.delete_asset(session, repo.get_asset(session, asset_id, alice)) is None
    assert files.exists(card.preview_hash, "png")
    assert templates.library.get(alice, card.key[5:]).source_asset_id is None
    # Now only the template uses the file: deleting the template removes it.
    templates.delete(alice, card.key)
    assert templates.get(alice, card.key) is None and not files.exists(card.preview_hash, "png")


def test_deleting_a_template_keeps_a_picture_something_else_uses(studio):
    templates, files, alice = studio["templates"], studio["files"], studio["alice"]
    asset_id = generated(studio, alice)
    first, second = (templates.save_from_asset(alice, asset_id, "Twice") for _ in range(2))
    templates.delete(alice, first.key)
    assert files.exists(first.preview_hash, "png")  # the result and the second template show it
    with studio["db"].session() as session:
        repo.delete_asset(session, repo.get_asset(session, asset_id, alice))
    assert files.exists(first.preview_hash, "png")
    templates.delete(alice, second.key)
    assert not files.exists(first.preview_hash, "png")


# ------------------------------------------------------------------------------------ REST


@pytest.fixture
def api(studio, studio_client):
    """A REST client per user: the routes as the web process mounts them, over one database."""
    def client_for(owner: str) -> TestClient:
        services = Services(db=studio["db"], files=studio["files"], client=studio_client, local_user_id=owner)
        services.templates = studio["templates"]
        app = FastAPI()
        app.state.services = services
        app.state.auth = Authenticator(services.users, "secret", required=False, local_user_id=owner)
        app.include_router(router)
        return TestClient(app)
    return client_for(studio["alice"]), client_for(studio["bob"])


def test_the_rest_api_saves_lists_shares_and_deletes_templates(studio, api):
    alice, bob = api
    asset_id = generated(studio, studio["alice"])
    created = alice.post("/api/v1/templates", json={"asset_id": asset_id, "title": "Fox poster", "tags": ["fox"]})
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert (body["tab"], body["job_kind"], body["source"], body["owner"], body["shared"]) == \
        ("create", "generate", "mine", "alice", False)
    assert body["settings"]["aspect"] == "3:2" and body["tags"] == ["fox"] and body["fields"] == []
    assert body["preview_url"] == f"/api/v1/templates/{key}/preview"

    listed = alice.get("/api/v1/templates").json()
    assert [t["key"] for t in listed] == ["studio:festival-poster", "studio:white-background", key]
    assert listed[0]["preview_url"] is None and listed[0]["fields"][0]["name"] == "subject"
    assert [t["key"] for t in alice.get("/api/v1/templates", params={"source": "mine"}).json()] == [key]
    assert [t["key"] for t in alice.get("/api/v1/templates", params=[("tag", "poster"), ("tag", "festival")]).json()] \
        == ["studio:festival-poster"]
    assert alice.get("/api/v1/templates", params={"search": "fox"}).json()[0]["key"] == key
    assert alice.get(f"/api/v1/templates/{key}").json() == body
    preview = alice.get(f"/api/v1/templates/{key}/preview")
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    digest = studio["templates"].get(studio["alice"], key).preview_hash
    assert preview.content == studio["files"].path(digest, "png").read_bytes()

    # Private: Bob sees nothing of it.
    assert bob.get(f"/api/v1/templates/{key}").status_code == 404
    assert bob.get(f"/api/v1/templates/{key}/preview").status_code == 404
    assert key not in [t["key"] for t in bob.get("/api/v1/templates").json()]
    shared = alice.patch(f"/api/v1/templates/{key}", json={"shared": True})
    assert shared.status_code == 200 and shared.json()["shared"] is True
    seen = bob.get(f"/api/v1/templates/{key}").json()
    assert (seen["source"], seen["owner"]) == ("shared", "alice")
    assert bob.get(f"/api/v1/templates/{key}/preview").status_code == 200
    for response in (bob.patch(f"/api/v1/templates/{key}", json={"shared": False}),
                     bob.delete(f"/api/v1/templates/{key}")):
        assert response.status_code == 404 and "among yours" in response.json()["detail"]

    assert alice.delete(f"/api/v1/templates/{key}").status_code == 204
    assert alice.get(f"/api/v1/templates/{key}").status_code == 404
    assert alice.delete(f"/api/v1/templates/{key}").status_code == 404


def test_the_rest_api_explains_bad_requests(studio, api):
    alice, _ = api
    failed = generated(studio, studio["alice"], state=JobState.FAILED)
    cases = [
        (alice.post("/api/v1/templates", json={"asset_id": "nope", "title": "A"}), 422, "No result nope among yours."),
        (alice.post("/api/v1/templates", json={"asset_id": failed, "title": "A"}), 422, "comes from a job that failed"),
        (alice.post("/api/v1/templates", json={"asset_id": failed, "title": ""}), 422, "Give the template a title."),
        (alice.get("/api/v1/templates", params={"source": "everyone"}), 422, "Unknown template source 'everyone'"),
        (alice.get("/api/v1/templates/studio:nope"), 404, "No template studio:nope."),
        (alice.get("/api/v1/templates/studio:festival-poster/preview"), 404, "No preview of the studio template"),
        (alice.delete("/api/v1/templates/studio:festival-poster"), 403, "cannot be changed or deleted"),
        (alice.patch("/api/v1/templates/studio:festival-poster", json={"shared": False}), 403, "cannot be changed"),
    ]
    for response, status, detail in cases:
        assert response.status_code == status and detail in response.json()["detail"], response.text
    missing_title = alice.post("/api/v1/templates", json={"asset_id": failed})
    assert missing_title.status_code == 422 and missing_title.json()["detail"][0]["loc"] == ["body", "title"]


def test_a_studio_templates_rendered_preview_is_served(studio, api, profile):
    alice, _ = api
    StylePreviews(studio["files"].root / "previews" / "templates").put(profile.name, "festival-poster", png("red"))
    listed = {t["key"]: t for t in alice.get("/api/v1/templates").json()}
    assert listed["studio:festival-poster"]["preview_url"] == "/api/v1/templates/studio:festival-poster/preview"
    assert listed["studio:white-background"]["preview_url"] is None
    preview = alice.get("/api/v1/templates/studio:festival-poster/preview")
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).getpixel((0, 0)) == (255, 0, 0)
