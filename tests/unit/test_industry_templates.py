"""The industry template catalogue: every shipped template fills into a request its tab's resolver accepts,
filling in and searching templates, and the checks on broken templates."""

import json
import re
from collections import Counter

import pytest

from engine.game.request import load_asset_types, resolve_game_asset
from engine.identity_request import resolve_identity
from engine.industry_templates import (
    PROMPT_KEYS,
    TEMPLATE_TABS,
    CatalogNames,
    TemplateError,
    all_tags,
    aspect_size,
    load_industry_templates,
    template_from_dict,
)
from engine.params import ASPECT_RATIOS, resolve_generation
from engine.portraits import load_portrait_catalogue
from engine.product.request import resolve_product
from engine.product.scenes import load_scenes
from engine.profiles import load_profiles
from engine.styles import load_styles

CJK = re.compile(r"[\u4e00-\u9fff]")
# The catalogue's shared tag vocabulary: a new tag is a deliberate addition here, not a typo in the file.
VOCABULARY = {"app", "banner", "beauty", "business", "character", "cover", "e-commerce", "electronics", "event",
              "fashion", "festival", "food", "game", "icon", "illustration", "interior", "portrait", "poster",
              "print", "product", "real-estate", "restyle", "social-media", "texture", "travel"}
NAMES = CatalogNames.load()
TEMPLATES = load_industry_templates(names=NAMES)
PROFILES = load_profiles()


@pytest.fixture(scope="module")
def catalogues():
    return {"styles": load_styles(), "scenes": load_scenes(), "asset_types": load_asset_types(),
            "portraits": load_portrait_catalogue()}


def examples(template):
    return {f.name: f.example for f in template.fields}


# --- the shipped catalogue ---------------------------------------------------------------------------------


def test_the_catalogue_covers_every_tab_with_bilingual_entries():
    tabs = Counter(t.tab for t in TEMPLATES.values())
    assert len(TEMPLATES) >= 36
    assert set(tabs) == set(TEMPLATE_TABS)
    assert tabs["img2img"] >= 4 and tabs["game"] >= 4 and tabs["photomaker"] >= 3
    assert tabs["create"] + tabs["product"] > len(TEMPLATES) / 2
    for template in TEMPLATES.values():
        assert template.title and CJK.search(template.title_zh), template.name
        assert template.description and CJK.search(template.description_zh), template.name
        assert all(f.example and CJK.search(f.label_zh) for f in template.fields), template.name


def test_tags_come_from_one_small_vocabulary():
    for template in TEMPLATES.values():
        assert 2 <= len(template.tags) <= 5, template.name
        assert set(template.tags) <= VOCABULARY, template.name
    assert 15 <= len(all_tags(TEMPLATES)) <= 25
    assert all_tags(TEMPLATES) == sorted(all_tags(TEMPLATES.values()))


@pytest.mark.parametrize("profile_name", ["tiny", "sdxl"])
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_filled_with_its_examples_passes_its_tabs_resolver(name, profile_name, catalogues):
    template, profile = TEMPLATES[name], PROFILES[profile_name]
    raw = template.request(examples(template), profile)
    assert raw[PROMPT_KEYS[template.tab]] == template.filled_prompt(examples(template))
    styles = catalogues["styles"]
    if template.tab == "create":
        params = resolve_generation(raw, profile, styles)
        assert (params.width, params.height) == aspect_size(template.settings["aspect"], profile)
    elif template.tab == "product":
        resolve_product(dict(raw, material_id="m1"), profile, catalogues["scenes"])
    elif template.tab == "game":
        resolve_game_asset(raw, profile, styles, catalogues["asset_types"])
    elif template.tab == "photomaker":
        resolve_identity(dict(raw, photos=["p1"]), profile, catalogues["portraits"])
    else:
        from engine.img2img_request import resolve_img2img

        resolve_img2img(dict(raw, source_asset_id="a1"), profile, styles)


@pytest.mark.parametrize("profile_name", ["tiny", "sd15", "sdxl", "hunyuan"])
@pytest.mark.parametrize("aspect", ASPECT_RATIOS)
def test_an_aspect_becomes_a_size_in_the_profiles_range_close_to_the_ratio(aspect, profile_name):
    profile = PROFILES[profile_name]
    width, height = aspect_size(aspect, profile)
    w, h = (int(x) for x in aspect.split(":"))
    assert width % 8 == 0 and height % 8 == 0
    assert profile.min_size <= min(width, height) and max(width, height) <= profile.max_size
    fits = max(w, h) / min(w, h) <= profile.max_size / profile.min_size
    if fits and profile_name != "tiny":  # tiny's 64 px, in steps of 32, holds no ratio finer than 2:1
        assert abs(width / height / (w / h) - 1) < 0.12


