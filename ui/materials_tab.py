"""The Material library tab, and the material picker other tabs embed.

Product photos, logos and references are uploaded once, named and tagged, and reused; each belongs to
its user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from storage.images import ImageUploadError
from storage.materials import MATERIAL_KINDS, MaterialError, MaterialView
from storage.quota import LimitExceeded
from ui.services import Services

ALL = "all"


def material_choices(services: Services, owner: str, kind: str | None = None) -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in services.materials.list(owner, kind)]


def upload_material(services: Services, owner: str, path: str | None, name: str = "", kind: str = "product",
                    tags: str = "") -> MaterialView:
    """Add an uploaded file to the owner's library, or raise the message the user sees (a bad image, a file
    too big, their storage full)."""
    if not path:
        raise gr.Error("Choose an image file to upload first.")
    try:
        material = services.materials.upload(owner, Path(path).read_bytes(), Path(path).name, name, kind, tags)
    except (ImageUploadError, MaterialError, LimitExceeded) as exc:
        raise gr.Error(str(exc)) from exc
    for note in material.notes:
        gr.Info(note)
    return material


@dataclass
class MaterialPicker:
    """A dropdown of the user's materials with a refresh button; its value is a material id."""

    services: Services
    dropdown: gr.Dropdown
    refresh: gr.Button
    kind: str | None

    def choices(self, owner: str, selected: str | None = None):
        """The dropdown's update: the owner's materials, ``selected`` selected."""
        return gr.update(choices=material_choices(self.services, owner, self.kind), value=selected)

    def reload(self, current: str | None, request: gr.Request):
        """A handler from the dropdown to itself: the requesting user's materials, the current one kept."""
        return self.choices(self.services.owner(request), current)


def build_material_picker(services: Services, label: str, kind: str | None = "product", elem_id: str | None = None) -> MaterialPicker:
    """The picker, empty when built: the user's materials fill it when the page loads and on ↻."""
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown([], value=None, label=label, scale=5, elem_id=elem_id,
                               info="From your material library; upload new ones below or in the Material library tab.")
        refresh = gr.Button("↻", scale=0, min_width=40)
    picker = MaterialPicker(services, dropdown, refresh, kind)

    def loaded(request: gr.Request):
        return gr.update(choices=material_choices(services, services.owner(request), kind))

    # No triggers and no inputs: when the page loads.
    gr.on(None, loaded, None, dropdown, api_visibility="private")
    refresh.click(picker.reload, dropdown, dropdown, api_visibility="private")
    return picker


