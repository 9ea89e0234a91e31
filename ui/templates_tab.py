"""The Template square: industry templates and the users' own, searched and filtered by tag; "Use this
template" asks for the template's blanks, then opens the tab it names with everything filled.

Each tab a template can open registers a ``TemplateTarget``: how a template's request fills its form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
from PIL import Image, ImageDraw

from tasks.template_client import SOURCES, TAB_LABELS, TemplateCard, TemplateError
from ui.services import Services

MAX_FIELDS = 4
SOURCE_LABELS = {"all": "All", "studio": "Studio templates", "mine": "Mine", "shared": "Shared by colleagues"}
CARD_SIZE = (256, 256)
TAB_COLOURS = {"create": (66, 99, 173), "img2img": (140, 82, 160), "product": (201, 122, 42), "game": (54, 140, 96),
               "photomaker": (176, 64, 84)}


@dataclass
class TemplateTarget:
    """A tab a template opens: its id in the top tabs, its form components, and how a template's request
    (the raw parameters of the tab's job) fills them, as {component: value}."""

    tab_id: str
    components: list
    fill: Callable[[dict], dict[Any, Any]]


def card_picture(services: Services, card: TemplateCard) -> str:
    """The card's picture: the result a user's template was saved from, the rendered preview of a studio
    template, or else a title card drawn once."""
    if card.preview_hash:
        return str(services.files.path(card.preview_hash, "png"))
    rendered = services.template_previews.path(services.options.profile.name, card.template.name)
    if rendered:
        return str(rendered)
    path = services.files.root / "previews" / "templates" / "cards" / f"{card.template.name}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = Image.new("RGB", CARD_SIZE, TAB_COLOURS[card.template.tab])
        draw = ImageDraw.Draw(picture)
        draw.text((20, 20), TAB_LABELS[card.template.tab].upper(), fill=(255, 255, 255), font_size=16)
        draw.multiline_text((20, 70), _wrap(card.template.title, 16), fill=(255, 255, 255), font_size=26, spacing=8)
        tmp = path.with_suffix(".incoming.png")
        picture.save(tmp)
        tmp.replace(path)
    return str(path)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def caption(card: TemplateCard) -> str:
    whose = {"studio": "", "mine": " · mine" + (" (shared)" if card.shared else ""), "shared": f" · by {card.owner}"}
    return f"{card.template.title} · {card.template.title_zh} → {TAB_LABELS[card.template.tab]}{whose[card.source]}"


def details(card: TemplateCard) -> str:
    t = card.template
    blanks = ", ".join(f"{f.label} · {f.label_zh}" for f in t.fields) or "none"
    return (f"### {t.title} · {t.title_zh}\n{t.description}  \n{t.description_zh}\n\n"
            f"**Opens:** {TAB_LABELS[t.tab]} · **Tags:** {', '.join(t.tags)} · **Blanks to fill:** {blanks}\n\n"
            f"**Prompt:** `{t.prompt}`")


def open_template(services: Services, owner: str, tabs: gr.Tabs, targets: dict[str, TemplateTarget], key: str | None,
                  values: list[str]) -> tuple[TemplateCard, dict]:
    """The template (one the owner may see), and {component: value} that opens its tab with the form filled
    from the template and the blanks' ``values`` (in the template's field order); an unfilled blank is an
    error the UI shows."""
    card = services.templates.get(owner, key) if key else None
    if card is None:
        raise gr.Error("Select a template first.")
    try:
        _kind, request = services.templates.request(card, {f.name: values[i] for i, f in enumerate(card.template.fields)})
    except TemplateError as exc:
        raise gr.Error(str(exc)) from exc
    target = targets[card.template.tab]
    return card, {tabs: gr.Tabs(selected=target.tab_id), **target.fill(request)}


def build_templates_tab(services: Services, tabs: gr.Tabs, targets: dict[str, TemplateTarget], tab: gr.Tab) -> None:
    """The square inside ``tab``; opening it reloads the list (a colleague may have shared one)."""
    templates = services.templates
    gr.Markdown("Start from a template: pick one, fill in its blanks, and it opens the right tab with everything set. "
                "Save your own results as templates in **My assets**.")
    with gr.Row():
        search = gr.Textbox(label="Search", placeholder="festival, 海报, coffee…", scale=3, elem_id="templates-search")
        # The tags of the templates the user sees come with the listing when the square is opened.
        tag_filter = gr.Dropdown([], value=[], multiselect=True, label="Tags", scale=3, elem_id="templates-tags")
        source = gr.Radio([(SOURCE_LABELS[s], s) for s in SOURCES], value="all", label="Show", scale=3)
    summary = gr.Markdown(elem_id="templates-summary")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Templates", format="png", columns=4, height=560, object_fit="contain",
                                 allow_preview=False, elem_id="templates-gallery")
        with gr.Column(scale=2):
            info = gr.Markdown("Select a template.", elem_id="templates-details")
            blanks = [gr.Textbox(visible=False, elem_id=f"templates-field-{i}") for i in range(MAX_FIELDS)]
            use_button = gr.Button("Use this template", variant="primary", interactive=False, elem_id="templates-use")
            with gr.Row():
                share_button = gr.Button("Share with everyone", visible=False, elem_id="templates-share")
                delete_button = gr.Button("Delete my template", variant="stop", visible=False, elem_id="templates-delete")
    shown = gr.State([])
    selected = gr.State(None)

    def cards_of(owner: str, search_v: str, tags_v: list[str], source_v: str) -> tuple:
        """Values for ``list_outputs``: the templates the owner sees that pass the filters, nothing selected."""
        cards = templates.list(owner, search_v or "", tags_v or [], source_v)
        items = [(card_picture(services, card), caption(card)) for card in cards]
        text = f"{len(cards)} template(s)" if cards else "No template matches: clear the search or the tags."
        return (items, [c.key for c in cards], text, None, "Select a template.", *[gr.Textbox(visible=False, value="")] * MAX_FIELDS,
                gr.Button(interactive=False), gr.Button(visible=False), gr.Button(visible=False),
                gr.Dropdown(choices=templates.tags(owner)))

    def listing(search_v: str, tags_v: list[str], source_v: str, request: gr.Request):
        return cards_of(services.owner(request), search_v, tags_v, source_v)

    filters = [search, tag_filter, source]
    list_outputs = [gallery, shown, summary, selected, info, *blanks, use_button, share_button, delete_button, tag_filter]
    # The last filter wins: an older listing finishing late must not replace a newer one.
    tab.select(listing, filters, list_outputs, api_visibility="private", trigger_mode="always_last")
    search.submit(listing, filters, list_outputs, api_visibility="private", trigger_mode="always_last")
    for control in (tag_filter, source):
        control.input(listing, filters, list_outputs, api_visibility="private", trigger_mode="always_last")

    def open_card(owner: str, key: str | None) -> tuple:
        """Values for ``card_outputs``: the template the owner selected, its blanks and buttons."""
        card = templates.get(owner, key) if key else None
        if card is None:
            raise gr.Error("This template no longer exists.")
        fields = list(card.template.fields)
        boxes = [gr.Textbox(visible=i < len(fields), value="",
                            label=f"{fields[i].label} · {fields[i].label_zh}" if i < len(fields) else None,
                            placeholder=f"e.g. {fields[i].example}" if i < len(fields) else None)
                 for i in range(MAX_FIELDS)]
        share_label = "Stop sharing" if card.shared else "Share with everyone"
        return (key, details(card), *boxes, gr.Button(interactive=True),
                gr.Button(visible=card.editable, value=share_label), gr.Button(visible=card.editable))

    card_outputs = [selected, info, *blanks, use_button, share_button, delete_button]

    def select(keys: list[str], evt: gr.SelectData, request: gr.Request):
        key = keys[evt.index] if keys and evt.index is not None and evt.index < len(keys) else None
        return open_card(services.owner(request), key)

    gallery.select(select, shown, card_outputs, api_visibility="private")

    all_components = [c for target in targets.values() for c in target.components]

    def use(key: str | None, request: gr.Request, *values: str):
        card, update = open_template(services, services.owner(request), tabs, targets, key, list(values))
        gr.Info(f"“{card.template.title}” is set up in {TAB_LABELS[card.template.tab]}: check it and press Generate.")
        return update

    use_button.click(use, [selected, *blanks], [tabs, *all_components], api_visibility="private")

    def toggle_share(key: str | None, request: gr.Request, *filter_values):
        owner = services.owner(request)
        card = templates.get(owner, key) if key else None
        if card is None:
            raise gr.Error("Select one of your templates first.")
        try:
            card = templates.set_shared(owner, key, not card.shared)
        except TemplateError as exc:
            raise gr.Error(str(exc)) from exc
        gr.Info("Shared with every user of the studio." if card.shared else "Now only you see it.")
        return cards_of(owner, *filter_values)[:3] + open_card(owner, key)

    share_button.click(toggle_share, [selected, *filters], [gallery, shown, summary, *card_outputs], api_visibility="private")

    def delete(key: str | None, request: gr.Request, *filter_values):
        owner = services.owner(request)
        try:
            templates.delete(owner, key or "")
        except TemplateError as exc:
            raise gr.Error(str(exc)) from exc
        gr.Info("Template deleted.")
        return cards_of(owner, *filter_values)

    delete_button.click(delete, [selected, *filters], list_outputs, api_visibility="private")