def test_a_thin_ratio_is_widened_from_the_minimum_rather_than_squashed():
    assert aspect_size("21:9", PROFILES["sdxl"]) == (1184, 512)


# --- filling in --------------------------------------------------------------------------------------------


def test_the_error_names_every_field_left_empty_or_blank():
    template = TEMPLATES["cosmetics-splash-ad"]
    with pytest.raises(TemplateError, match=r"^Fill in: Product, Background colour$"):
        template.filled_prompt({"colour": "  "})
    assert [f.name for f in template.missing({"product": "a lipstick", "colour": ""})] == ["colour"]
    assert template.missing({"product": "a lipstick", "colour": "rose"}) == []


def test_values_are_stripped_into_their_slots():
    template = TEMPLATES["ecommerce-hero"]
    assert template.filled_prompt({"product": "  a ceramic mug \n"}).startswith("a ceramic mug on a white marble")


@pytest.mark.parametrize("value", ["a {product} lamp", "lamp}", "{"])
def test_a_value_with_braces_is_refused(value):
    with pytest.raises(TemplateError, match="Product may not contain"):
        TEMPLATES["ecommerce-hero"].filled_prompt({"product": value})


def test_a_value_that_looks_like_another_slot_is_not_filled_again():
    template = TEMPLATES["cosmetics-splash-ad"]
    prompt = template.filled_prompt({"product": "colour pencils", "colour": "pale pink"})
    assert prompt.startswith("colour pencils surrounded") and "pale pink gradient" in prompt


def test_the_request_carries_the_tabs_keys_and_leaves_the_template_unchanged():
    product = TEMPLATES["product-kitchen-lifestyle"].request({"ingredients": "tomatoes"}, PROFILES["sdxl"])
    assert "negative_prompt" not in product and "prompt" not in product
    assert product["scene_prompt"].startswith("sunlit kitchen counter with fresh tomatoes")
    template = TEMPLATES["room-restyle"]
    raw = template.request(examples(template), PROFILES["tiny"])
    assert raw["negative_prompt"] == template.negative_prompt and raw["strength"] == 0.7
    raw["keeps"][0]["weight"] = 2.0
    assert template.settings["keeps"][0]["weight"] == 0.9
    created = TEMPLATES["ecommerce-hero"].request({"product": "a mug"}, PROFILES["sdxl"])
    assert "aspect" not in created and (created["width"], created["height"]) == (1024, 1024)


def test_the_job_kind_follows_the_tab():
    assert TEMPLATES["game-item-icon"].job_kind == "game_asset"
    assert TEMPLATES["business-headshot"].job_kind == "identity"


# --- searching ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("search, tags, expected", [
    ("", [], True),
    ("主图", [], True),  # title_zh
    ("HERO shot", [], True),  # title, any case
    ("marble pedestal", [], True),  # prompt
    ("商品图", [], True),  # description_zh
    ("  e-commerce ", ["product"], True),  # a tag, search stripped
    ("", ["e-commerce", "product"], True),
    ("", ["e-commerce", "festival"], False),  # every tag must be present
    ("月饼", [], False),
])
def test_matches_searches_both_languages_and_requires_every_tag(search, tags, expected):
    assert TEMPLATES["ecommerce-hero"].matches(search, tags) is expected


def test_a_tag_filter_and_a_chinese_search_find_the_festival_templates():
    found = [t.name for t in TEMPLATES.values() if t.matches("中秋", ["festival"])]
    assert found == ["mid-autumn-poster", "product-mid-autumn"]


# --- round trip and checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_to_dict_round_trips_through_json(name):
    template = TEMPLATES[name]
    assert template_from_dict(json.loads(json.dumps(template.to_dict())), NAMES) == template


BASE_SETTINGS = {
    "create": {"style": "photographic", "aspect": "1:1"},
    "img2img": {"style": "watercolor", "strength": 0.6, "keeps": [{"kind": "edges", "weight": 0.6}]},
    "product": {"scenes": ["podium"], "canvas_format": "1:1"},
    "game": {"asset_type": "prop", "style": "item-icon"},
    "photomaker": {"stylization": "none"},
}


def entry(tab="create", settings=None, **changes):
    """A valid template of the tab, with some settings and top-level keys changed (None removes a key)."""
    data = {"name": "sample", "title": "Sample", "title_zh": "样例", "description": "A sample.",
            "description_zh": "样例。", "tab": tab, "tags": ["product"], "prompt": "a woman holding {product}",
            "negative_prompt": "", "fields": [{"name": "product", "label": "Product", "label_zh": "产品",
                                               "example": "a mug"}],
            "settings": dict(BASE_SETTINGS.get(tab, {}), **(settings or {}))}
    data.update(changes)
    data["settings"] = {k: v for k, v in data["settings"].items() if v is not None}
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize("tab", list(TEMPLATE_TABS))
def test_a_sample_of_each_tab_is_valid(tab):
    assert template_from_dict(entry(tab), NAMES).tab == tab


