"""The shipped portrait catalogues (stylizations and edits, avatar styles, photo templates with their
composition sketches), class-word detection, and the loader's checks on broken catalogues."""

import json
import re
import shutil
from collections import Counter

import pytest
from PIL import Image

from engine.params import ASPECT_RATIOS
from engine.portraits import (
    ATTRIBUTE_NAMES,
    AVATAR_STYLES_FILE,
    CLASS_WORDS,
    DEFAULT_TEMPLATES_DIR,
    PHOTO_TEMPLATES_FILE,
    PRESETS_FILE,
    PortraitCatalogueError,
    apply_edits,
    find_class_word,
    load_portrait_catalogue,
)

NAMED_STYLIZATIONS = ["none", "sketch", "comic-book", "anime-film", "van-gogh", "ukiyo-e", "watercolour",
                      "oil-portrait", "pixel-art", "3d-cartoon", "cyberpunk", "ink-wash", "pop-art"]
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def catalogue():
    return load_portrait_catalogue()


def _raw(file):
    return json.loads((DEFAULT_TEMPLATES_DIR / file).read_text(encoding="utf-8"))


def _aspect(aspect):
    w, h = (int(x) for x in aspect.split(":"))
    return w / h


# ------------------------------------------------------------------------------- shipped catalogues


def test_the_shipped_catalogues_load_and_are_well_stocked(catalogue):
    assert set(NAMED_STYLIZATIONS) <= set(catalogue.stylizations)
    assert len(catalogue.stylizations) - 1 >= 12
    assert tuple(catalogue.attributes) == ATTRIBUTE_NAMES
    assert len(catalogue.avatar_styles) >= 50
    assert len(catalogue.photo_templates) >= 20
    assert sum(1 for t in catalogue.photo_templates.values() if t.composition) >= 8
    for category in catalogue.avatar_categories:
        assert any(s.category == category for s in catalogue.avatar_styles.values()), category
    for category in catalogue.template_categories:
        assert any(t.category == category for t in catalogue.photo_templates.values()), category


@pytest.mark.parametrize(("file", "keys"), [(PRESETS_FILE, ("stylizations", "attributes")),
                                            (AVATAR_STYLES_FILE, ("categories", "styles")),
                                            (PHOTO_TEMPLATES_FILE, ("categories", "templates"))])
def test_names_are_unique_in_the_files(file, keys):
    raw = _raw(file)
    for key in keys:
        counts = Counter(entry["name"] for entry in raw[key])
        assert [name for name, n in counts.items() if n > 1] == [], key
    for attribute in raw.get("attributes", []):
        counts = Counter(option["name"] for option in attribute["options"])
        assert [name for name, n in counts.items() if n > 1] == [], attribute["name"]


def test_every_label_is_bilingual(catalogue):
    entries = [*catalogue.stylizations.values(), *catalogue.attributes.values(),
               *(o for a in catalogue.attributes.values() for o in a.options.values()),
               *catalogue.avatar_categories.values(), *catalogue.avatar_styles.values(),
               *catalogue.template_categories.values(), *catalogue.photo_templates.values()]
    for entry in entries:
        assert entry.label.strip() and CJK.search(entry.label_zh), entry.name


def test_stylizations_take_the_prompt(catalogue):
    for stylization in catalogue.stylizations.values():
        prompt, negative = stylization.apply(" a woman ", "text")
        assert "a woman" in prompt and "{prompt}" not in prompt, stylization.name
        assert negative.startswith("text"), stylization.name
    assert catalogue.stylizations["none"].apply(" a woman ", "text") == ("a woman", "text")


def test_attributes_offer_four_to_eight_options_and_no_none(catalogue):
    for attribute in catalogue.attributes.values():
        assert 4 <= len(attribute.options) <= 8, attribute.name
        assert "none" not in attribute.options, attribute.name
        assert all(option.words.strip() for option in attribute.options.values()), attribute.name


def test_avatar_styles_and_templates_take_the_subject(catalogue):
    for item in [*catalogue.avatar_styles.values(), *catalogue.photo_templates.values()]:
        rendered = item.render("  a woman ")
        assert "a woman" in rendered and "{subject}" not in rendered, item.name
        assert item.aspect in ASPECT_RATIOS, item.name
        assert "deformed face" in item.negative, item.name
    aspects = Counter(s.aspect for s in catalogue.avatar_styles.values())
    assert aspects["1:1"] + aspects["3:4"] >= 0.8 * len(catalogue.avatar_styles)


def test_at_most_two_avatar_styles_use_a_lora_and_only_on_sdxl(catalogue):
    with_lora = {name: s for name, s in catalogue.avatar_styles.items() if s.lora is not None}
    assert 1 <= len(with_lora) <= 2
    for name, style in with_lora.items():
        assert style.lora.profile == "sdxl" and style.lora.weight_name.endswith(".safetensors"), name
        assert style.lora_for("sdxl") is style.lora and style.lora_for("sd15") is None


