"""The web side on its own: no torch in its process, the API's answer when the broker is down, and the UI with
sign-in on: built for no user, each user's handlers reading only their own things."""

import inspect
import io
import subprocess
import sys
from types import SimpleNamespace

import gradio as gr
import pytest
from fastapi.testclient import TestClient
from gradio.helpers import special_args
from PIL import Image

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.models import JobState, LoraState, TrainedModel
from storage.quota import Limits, Quota
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from tests.support import ROOT, free_port
from ui.services import NotSignedIn, Services
from ui.web import build_blocks, create_app


def test_the_web_process_never_imports_torch():
    code = (
        "import sys; from ui.web import create_app; import app, tasks.client, storage.db; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unreachable_broker_answers_503_and_creates_no_job(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    profile, styles = load_profiles()["tiny"], load_styles()
    client = StudioClient(db, create_celery(settings), profile, styles)
    services = Services(db=db, files=FileStore(settings.files), client=client, local_user_id=owner)
    with TestClient(create_app(services)) as client:
        response = client.post("/api/v1/jobs", json={"kind": "generate", "params": {"prompt": "a fox"}})
        assert response.status_code == 503
        assert "job queue is unreachable, so the job was not created" in response.json()["detail"]
        assert client.get("/api/v1/health").json()["queue_depth"] == 0
        assert client.post("/api/v1/jobs", json={"kind": "generate", "params": {"prompt": ""}}).status_code == 422
    db.dispose()


# ------------------------------------------------------------------------------------ signed-in users


def png(color: str, size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def signed_in(tmp_path):
    """A studio with sign-in on (no local user) and two users, each with a material, a ready LoRA and a result."""
    settings = Settings(data_dir=tmp_path)
    db = Database(settings.database)
    db.migrate()
    files = FileStore(settings.files)
    client = StudioClient(db, create_celery(settings), load_profiles()["tiny"], load_styles(),
                          quota=Quota(db, files, Limits()))
    services = Services(db=db, files=files, client=client, local_user_id=None)
    users = {}
    for name, color in (("alice", "red"), ("bob", "blue")):
        with db.session() as session:
            owner = repo.ensure_user(session, name).id
        material = services.materials.upload(owner, png(color), f"{name}.png", f"{name}'s bottle")
        digest = files.put(f"{name}'s weights".encode(), "safetensors")
        with db.session() as session:
            lora = TrainedModel(owner_id=owner, name=f"{name}'s style", kind="uploaded", profile="tiny", base_model="tiny",
                                state=LoraState.READY, file_hash=digest, file_size=1)
            session.add(lora)
            job = repo.create_job(session, owner, "generate", {"prompt": f"{name}'s fox", "seed": 1}, "tiny", "create")
            repo.finish_job(session, job.id, JobState.SUCCEEDED, "done")
            asset = repo.store_asset(session, owner_id=owner, job_id=job.id, kind="image", origin="create", stage="final",
                                     output_index=0, file_hash=files.put(png(color), "png"), mime="image/png", width=96,
                                     height=64, prompt=f"{name}'s fox", params={"prompt": f"{name}'s fox", "seed": 1})
            users[name] = SimpleNamespace(id=owner, material=material.id, lora=lora.id, asset=asset.id,
                                          request=gr.Request(username=owner))
    yield services, users
    db.dispose()


def handler(blocks: gr.Blocks, name: str, elem_id: str):
    """The function ``name`` of the event that updates the component ``elem_id``."""
    found = list({f.fn for f in blocks.fns.values()
                  if f.name == name and any(getattr(c, "elem_id", None) == elem_id for c in f.outputs)})
    assert len(found) == 1, (name, elem_id, found)
    return found[0]


def test_the_ui_builds_with_sign_in_on_and_every_handler_gets_its_request(signed_in):
    services, _ = signed_in
    with pytest.raises(NotSignedIn):
        services.owner(None)
    blocks = build_blocks(services)  # reads no user's data: there is no user yet
    # Gradio fills in a parameter annotated gr.Request only where it can read the annotation (not through a
    # functools.partial) and only among the positional parameters (not after *args).
    request = gr.Request(username="someone")
    takes_request = [f for f in blocks.fns.values() if "request" in inspect.signature(f.fn).parameters]
    assert len(takes_request) > 50
    for block_fn in takes_request:
        filled, *_ = special_args(block_fn.fn, [None] * len(block_fn.inputs), request)
        assert any(value is request for value in filled), f"{block_fn.name} does not get its request"
    # The lists filled from a user's data are empty until that user's page loads.
    components = {c.elem_id: c for c in blocks.blocks.values() if getattr(c, "elem_id", None)}
    for elem_id in ("create-lora-0", "game-lora-0", "product-material", "img2img-material", "studio-avatar", "train-watch"):
        assert components[elem_id].choices == [], elem_id
    assert components["lora-table"].value["data"] in ([], [[""] * 7])


def test_each_user_sees_only_their_own_materials_loras_and_assets(signed_in):
    services, users = signed_in
    blocks = build_blocks(services)
    list_assets = next(f.fn for f in blocks.fns.values() if f.api_name == "list_assets")
    library = handler(blocks, "listing", "materials-gallery")
    lora_choices = handler(blocks, "loaded", "create-lora-0")
    material_choices = handler(blocks, "loaded", "img2img-material")
    for name, other in (("alice", "bob"), ("bob", "alice")):
        me, them = users[name], users[other]
        items, ids, *_ = list_assets("", "", "Any time", False, me.request)
        assert ids == [me.asset] and len(items) == 1
        items, ids, tags = library("", "all", "all", me.request)
        assert ids == [me.material] and items[0][1].startswith(f"{name}'s bottle")
        assert all([value for _, value in update["choices"]] == [me.lora] for update in lora_choices(me.request))
        assert [value for _, value in material_choices(me.request)["choices"]] == [me.material]
        assert them.material not in str(material_choices(me.request))
    with pytest.raises(NotSignedIn):
        list_assets("", "", "Any time", False, None)


def test_a_limit_reached_is_said_in_the_ui(signed_in, tmp_path):
    services, users = signed_in
    blocks = build_blocks(services)
    alice = users["alice"].request
    services.limits = services.client.quota.limits = Limits(max_images_per_job=2, quota_bytes=1)
    photo = tmp_path / "photo.png"
    photo.write_bytes(png("green"))
    add = next(f.fn for f in blocks.fns.values() if f.api_name == "material_add")
    with pytest.raises(gr.Error, match="Your storage is full"):
        add(str(photo), "", "product", "", "", "all", "all", alice)
    generate = next(f.fn for f in blocks.fns.values() if f.api_name == "generate")
    with pytest.raises(gr.Error, match="one job makes at most 2"):
        next(generate("a fox", "", "none", "1:1", 64, 64, 3, 2, 5.0, "euler", -1, [], False, request=alice))
    # The product tab's cut-out updates the mask editor: a refusal is a notice there, not an error.
    cut = next(f.fn for f in blocks.fns.values() if f.api_name == "product_cutout")
    with pytest.warns(UserWarning, match="Your storage is full"):
        assert cut(users["alice"].material, alice) == [gr.update()] * 3