def test_a_users_template_may_have_chinese_tags_no_fields_and_no_description():
    template = template_from_dict(entry(tags=["电商", "street-food"], fields=[], prompt="a mug", description=None,
                                        description_zh=None), NAMES)
    assert template.tags == ("电商", "street-food") and template.description == "" and template.fields == ()


KEEP = {"kind": "edges", "weight": 0.5}


@pytest.mark.parametrize("data, problem", [
    (entry(tab="video"), "unknown tab 'video'"),
    (entry(settings={"style": "no-such-style"}), "unknown style 'no-such-style'"),
    (entry("product", settings={"scenes": ["moon"]}), "unknown scene 'moon'"),
    (entry("product", settings={"scenes": ["podium", "podium"]}), "a scene is named twice"),
    (entry("game", settings={"asset_type": "vehicle"}), "unknown asset type 'vehicle'"),
    (entry("photomaker", settings={"stylization": "cubism"}), "unknown stylization 'cubism'"),
    (entry("product", settings={"canvas_format": "3:2"}), "unknown canvas format '3:2'"),
    (entry(settings={"aspect": "5:4"}), "unknown aspect '5:4'"),
    (entry("img2img", settings={"keeps": [{"kind": "normal", "weight": 1}]}), "unknown keep kind 'normal'"),
    (entry("img2img", settings={"keeps": [KEEP, KEEP]}), "keep kind edges appears twice"),
    (entry("img2img", settings={"keeps": [{"kind": "pose", "weight": 2.5}]}), "weight 2.5 is out of range"),
    (entry("img2img", settings={"keeps": [{"kind": "pose"}]}), 'each keep must be {"kind"'),
    (entry("img2img", settings={"strength": 1.5}), "strength 1.5 is out of range"),
    (entry("img2img", settings={"strength": None}), "needs the setting strength"),
    (entry(settings={"aspect": None}), "needs the setting aspect"),
    (entry(settings={"count": 9}), "count 9 is out of range"),
    (entry(settings={"steps": 2.5}), "steps must be a whole number"),
    (entry("game", settings={"transparent": "yes"}), "transparent must be true or false"),
    (entry(settings={"sampler": "euler"}), "unknown settings key sampler for the create tab"),
    (entry("photomaker", settings={"aspect": "1:1"}), "unknown settings key aspect for the photomaker tab"),
    (entry(prompt="{product} in {city}"), "the prompt slot {city} is not declared"),
    (entry(prompt="a plain mug"), "the field product is declared but not used"),
    (entry(prompt="a {product} with a stray }"), "stray { or }"),
    (entry(fields=[{"name": "product", "label": "P", "label_zh": "产"}] * 2), "the field product is declared twice"),
    (entry(fields=[{"name": "Product", "label": "P", "label_zh": "产"}]), "field name 'Product'"),
    (entry(name="Hero Shot"), "the name must be lower-case"),
    (entry(title=None), "title is missing"),
    (entry(title_zh=" "), "title_zh is missing"),
    (entry(tags="e-commerce"), "tags must be a list of strings"),
    (entry(tags=["food", 3]), "tags must be a list of strings"),
    (entry(tags=["Food"]), "tag 'Food' must be lower case"),
    (entry(tags=["street food"]), "tag 'street food' must be lower case, words joined by '-'"),
    (entry("product", negative_prompt="people"), "a product template has no negative prompt"),
    (entry(colour="red"), "unknown key colour"),
])
def test_a_broken_template_is_refused_naming_it_and_the_problem(data, problem):
    with pytest.raises(TemplateError) as caught:
        template_from_dict(data, NAMES)
    assert problem in str(caught.value) and repr(data["name"]) in str(caught.value)


def test_the_file_must_not_name_a_template_twice(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"templates": [entry(), entry()]}), encoding="utf-8")
    with pytest.raises(TemplateError, match="'sample' appears twice"):
        load_industry_templates(path, NAMES)


def test_a_file_of_another_shape_is_refused(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps([entry()]), encoding="utf-8")
    with pytest.raises(TemplateError, match=r'must be \{"templates"'):
        load_industry_templates(path, NAMES)


def test_templates_keep_the_files_order(tmp_path):
    path = tmp_path / "templates.json"
    path.write_text(json.dumps({"templates": [entry(name="b-second"), entry(name="a-first")]}), encoding="utf-8")
    assert list(load_industry_templates(path, NAMES)) == ["b-second", "a-first"]
