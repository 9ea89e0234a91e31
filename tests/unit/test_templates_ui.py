"""Every template of the square opens its tab through the UI's own functions, with values the form accepts."""

from __future__ import annotations

import gradio as gr
import pytest
from PIL import Image

from engine.profiles import load_profiles
from engine.style_previews import render_template_previews
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.pngmeta import png_with_params
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from ui.services import Services
from ui.templates_tab import card_picture, open_template
from ui.web import build_tabs


@pytest.fixture(scope="module")
def studio(tmp_path_factory, models_dir):
    """The whole UI built on the tiny profile (no worker: opening a template submits nothing)."""
    root = tmp_path_factory.mktemp("templates-ui")
    settings = Settings(data_dir=root)
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    profile = load_profiles(models_dir=models_dir)["tiny"]
    services = Services(db=db, files=FileStore(settings.files), local_user_id=owner,
                        client=StudioClient(db, create_celery(settings), profile, load_styles()))
    with gr.Blocks():
        tabs = build_tabs(services)
    yield services, tabs
    db.dispose()


def accepts(component, value) -> bool:
    """Whether the component would show ``value`` as a choice or within its range."""
    if isinstance(component, (gr.Dropdown, gr.Radio, gr.CheckboxGroup)):
        choices = [choice[1] if isinstance(choice, tuple) else choice for choice in component.choices]
        values = value if isinstance(value, list) else [value]
        # An empty LoRA slot is None.
        return all(v in choices or (v is None and isinstance(component, gr.Dropdown)) for v in values)
    if isinstance(component, gr.Slider):
        return component.minimum <= value <= component.maximum
    if isinstance(component, gr.Checkbox):
        return isinstance(value, bool)
    if isinstance(component, gr.Textbox):
        return isinstance(value, str)
    if isinstance(component, gr.Number):
        return isinstance(value, (int, float))
    return isinstance(component, gr.Tabs)


def test_every_template_opens_its_tab_filled(studio):
    services, tabs = studio
    cards = services.templates.list(services.local_user_id)
    assert len(cards) >= 30
    opened = set()
    for card in cards:
        template = card.template
        examples = [field.example for field in template.fields]
        _, update = open_template(services, services.local_user_id, tabs.tabs, tabs.targets, card.key, examples)
        target = tabs.targets[template.tab]
        assert update[tabs.tabs].selected == target.tab_id, template.name
        filled = {component: value for component, value in update.items() if component is not tabs.tabs}
        assert set(filled) <= set(target.components), template.name
        for component, value in filled.items():
            value = value.selected if isinstance(value, gr.Tabs) else value
            assert accepts(component, value), (template.name, component.label, value)
        # The blanks' values are in the prompt the tab shows.
        prompt = next(v for c, v in filled.items() if isinstance(c, gr.Textbox) and c.label.startswith(("Prompt", "Subject", "…or describe")))
        assert all(example in prompt for example in examples), (template.name, prompt)
        if "style" in template.settings:
            assert template.settings["style"] in filled.values(), template.name
        opened.add(template.tab)
    assert opened == set(tabs.targets) == {"create", "img2img", "product", "game", "photomaker"}


def test_a_blank_left_empty_is_asked_for(studio):
    services, tabs = studio
    card = next(c for c in services.templates.list(services.local_user_id) if len(c.template.fields) >= 1)
    with pytest.raises(gr.Error, match=f"Fill in: {card.template.fields[0].label}"):
        open_template(services, services.local_user_id, tabs.tabs, tabs.targets, card.key, [""] * len(card.template.fields))


def test_an_image_to_image_template_ticks_its_keeps_at_their_weights(studio):
    services, tabs = studio
    card = next(c for c in services.templates.list(services.local_user_id) if c.template.settings.get("keeps"))
    _, update = open_template(services, services.local_user_id, tabs.tabs, tabs.targets, card.key, [f.example for f in card.template.fields])
    by_id = {getattr(c, "elem_id", None): v for c, v in update.items()}
    for keep in card.template.settings["keeps"]:
        assert by_id[f"img2img-keep-{keep['kind']}"] is True
        assert by_id[f"img2img-weight-{keep['kind']}"] == keep["weight"]
    unticked = {"pose", "edges", "depth"} - {k["kind"] for k in card.template.settings["keeps"]}
    assert all(by_id[f"img2img-keep-{kind}"] is False for kind in unticked)


def test_rendered_previews_replace_the_title_cards(studio, cache):
    services, _ = studio
    tiny = services.options.profile
    cards = {c.template.name: c for c in services.templates.list(services.local_user_id)}
    chosen = [next(c for c in cards.values() if c.template.tab == tab).template.name for tab in ("create", "product", "photomaker")]
    title_card = card_picture(services, cards[chosen[0]])
    assert "/cards/" in title_card and Image.open(title_card).size == (256, 256)
    catalogue = {name: cards[name].template for name in chosen}
    previews = list(render_template_previews(catalogue, tiny, cache, styles=load_styles()))
    assert [p.style for p in previews] == chosen and all(p.image is not None for p in previews)
    store = services.template_previews
    for preview in previews:
        store.put(tiny.name, preview.style, png_with_params(preview.image, preview.params))
        shown = card_picture(services, cards[preview.style])
        assert shown == str(store.path(tiny.name, preview.style))
    # The preview has the template's shape and its examples in the prompt it was drawn with.
    aspect = cards[chosen[0]].template.settings["aspect"]
    w, h = (int(x) for x in aspect.split(":"))
    assert (previews[0].image.width >= previews[0].image.height) == (w >= h)
    assert all(f.example in previews[0].params["prompt"] for f in cards[chosen[0]].template.fields)
