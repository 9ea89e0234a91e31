"""The web app: Gradio Blocks with the tabs, mounted on FastAPI beside the REST API."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import gradio as gr
from fastapi import FastAPI

from storage.models import JobState
from storage.quota import MB, LimitExceeded
from ui.api import limit_exceeded, public_router, router
from ui.assets_tab import build_assets_tab
from ui.auth import Authenticator, guard
from ui.auth import router as auth_routes
from ui.chat_tab import build_chat_tab
from ui.create_tab import build_create_tab, create_target
from ui.game_tab import build_game_tab
from ui.img2img_tab import build_img2img_tab, img2img_target, wire_senders
from ui.materials_tab import build_materials_tab
from ui.photo_tab import build_photo_tab
from ui.product_tab import build_product_tab
from ui.services import Services
from ui.templates_tab import TemplateTarget, build_templates_tab

JOBS_REFRESH_S = 3
CSS = ".noise-banner { background: #fff4d6; border: 1px solid #e0b400; border-radius: 6px; padding: 4px 10px; }"


@dataclass
class StudioTabs:
    """The top tabs and the tabs a template can open, by the template's tab name."""

    tabs: gr.Tabs
    targets: dict[str, TemplateTarget]


def build_tabs(services: Services) -> StudioTabs:
    # "Send to image-to-image" buttons of the result galleries wait here until that tab exists.
    senders, targets = [], {}
    with gr.Tabs(selected="create") as tabs:
        with gr.Tab("Template square", id="templates") as templates_tab:
            templates_slot = gr.Column()
        with gr.Tab("Create", id="create"):
            create = build_create_tab(services, senders)
            targets["create"] = create_target(create, "create")
        with gr.Tab("Image-to-image", id="img2img"):
            img2img = build_img2img_tab(services, "img2img", senders)
            targets["img2img"] = img2img_target(img2img)
        with gr.Tab("Creation chat", id="chat") as chat_tab:
            build_chat_tab(services, create, tabs, "create", chat_tab, senders)
        with gr.Tab("Product synthesis", id="product") as product_tab:
            product_picker = build_product_tab(services, product_tab, senders, targets)
        with gr.Tab("Game assets", id="game"):
            build_game_tab(services, senders, targets)
        with gr.Tab("PhotoMaker & avatars", id="photo"):
            build_photo_tab(services, senders, targets)
        with gr.Tab("Material library", id="materials") as materials_tab:
            build_materials_tab(services, [product_picker, img2img.picker], tabs, "product", materials_tab)
        with gr.Tab("My assets", id="assets") as assets_tab:
            build_assets_tab(services, create, tabs, "create", assets_tab, senders)
    # The square comes first but opens the other tabs, so it is filled in once they exist.
    with templates_slot:
        build_templates_tab(services, tabs, targets, templates_tab)
    wire_senders(img2img, tabs, senders)
    return StudioTabs(tabs, targets)


def account_line(services: Services, request: gr.Request) -> str:
    """Who is signed in, how much of their storage is used, and the way out."""
    user = services.users.active(services.owner(request))
    if user is None:
        return ""
    used, quota = services.quota.used(user.id) / MB, services.limits.quota_bytes / MB
    sign_out = " · [Sign out](/logout)" if user.can_sign_in else ""
    return f"Signed in as **{user.name}** ({user.role}) · storage {used:.1f} MB of {quota:.0f} MB{sign_out}"


def jobs_under_way(services: Services, request: gr.Request) -> str:
    """The user's jobs still waiting or running, with their progress: read from the database, so a reloaded
    page (or a restarted web process) shows them again."""
    jobs = services.client.jobs(services.owner(request), (JobState.QUEUED, JobState.RUNNING), 20)
    if not jobs:
        return ""
    running = [f"{job.kind} {job.progress:.0%} · {job.stage}" for job in jobs if job.state == JobState.RUNNING]
    waiting = len(jobs) - len(running)
    return "Under way: " + "; ".join(running + ([f"{waiting} waiting"] if waiting else []))


def build_blocks(services: Services) -> gr.Blocks:
    with gr.Blocks(title="AI Creative Studio") as blocks:
        with gr.Row():
            gr.Markdown("# AI Creative Studio")
            with gr.Column():
                account = gr.Markdown(elem_id="account")
                under_way = gr.Markdown(elem_id="under-way")
        build_tabs(services)

        def show_account(request: gr.Request) -> str:
            return account_line(services, request)

        def show_jobs(request: gr.Request) -> str:
            return jobs_under_way(services, request)

        blocks.load(show_account, None, account, api_visibility="private")
        blocks.load(show_jobs, None, under_way, api_visibility="private")
        gr.Timer(JOBS_REFRESH_S).tick(show_jobs, None, under_way, show_progress="hidden", api_visibility="private")
    return blocks


def create_app(services: Services, auth: Authenticator | None = None) -> FastAPI:
    """The REST API and the Gradio UI on one FastAPI app. Without ``auth``: sign-in off, every request is
    the local user's."""
    app = FastAPI(title="AI Creative Studio API", version="1", docs_url="/api/v1/docs", openapi_url="/api/v1/openapi.json")
    app.state.services = services
    app.state.auth = auth or Authenticator(services.users, secrets.token_urlsafe(32), required=False,
                                           local_user_id=services.local_user_id)
    app.include_router(router)
    app.include_router(public_router)
    app.include_router(auth_routes)
    app.add_exception_handler(LimitExceeded, limit_exceeded)
    app.middleware("http")(guard(services.may_read_file))
    blocks = build_blocks(services)
    blocks.queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, blocks, path="/", css=CSS, footer_links=["api", "settings"],
                               allowed_paths=[str(services.files.root)], auth_dependency=app.state.auth.gradio_user_id,
                               max_file_size=max(services.limits.max_upload_bytes, services.max_lora_bytes))