def save_as_template_panel(services: Services, selected: gr.State) -> None:
    """"Save as template" for the selected result: a title (and a Chinese one), tags, private or shared."""
    with gr.Accordion("Save as template", open=False):
        with gr.Row():
            title = gr.Textbox(label="Title", placeholder="Spring sale banner", elem_id="assets-template-title")
            title_zh = gr.Textbox(label="Chinese title (optional)", placeholder="春季促销横幅")
        tags = gr.Textbox(label="Tags", placeholder="comma-separated: festival, banner")
        shared = gr.Checkbox(value=False, label="Share with every user of the studio", elem_id="assets-template-shared")
        save_button = gr.Button("Save as template", elem_id="assets-template-save")
        status = gr.Markdown(elem_id="assets-template-status")

    def save(asset_id: str | None, title_v: str, title_zh_v: str, tags_v: str, shared_v: bool, request: gr.Request):
        if not asset_id:
            raise gr.Error("Select a result first.")
        try:
            card = services.templates.save_from_asset(services.owner(request), asset_id, title_v, title_zh_v, shared_v,
                                                      tags_v)
        except TemplateError as exc:
            raise gr.Error(str(exc)) from exc
        where = "every user sees it" if card.shared else "only you see it"
        return f"Saved “{card.template.title}” to the Template square ({TAB_LABELS[card.template.tab]}; {where})."

    save_button.click(save, [selected, title, title_zh, tags, shared], status, api_visibility="private")