def build_materials_tab(services: Services, pickers: list[MaterialPicker], tabs: gr.Tabs, product_tab_id: str,
                        tab: gr.Tab) -> None:
    """``pickers`` are refreshed after changes here; "Use for a product picture" selects in the first one."""
    gr.Markdown("Upload product photos, logos and references once; name and tag them; use them in every tab.")
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label="Image (PNG, JPEG, WebP, GIF, TIFF)", file_types=["image"], type="filepath",
                             elem_id="materials-upload")
            name = gr.Textbox(label="Name", placeholder="Defaults to the file name")
            kind = gr.Radio(list(MATERIAL_KINDS), value="product", label="Kind")
            tags = gr.Textbox(label="Tags", placeholder="comma-separated: skincare, summer 2026")
            add_button = gr.Button("Add to library", variant="primary", elem_id="materials-add")
            status = gr.Markdown(elem_id="materials-status")
        with gr.Column(scale=5):
            with gr.Row():
                search = gr.Textbox(label="Search names and tags", scale=3)
                # The user's tags come with the listing when the tab is opened.
                tag_filter = gr.Dropdown([ALL], value=ALL, label="Tag", scale=2)
                kind_filter = gr.Dropdown([ALL, *MATERIAL_KINDS], value=ALL, label="Kind", scale=2)
            gallery = gr.Gallery(label="Library", format="png", columns=6, height=420, object_fit="contain",
                                 elem_id="materials-gallery")
            with gr.Row():
                edit_name = gr.Textbox(label="Name of the selected material", scale=3)
                edit_kind = gr.Dropdown(list(MATERIAL_KINDS), label="Kind", scale=1)
                edit_tags = gr.Textbox(label="Tags", scale=3)
            details = gr.Markdown()
            with gr.Row():
                save_button = gr.Button("Save changes")
                use_button = gr.Button("Use for a product picture", variant="primary")
                delete_button = gr.Button("Delete", variant="stop")
    shown_ids = gr.State([])
    selected = gr.State(None)

    def library(owner: str, search_v: str, tag_v: str, kind_v: str) -> tuple:
        """Values for ``list_outputs``: the owner's materials that pass the filters, their ids, their tags."""
        materials = services.materials.list(owner, None if kind_v == ALL else kind_v, None if tag_v == ALL else tag_v,
                                            search_v)
        items = [(str(services.files.path(m.file_hash, "png")), m.label) for m in materials]
        tag_choices = gr.update(choices=[ALL, *services.materials.tags(owner)])
        return items, [m.id for m in materials], tag_choices

    def listing(search_v: str, tag_v: str, kind_v: str, request: gr.Request):
        return library(services.owner(request), search_v, tag_v, kind_v)

    def picker_choices(owner: str) -> list:
        return [p.choices(owner) for p in pickers]

    filters = [search, tag_filter, kind_filter]
    list_outputs = [gallery, shown_ids, tag_filter]
    for control in filters:
        control.change(listing, filters, list_outputs, api_visibility="private")
    tab.select(listing, filters, list_outputs, api_visibility="private")

    def add(path, name_v, kind_v, tags_v, search_v, tag_v, kind_f, request: gr.Request):
        owner = services.owner(request)
        material = upload_material(services, owner, path, name_v, kind_v, tags_v)
        notes = "".join(f"\n- {n}" for n in material.notes)
        return (None, "", f"Added **{material.name}** ({material.width}×{material.height}).{notes}",
                *library(owner, search_v, tag_v, kind_f), *picker_choices(owner))

    add_button.click(add, [upload, name, kind, tags, *filters],
                     [upload, name, status, *list_outputs, *[p.dropdown for p in pickers]], api_name="material_add")

    def select(ids: list[str], evt: gr.SelectData, request: gr.Request):
        material_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        material = services.materials.get(services.owner(request), material_id) if material_id else None
        if material is None:
            return None, "", None, "", ""
        notes = "".join(f"\n- {n}" for n in material.notes)
        mask = "has a product mask" if material.mask_hash else "no product mask yet"
        text = f"{material.width}×{material.height} px · {mask} · [Download](/api/v1/materials/{material.id}/file){notes}"
        return material.id, material.name, material.kind, ", ".join(material.tags), text

    gallery.select(select, shown_ids, [selected, edit_name, edit_kind, edit_tags, details], api_visibility="private")

    def chosen(material_id: str | None) -> str:
        if not material_id:
            raise gr.Error("Select a material in the library first.")
        return material_id

    def save(material_id, name_v, kind_v, tags_v, request: gr.Request, *filter_values):
        owner = services.owner(request)
        try:
            material = services.materials.update(owner, chosen(material_id), name_v, kind_v, tags_v)
        except (MaterialError, LookupError) as exc:
            raise gr.Error(str(exc)) from exc
        return f"Saved **{material.name}**.", *library(owner, *filter_values), *picker_choices(owner)

    save_button.click(save, [selected, edit_name, edit_kind, edit_tags, *filters],
                      [status, *list_outputs, *[p.dropdown for p in pickers]], api_visibility="private")

    def delete(material_id, request: gr.Request, *filter_values):
        owner = services.owner(request)
        try:
            services.materials.delete(owner, chosen(material_id))
        except LookupError as exc:
            raise gr.Error(str(exc)) from exc
        return None, "Deleted.", *library(owner, *filter_values), *picker_choices(owner)

    delete_button.click(delete, [selected, *filters], [selected, status, *list_outputs, *[p.dropdown for p in pickers]],
                        api_visibility="private")

    if pickers:
        product_picker = pickers[0]

        def use(material_id, request: gr.Request):
            return product_picker.choices(services.owner(request), chosen(material_id)), gr.Tabs(selected=product_tab_id)

        use_button.click(use, selected, [product_picker.dropdown, tabs], api_visibility="private")
