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
from ui.services import Services

ALL = "all"


def material_choices(services: Services, kind: str | None = None) -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in services.materials.list(services.owner_id, kind)]


def upload_material(services: Services, path: str | None, name: str = "", kind: str = "product", tags: str = "") -> MaterialView:
    """Add an uploaded file to the library, or raise the message the user sees."""
    if not path:
        raise gr.Error("Choose an image file to upload first.")
    try:
        material = services.materials.upload(services.owner_id, Path(path).read_bytes(), Path(path).name, name, kind, tags)
    except (ImageUploadError, MaterialError) as exc:
        raise gr.Error(str(exc)) from exc
    for note in material.notes:
        gr.Info(note)
    return material


@dataclass
class MaterialPicker:
    """A dropdown of the user's materials with a refresh button; its value is a material id."""

    dropdown: gr.Dropdown
    refresh: gr.Button
    kind: str | None

    def choices(self, services: Services, selected: str | None = None):
        return gr.update(choices=material_choices(services, self.kind), value=selected)


def build_material_picker(services: Services, label: str, kind: str | None = "product", elem_id: str | None = None) -> MaterialPicker:
    with gr.Row(equal_height=True):
        dropdown = gr.Dropdown(material_choices(services, kind), value=None, label=label, scale=5, elem_id=elem_id,
                               info="From your material library; upload new ones below or in the Material library tab.")
        refresh = gr.Button("↻", scale=0, min_width=40)
    picker = MaterialPicker(dropdown, refresh, kind)
    refresh.click(lambda current: picker.choices(services, current), dropdown, dropdown, api_visibility="private")
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
                tag_filter = gr.Dropdown([ALL, *services.materials.tags(services.owner_id)], value=ALL, label="Tag", scale=2)
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

    def listing(search_v: str, tag_v: str, kind_v: str):
        materials = services.materials.list(services.owner_id, None if kind_v == ALL else kind_v,
                                            None if tag_v == ALL else tag_v, search_v)
        items = [(str(services.files.path(m.file_hash, "png")), m.label) for m in materials]
        tag_choices = gr.update(choices=[ALL, *services.materials.tags(services.owner_id)])
        return items, [m.id for m in materials], tag_choices

    filters = [search, tag_filter, kind_filter]
    list_outputs = [gallery, shown_ids, tag_filter]
    for control in filters:
        control.change(listing, filters, list_outputs, api_visibility="private")
    tab.select(listing, filters, list_outputs, api_visibility="private")

    def add(path, name_v, kind_v, tags_v, search_v, tag_v, kind_f):
        material = upload_material(services, path, name_v, kind_v, tags_v)
        notes = "".join(f"\n- {n}" for n in material.notes)
        return (None, "", f"Added **{material.name}** ({material.width}×{material.height}).{notes}",
                *listing(search_v, tag_v, kind_f), *[p.choices(services) for p in pickers])

    add_button.click(add, [upload, name, kind, tags, *filters],
                     [upload, name, status, *list_outputs, *[p.dropdown for p in pickers]], api_name="material_add")

    def select(ids: list[str], evt: gr.SelectData):
        material_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        material = services.materials.get(services.owner_id, material_id) if material_id else None
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

    def save(material_id, name_v, kind_v, tags_v, *filter_values):
        try:
            material = services.materials.update(services.owner_id, chosen(material_id), name_v, kind_v, tags_v)
        except (MaterialError, LookupError) as exc:
            raise gr.Error(str(exc)) from exc
        return f"Saved **{material.name}**.", *listing(*filter_values), *[p.choices(services) for p in pickers]

    save_button.click(save, [selected, edit_name, edit_kind, edit_tags, *filters],
                      [status, *list_outputs, *[p.dropdown for p in pickers]], api_visibility="private")

    def delete(material_id, *filter_values):
        try:
            services.materials.delete(services.owner_id, chosen(material_id))
        except LookupError as exc:
            raise gr.Error(str(exc)) from exc
        return None, "Deleted.", *listing(*filter_values), *[p.choices(services) for p in pickers]

    delete_button.click(delete, [selected, *filters], [selected, status, *list_outputs, *[p.dropdown for p in pickers]],
                        api_visibility="private")

    if pickers:
        product_picker = pickers[0]

        def use(material_id):
            return product_picker.choices(services, chosen(material_id)), gr.Tabs(selected=product_tab_id)

        use_button.click(use, selected, [product_picker.dropdown, tabs], api_visibility="private")
