"""The Image-to-image tab says which keeps need a model this machine lacks, and offers the others."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from engine.profiles import RoleSpec, load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from storage.files import FileStore
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from ui.img2img_tab import build_img2img_tab
from ui.services import Services


def test_a_keep_whose_model_is_missing_is_greyed_with_the_reason(tmp_path, models_dir):
    tiny = load_profiles(models_dir=models_dir)["tiny"]
    missing = str(models_dir / "tiny" / "no-depth-here")
    profile = replace(tiny, roles={**tiny.roles, "depth": RoleSpec(missing, "DepthAnythingForDepthEstimation")})
    settings = Settings(data_dir=tmp_path)
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    services = Services(db=db, files=FileStore(settings.files), local_user_id=owner,
                        client=StudioClient(db, create_celery(settings), profile, load_styles()))
    with gr.Blocks() as blocks:
        build_img2img_tab(services, "img2img", [])
    components = {c.elem_id: c for c in blocks.blocks.values() if getattr(c, "elem_id", None)}

    depth = components["img2img-keep-depth"]
    assert depth.interactive is False
    assert depth.info == f"Depth: its preprocessor model {missing} is not on this machine."
    assert components["img2img-weight-depth"].interactive is False
    for kind in ("pose", "edges"):
        assert components[f"img2img-keep-{kind}"].interactive is not False and components[f"img2img-keep-{kind}"].info is None
    unavailable = components["img2img-unavailable"]
    assert unavailable.visible and "Not available on this machine" in unavailable.value and missing in unavailable.value
    assert "the other keeps work" in unavailable.value
    db.dispose()