def test_composition_sketches_are_canny_like_and_match_their_aspect(catalogue):
    with_composition = [t for t in catalogue.photo_templates.values() if t.composition]
    for template in with_composition:
        path = template.composition
        assert path.is_absolute() and path.parent == (DEFAULT_TEMPLATES_DIR / "compositions").resolve()
        assert 0.3 <= template.composition_scale <= 1.0, template.name
        assert path.stat().st_size < 20_000, path.name
        with Image.open(path) as image:
            assert image.mode == "L" and max(image.size) == 768, path.name
            w, h = image.size
            assert abs(w / h / _aspect(template.aspect) - 1) <= 0.02, template.name
            histogram = image.histogram()
        white, black, total = sum(histogram[129:]), histogram[0], w * h
        assert 0.005 < white / total < 0.15, path.name  # white lines ...
        assert black / total > 0.85, path.name  # ... on black
    for template in catalogue.photo_templates.values():
        if template.composition is None:
            assert template.composition_scale == 0.0, template.name


# ------------------------------------------------------------------------------------ class words


@pytest.mark.parametrize(("prompt", "word"), [
    ("a man in a suit", "man"), ("一个女孩在海边", "女孩"), ("a castle", None), ("Two Women on a bench", "women"),
    ("a human figure", None), ("一个男人", "男人"), ("portrait of a Girl, smiling", "girl"), ("", None),
])
def test_find_class_word(prompt, word):
    assert find_class_word(prompt) == word
    if word is not None:
        assert CLASS_WORDS[word] in {"man", "woman", "boy", "girl", "person", "child", "baby"}


def test_class_words_map_to_their_class():
    assert CLASS_WORDS[find_class_word("Two women")] == "woman"
    assert CLASS_WORDS[find_class_word("一个女孩在海边")] == "girl"


# ------------------------------------------------------------------------------------------ edits


def test_apply_edits_adds_words_in_attribute_order(catalogue):
    attributes = catalogue.attributes
    edits = {"clothing": "suit", "glasses": "round", "age": "elderly", "beard": "", "makeup": None}
    prompt = apply_edits(" a man ", edits, attributes)
    parts = ["a man", attributes["age"].options["elderly"].words, attributes["glasses"].options["round"].words,
             attributes["clothing"].options["suit"].words]
    assert prompt == ", ".join(parts)
    assert apply_edits("a man", {}, attributes) == "a man"


def test_apply_edits_rejects_an_unknown_choice(catalogue):
    attributes = catalogue.attributes
    options = ", ".join(attributes["glasses"].options)
    with pytest.raises(ValueError, match=re.escape(f"Unknown Glasses 'monocle': choose one of {options}.")):
        apply_edits("a man", {"glasses": "monocle"}, attributes)
    with pytest.raises(ValueError, match=r"Unknown attribute 'tattoo': choose one of age, hairstyle"):
        apply_edits("a man", {"tattoo": "dragon"}, attributes)


# ------------------------------------------------------------------------------- broken catalogues


@pytest.fixture
def broken(tmp_path):
    """A copy of the shipped catalogues; call it with a file name and a change to that file's data."""
    shutil.copytree(DEFAULT_TEMPLATES_DIR / "compositions", tmp_path / "compositions")
    for file in (PRESETS_FILE, AVATAR_STYLES_FILE, PHOTO_TEMPLATES_FILE):
        shutil.copy(DEFAULT_TEMPLATES_DIR / file, tmp_path / file)

    def write(file, change):
        data = _raw(file)
        change(data)
        (tmp_path / file).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return tmp_path

    return write


def test_the_copied_catalogues_load(broken):
    root = broken(PRESETS_FILE, lambda data: None)
    catalogue = load_portrait_catalogue(root)
    assert catalogue.photo_templates["id-photo-white"].composition.parent.parent == root.resolve()


def _entry(data, key, name):
    return next(entry for entry in data[key] if entry["name"] == name)


def _set(key, entry_name, **changes):
    return lambda data: _entry(data, key, entry_name).update(changes)


def _drop(key, entry_name, field):
    return lambda data: _entry(data, key, entry_name).pop(field)


def _option(attribute, option, **changes):
    def change(data):
        entry = _entry(_entry(data, "attributes", attribute), "options", option)
        entry.update(changes)
    return change


def _twice(key, name):
    return lambda data: data[key].append(dict(_entry(data, key, name)))


