"""The web app: Gradio Blocks with the tabs, mounted on FastAPI beside the REST API."""

from __future__ import annotations

import gradio as gr
from fastapi import FastAPI

from ui.api import router
from ui.assets_tab import build_assets_tab
from ui.chat_tab import build_chat_tab
from ui.create_tab import build_create_tab
from ui.game_tab import build_game_tab
from ui.materials_tab import build_materials_tab
from ui.photo_tab import build_photo_tab
from ui.product_tab import build_product_tab
from ui.services import Services

CSS = ".noise-banner { background: #fff4d6; border: 1px solid #e0b400; border-radius: 6px; padding: 4px 10px; }"


def build_blocks(services: Services) -> gr.Blocks:
    with gr.Blocks(title="AI Creative Studio") as blocks:
        gr.Markdown("# AI Creative Studio")
        with gr.Tabs() as tabs:
            with gr.Tab("Create", id="create"):
                create = build_create_tab(services)
            with gr.Tab("Creation chat", id="chat") as chat_tab:
                build_chat_tab(services, create, tabs, "create", chat_tab)
            with gr.Tab("Product synthesis", id="product") as product_tab:
                product_picker = build_product_tab(services, product_tab)
            with gr.Tab("Game assets", id="game"):
                build_game_tab(services)
            with gr.Tab("PhotoMaker & avatars", id="photo"):
                build_photo_tab(services)
            with gr.Tab("Material library", id="materials") as materials_tab:
                build_materials_tab(services, [product_picker], tabs, "product", materials_tab)
            with gr.Tab("My assets", id="assets") as assets_tab:
                build_assets_tab(services, create, tabs, "create", assets_tab)
    return blocks


def create_app(services: Services) -> FastAPI:
    app = FastAPI(title="AI Creative Studio API", version="1", docs_url="/api/v1/docs", openapi_url="/api/v1/openapi.json")
    app.state.services = services
    app.include_router(router)
    blocks = build_blocks(services)
    blocks.queue(default_concurrency_limit=8)
    return gr.mount_gradio_app(app, blocks, path="/", css=CSS, footer_links=["api", "settings"],
                               allowed_paths=[str(services.files.root)])
