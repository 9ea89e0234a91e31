"""The shipped style catalogue (templates/styles.json) and the loader's checks on broken catalogues."""

import json
import re
from collections import Counter

import pytest

from engine.styles import DEFAULT_STYLES_FILE, FAMILIES, StyleCatalogueError, load_catalogue

# Styles that other code, the term dictionary and the tests refer to by name.
CORE_STYLES = ["none", "photographic", "product-studio", "cinematic", "anime", "digital-art", "watercolor",
               "ink-wash", "oil-painting", "3d-render", "pixel-art", "line-art", "isometric", "cyberpunk",
               "flat-vector", "guofeng"]

# One representative style per family of looks the catalogue promises game artists and ad teams.
FAMILY_STYLES_2D = {
    "japanese anime": "anime", "chibi": "chibi", "chinese ancient": "guofeng", "ink wash": "ink-wash",
    "vector / flat": "flat-vector", "western fantasy": "western-fantasy", "pixel art": "pixel-art",
    "watercolour": "watercolor", "cel-shaded": "cel-shaded", "american comic": "american-comic",
    "black-and-white manga": "manga-bw", "dark fantasy": "dark-fantasy", "gothic": "gothic",
    "steampunk": "steampunk", "hand-painted texture": "hand-painted-texture", "card game": "card-game-art",
    "visual novel": "visual-novel", "storybook": "storybook", "paper-cut": "paper-cut",
    "chinese new year festive": "guochao", "dunhuang mural": "dunhuang", "ukiyo-e": "ukiyo-e",
    "art nouveau": "art-nouveau", "sticker / emote": "sticker-emote", "ui icon": "ui-icon",
    "concept art": "concept-art", "minimalist line": "minimalist-line",
}
FAMILY_STYLES_3D = {
    "modern realistic": "realistic-3d", "chinese ancient / xianxia": "xianxia-3d",
    "western fantasy": "western-fantasy-3d", "cyberpunk": "cyberpunk-3d", "hard sci-fi": "hard-scifi",
    "military": "military-3d", "racing": "racing-3d", "chibi pets": "chibi-pet-3d", "low-poly": "low-poly",
    "isometric diorama": "isometric-diorama", "voxel": "voxel", "clay": "claymation", "toy / vinyl": "vinyl-toy",
    "stylised pbr": "stylised-pbr", "unreal-style realistic": "unreal-realistic", "hand-painted": "hand-painted-3d",
    "mecha": "mecha", "post-apocalyptic": "post-apocalyptic", "underwater": "underwater-3d",
    "space opera": "space-opera",
}
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def catalogue():
    return load_catalogue()


@pytest.fixture(scope="module")
def raw():
    return json.loads(DEFAULT_STYLES_FILE.read_text(encoding="utf-8"))


def test_the_shipped_catalogue_loads_and_is_large(catalogue):
    assert len(catalogue.styles) >= 60
    assert set(CORE_STYLES) <= set(catalogue.styles)


def test_names_are_unique_in_the_file(raw):
    for key in ("styles", "categories"):
        counts = Counter(entry["name"] for entry in raw[key])
        assert [name for name, n in counts.items() if n > 1] == [], key


def test_every_prompt_has_one_slot_and_takes_the_subject(catalogue):
    for style in catalogue.styles.values():
        assert style.prompt.count("{prompt}") == 1, style.name
        prompt, negative = style.apply("a knight", "")
        assert "a knight" in prompt and "{prompt}" not in prompt, style.name
        assert negative == style.negative, style.name
    assert catalogue.styles["none"].apply(" a knight ", "text") == ("a knight", "text")


def test_categories_and_styles_point_at_each_other(catalogue):
    for style in catalogue.styles.values():
        assert style.category in catalogue.categories, style.name
    for name, category in catalogue.categories.items():
        assert category.family in FAMILIES, name
        assert catalogue.in_category(name), f"category {name} has no style"


