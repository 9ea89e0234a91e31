"""The style picker: a category filter and a gallery of previews; choosing one sets the style dropdown.

Previews are rendered per profile by ``python app.py styles previews``; styles without one are listed
by name under the gallery.
"""

from __future__ import annotations

import gradio as gr

from ui.services import Services

ALL = ""


def preview_items(services: Services, category: str | None) -> tuple[list[tuple[str, str]], list[str], str]:
    """Gallery items (preview path, caption) of the category's styles that have a preview, their style
    names in the same order, and a note on the rest."""
    options, profile = services.options, services.options.profile.name
    previews, manifest = services.previews, services.previews.manifest(profile)
    noise = " · noise (tiny profile)" if manifest.get("noise") else ""
    items, names, missing = [], [], []
    for label, name in options.styles_in(category or None):
        path = previews.path(profile, name)
        if path is None:
            missing.append(label.split(" · ")[0])
        else:
            items.append((str(path), f"{label}{noise}"))
            names.append(name)
    note = "**These previews were rendered by the tiny profile: they are noise.** " if manifest.get("noise") and items else ""
    if missing:
        note += (f"{len(missing)} style(s) have no preview on the {profile} profile yet "
                f"(`python app.py styles previews` renders them): {', '.join(missing[:12])}{' …' if len(missing) > 12 else ''}")
    return items, names, note


def build_style_picker(services: Services, style: gr.Dropdown, elem_id: str, then=None) -> None:
    """An accordion under ``style``: pick a category, then click a preview to choose its style. ``then``
    is (function, inputs, outputs), run after a pick as after the user's own choice in the dropdown."""
    options = services.options
    items, names, note = preview_items(services, None)
    with gr.Accordion("Browse styles with previews", open=False) as accordion:
        category = gr.Dropdown([("All categories · 全部", ALL), *options.style_categories], value=ALL, label="Category")
        gallery = gr.Gallery(items, columns=6, height=260, allow_preview=False, show_label=False, elem_id=elem_id,
                             object_fit="cover")
        missing = gr.Markdown(note)
    shown = gr.State(names)

    def on_category(choice: str):
        items, names, note = preview_items(services, choice)
        style_choices = options.styles_in(choice or None)
        return items, names, note, gr.update(choices=style_choices)

    category.change(on_category, category, [gallery, shown, missing, style], api_visibility="private")
    # Previews rendered since the page was built show up when the picker is opened.
    accordion.expand(lambda choice: preview_items(services, choice), category, [gallery, shown, missing],
                     api_visibility="private")

    def on_pick(names: list[str], evt: gr.SelectData):
        if evt.index is None or evt.index >= len(names):
            return gr.update()
        return names[evt.index]

    picked = gallery.select(on_pick, shown, style, api_visibility="private")
    if then is not None:
        picked.then(*then, api_visibility="private")