@pytest.mark.parametrize(("file", "change", "message"), [
    # stylizations and attributes
    (PRESETS_FILE, _set("stylizations", "sketch", prompt="pencil sketch"),
     r"photomaker_presets.json: stylization 'sketch': .*exactly one \{prompt\} slot"),
    (PRESETS_FILE, _set("stylizations", "sketch", prompt="{prompt} and {prompt}"),
     r"stylization 'sketch': .*exactly one \{prompt\} slot"),
    (PRESETS_FILE, _set("stylizations", "sketch", label_zh=" "), r"stylization 'sketch': label_zh is empty"),
    (PRESETS_FILE, _set("stylizations", "sketch", colour="grey"),
     r"stylization 'sketch': unknown field\(s\) colour"),
    (PRESETS_FILE, _set("stylizations", "sketch", name="Pencil Sketch"),
     r"stylization 'Pencil Sketch': the name must be lower-case"),
    (PRESETS_FILE, _twice("stylizations", "sketch"), r"stylization 'sketch' appears twice"),
    (PRESETS_FILE, lambda data: data["stylizations"].pop(0), r"the stylization 'none'"),
    (PRESETS_FILE, _set("attributes", "beard", name="tattoo"), r"attribute 'tattoo': unknown attribute"),
    (PRESETS_FILE, lambda data: data["attributes"].pop(), r"attributes must be exactly age, hairstyle"),
    (PRESETS_FILE, lambda data: data["attributes"].reverse(), r"attributes must be exactly age, hairstyle"),
    (PRESETS_FILE, _set("attributes", "glasses", options=[]), r"attribute 'glasses': options must be a non-empty"),
    (PRESETS_FILE, _option("glasses", "round", words=""),
     r"attribute 'glasses' option 'round': words is empty"),
    (PRESETS_FILE, _option("glasses", "round", name="none"), r"attribute 'glasses' option 'none': leave"),
    # avatar styles
    (AVATAR_STYLES_FILE, _set("styles", "elf", prompt="an elf portrait"),
     r"avatar_styles.json: avatar style 'elf': .*exactly one \{subject\} slot"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", category="space"), r"avatar style 'elf': unknown category 'space'"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", aspect="5:7"), r"avatar style 'elf': aspect '5:7' must be one of"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", size=[1024, 1024]), r"avatar style 'elf': unknown field\(s\) size"),
    (AVATAR_STYLES_FILE, _twice("styles", "elf"), r"avatar style 'elf' appears twice"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", lora={"profile": "sdxl", "model": "a/b", "weight": 0.8}),
     r"avatar style 'elf': the LoRA lacks weight_name"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", lora={"profile": "sdxl", "model": "a/b", "weight_name": "x.ckpt",
                                                     "weight": 0.8}), r"avatar style 'elf': .*\.safetensors"),
    (AVATAR_STYLES_FILE, _set("styles", "elf", lora={"profile": "sdxl", "model": "a/b",
                                                     "weight_name": "x.safetensors", "weight": 3}),
     r"avatar style 'elf': the LoRA weight"),
    (AVATAR_STYLES_FILE, lambda data: data["categories"].append(dict(data["categories"][0])),
     r"avatar_styles.json: category '[a-z-]+' appears twice"),
    # photo templates
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", prompt="a wedding"),
     r"photo_templates.json: photo template 'wedding': .*exactly one \{subject\} slot"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", category="party"),
     r"photo template 'wedding': unknown category 'party'"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", composition="missing.png"),
     r"photo template 'wedding': composition 'missing.png' is not in"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", composition="../photo_templates.json"),
     r"photo template 'wedding': composition '\.\./photo_templates.json' must be the name of a \.png"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", composition="bust-front.png"),
     r"photo template 'wedding': composition 'bust-front.png' is 576×768, not of the aspect 4:3"),
    (PHOTO_TEMPLATES_FILE, _drop("templates", "wedding", "composition_scale"),
     r"photo template 'wedding': composition_scale is needed"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "wedding", composition_scale=1.5),
     r"photo template 'wedding': composition_scale 1.5 must be a number from 0.3 to 1.0"),
    (PHOTO_TEMPLATES_FILE, _set("templates", "cafe", composition_scale=0.5),
     r"photo template 'cafe': composition_scale is set without a composition"),
    (PHOTO_TEMPLATES_FILE, _twice("templates", "cafe"), r"photo template 'cafe' appears twice"),
])
def test_the_loader_rejects_a_broken_entry_and_names_it(broken, file, change, message):
    with pytest.raises(PortraitCatalogueError, match=message):
        load_portrait_catalogue(broken(file, change))


def test_a_composition_that_is_not_a_png_is_rejected(broken):
    root = broken(PHOTO_TEMPLATES_FILE, lambda data: None)
    (root / "compositions" / "bust-front.png").write_bytes(b"GIF89a not a png at all, just some bytes")
    with pytest.raises(PortraitCatalogueError, match=r"photo template 'id-photo-white': .* is not a PNG image"):
        load_portrait_catalogue(root)


def test_a_missing_or_malformed_file_is_named(broken):
    root = broken(PRESETS_FILE, lambda data: None)
    (root / AVATAR_STYLES_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(PortraitCatalogueError, match=r"avatar_styles.json: not valid JSON"):
        load_portrait_catalogue(root)
    (root / AVATAR_STYLES_FILE).unlink()
    with pytest.raises(PortraitCatalogueError, match=r"avatar_styles.json: the catalogue is missing"):
        load_portrait_catalogue(root)