def test_both_2d_and_3d_families_are_well_stocked(catalogue):
    families = Counter(catalogue.categories[s.category].family for s in catalogue.styles.values())
    assert families["2d"] >= 20 and families["3d"] >= 20


def test_every_label_is_bilingual(catalogue):
    for style in catalogue.styles.values():
        assert style.label.strip() and CJK.search(style.label_zh), style.name
    for category in catalogue.categories.values():
        assert category.label.strip() and CJK.search(category.label_zh), category.name


@pytest.mark.parametrize(("family", "styles"), [("2d", FAMILY_STYLES_2D), ("3d", FAMILY_STYLES_3D)])
def test_the_promised_looks_are_present(catalogue, family, styles):
    for look, name in styles.items():
        assert name in catalogue.styles, f"{look}: {name}"
        assert catalogue.categories[catalogue.styles[name].category].family == family, f"{look}: {name}"


def test_sizes_are_sdxl_buckets_and_settings_are_sensible(catalogue):
    for style in catalogue.styles.values():
        w, h = style.size
        assert w % 64 == 0 and h % 64 == 0 and 512 <= min(w, h) and max(w, h) <= 2048, style.name
        if style.name != "none":
            assert 20 <= style.steps <= 50 and 3 <= style.guidance <= 12, style.name
    for name in ("ui-icon", "sticker-emote", "item-icon"):
        assert catalogue.styles[name].aspect == "1:1", name


def test_lora_styles_name_a_safetensors_file_and_a_sane_weight(catalogue):
    with_lora = {name: s.lora for name, s in catalogue.styles.items() if s.lora is not None}
    assert set(with_lora) == {"pixel-art", "vinyl-toy"}
    for name, lora in with_lora.items():
        assert lora.profile == "sdxl" and lora.model, name
        assert lora.weight_name.endswith(".safetensors") and 0 < lora.weight <= 2, name
        assert catalogue.styles[name].lora_for("sdxl") is lora
        assert catalogue.styles[name].lora_for("sd15") is None


def _good_style(**changes):
    style = {"name": "knightly", "label": "Knightly", "label_zh": "骑士", "category": "fantasy",
             "prompt": "painting of {prompt}, armour", "negative": "photo", "aspect": "2:3", "size": [832, 1216],
             "steps": 30, "guidance": 7.0}
    style.update(changes)
    return style


def _write(tmp_path, styles):
    catalogue = {"categories": [{"name": "general", "label": "General", "label_zh": "通用", "family": "general"},
                                {"name": "fantasy", "label": "Fantasy", "label_zh": "奇幻", "family": "2d"}],
                 "styles": [{"name": "none", "label": "No style", "label_zh": "无风格", "category": "general",
                             "prompt": "{prompt}", "negative": ""}, *styles]}
    path = tmp_path / "styles.json"
    path.write_text(json.dumps(catalogue, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_good_small_catalogue_loads(tmp_path):
    catalogue = load_catalogue(_write(tmp_path, [_good_style()]))
    assert catalogue.styles["knightly"].size == (832, 1216) and catalogue.styles["knightly"].guidance == 7.0


@pytest.mark.parametrize(("styles", "message"), [
    ([_good_style(prompt="painting of a knight")], r"style 'knightly': .*exactly one \{prompt\} slot"),
    ([_good_style(prompt="{prompt} and {prompt}")], r"style 'knightly': .*exactly one \{prompt\} slot"),
    ([_good_style(), _good_style()], r"style 'knightly' appears twice"),
    ([_good_style(category="space")], r"style 'knightly': unknown category 'space'"),
    ([_good_style(size=[1216, 832])], r"style 'knightly': size 1216×832 does not have the aspect 2:3"),
    ([_good_style(colour="red")], r"style 'knightly': unknown field\(s\) colour"),
])
def test_the_loader_rejects_a_broken_style_and_names_it(tmp_path, styles, message):
    with pytest.raises(StyleCatalogueError, match=message):
        load_catalogue(_write(tmp_path, styles))
