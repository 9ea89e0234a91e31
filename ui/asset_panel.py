"""The panel beside every result gallery: the selected asset's parameters, download link and favourite."""

from __future__ import annotations

import gradio as gr

from storage import repo
from storage.models import Asset
from ui.services import Services


def asset_details(services: Services, owner: str, asset_id: str | None) -> tuple[dict, str]:
    """The owner's selected asset's parameters and a download link, or empty values."""
    if not asset_id:
        return {}, ""
    with services.db.session() as session:
        asset = repo.get_asset(session, asset_id, owner)
    if asset is None:
        return {}, "This asset no longer exists."
    star = "★ favourite · " if asset.favourite else ""
    link = (f"{star}{asset.width}×{asset.height} px · seed {asset.params.get('seed')} · "
            f"[Download PNG](/api/v1/assets/{asset.id}/file)")
    return asset.params, link


def caption(services: Services, asset: Asset) -> str:
    seed = f"seed {asset.params['seed']}"
    return seed if asset.stage == "final" else f"{services.options.stage_labels[asset.stage]} · {seed}"


def wire_selection(services: Services, gallery: gr.Gallery, asset_ids: gr.State, selected: gr.State,
                   params_view: gr.JSON, info: gr.Markdown, favourite_button: gr.Button) -> None:
    """Selecting a gallery image shows its parameters and link; the button toggles its favourite."""

    def on_select(ids: list[str], evt: gr.SelectData, request: gr.Request):
        asset_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        params, text = asset_details(services, services.owner(request), asset_id)
        return asset_id, params, text

    def on_favourite(asset_id: str | None, request: gr.Request) -> str:
        return toggle_favourite(services, services.owner(request), asset_id)

    gallery.select(on_select, asset_ids, [selected, params_view, info], api_visibility="private")
    favourite_button.click(on_favourite, selected, info, api_visibility="private")


def selected_asset(services: Services, owner: str, asset_id: str | None) -> Asset:
    """The owner's selected asset, or an error the UI shows."""
    if not asset_id:
        raise gr.Error("Select an image first.")
    with services.db.session() as session:
        asset = repo.get_asset(session, asset_id, owner)
    if asset is None:
        raise gr.Error("This asset no longer exists.")
    return asset


def toggle_favourite(services: Services, owner: str, asset_id: str | None) -> str:
    asset = selected_asset(services, owner, asset_id)
    with services.db.session() as session:
        repo.set_favourite(session, session.merge(asset), not asset.favourite)
    return asset_details(services, owner, asset_id)[1]
