"""The My assets tab: every result of the user, newest first, with filters, search and provenance."""

from __future__ import annotations

from datetime import timedelta

import gradio as gr

from storage import repo
from storage.models import utcnow
from ui.asset_panel import selected_asset, wire_selection
from ui.create_tab import CreateTab
from ui.img2img_tab import SEND_LABEL
from ui.services import Services, banner
from ui.templates_tab import save_as_template_panel

ORIGINS = [("All tabs", ""), ("Create", "create"), ("Image-to-image", "img2img"), ("Creation chat", "chat"), ("Product synthesis", "product"),
           ("Game assets", "game"), ("PhotoMaker & avatars", "photo"),
           ("REST API", "api")]
PERIODS = {"Any time": None, "Today": timedelta(days=1), "Last 7 days": timedelta(days=7), "Last 30 days": timedelta(days=30)}
PAGE_SIZE = 200


def build_assets_tab(services: Services, create: CreateTab, tabs: gr.Tabs, create_tab_id: str, tab: gr.Tab,
                     senders: list[tuple[gr.Button, gr.State]]) -> None:
    """Build the tab inside ``tab``; opening the tab reloads the list."""
    gr.Markdown(banner(services.options), visible=services.options.profile.is_noise, elem_classes=["noise-banner"])
    with gr.Row():
        search = gr.Textbox(label="Search prompts", placeholder="fox snow", scale=3)
        origin = gr.Dropdown(ORIGINS, value="", label="Made in")
        period = gr.Dropdown(list(PERIODS), value="Any time", label="Date")
        favourites = gr.Checkbox(label="Favourites only")
        refresh = gr.Button("Refresh")
    summary = gr.Markdown()
    selected = gr.State(None)
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="My assets", format="png", columns=6, height=600, elem_id="assets-gallery",
                                 buttons=["download", "fullscreen"])
        with gr.Column(scale=2):
            info = gr.Markdown(elem_id="assets-info")
            with gr.Row():
                favourite_button = gr.Button("☆ Favourite", elem_id="assets-favourite")
                reuse_button = gr.Button("Reuse settings", elem_id="assets-reuse")
                send = gr.Button(SEND_LABEL, elem_id="assets-send")
                delete_button = gr.Button("Delete", variant="stop", elem_id="assets-delete")
            params_view = gr.JSON(label="Parameters (provenance)")
            save_as_template_panel(services, selected)
    asset_ids = gr.State([])
    senders.append((send, selected))

    def assets_of(owner: str, search_v: str, origin_v: str, period_v: str, favourites_v: bool) -> tuple:
        """Values for ``listing``: the owner's assets that pass the filters, newest first, nothing selected."""
        span = PERIODS.get(period_v)
        flt = repo.AssetFilter(origin=origin_v or None, favourites_only=favourites_v, search=search_v or None,
                               since=utcnow() - span if span else None, limit=PAGE_SIZE)
        with services.db.session() as session:
            assets = repo.list_assets(session, owner, flt)
        items = [(str(services.asset_path(a)), a.prompt[:60]) for a in assets]
        text = f"{len(assets)} asset(s)" + (f" (showing the newest {PAGE_SIZE})" if len(assets) == PAGE_SIZE else "")
        return items, [a.id for a in assets], text, None, {}, ""

    def load(search_v: str, origin_v: str, period_v: str, favourites_v: bool, request: gr.Request):
        return assets_of(services.owner(request), search_v, origin_v, period_v, favourites_v)

    filters = [search, origin, period, favourites]
    listing = [gallery, asset_ids, summary, selected, params_view, info]
    refresh.click(load, filters, listing, api_name="list_assets")
    tab.select(load, filters, listing, api_visibility="private")
    search.submit(load, filters, listing, api_visibility="private")
    for control in (origin, period, favourites):
        control.change(load, filters, listing, api_visibility="private")

    wire_selection(services, gallery, asset_ids, selected, params_view, info, favourite_button)

    def delete(asset_id: str | None, request: gr.Request, *filter_values):
        owner = services.owner(request)
        services.delete_asset(selected_asset(services, owner, asset_id))
        gr.Info("Asset deleted.")
        return assets_of(owner, *filter_values)

    delete_button.click(delete, [selected, *filters], listing, api_visibility="private")

    def reuse(params: dict):
        if not params:
            raise gr.Error("Select an asset first.")
        return [gr.Tabs(selected=create_tab_id), *create.values_from(params)]

    reuse_button.click(reuse, params_view, [tabs, *create.form], api_visibility="private")
