"""The portrait studio's catalogues, read from ``templates/``: stylizations of a person's portrait and the
attributes a user may edit (``photomaker_presets.json``), avatar styles (``avatar_styles.json``) and photo
templates with an optional composition sketch for the canny ControlNet (``photo_templates.json``).

Torch-free, so the web side can offer and check portrait choices without a model.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from engine.params import ASPECT_RATIOS
from engine.styles import NAME_PATTERN, StyleLora

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
PRESETS_FILE = "photomaker_presets.json"
AVATAR_STYLES_FILE = "avatar_styles.json"
PHOTO_TEMPLATES_FILE = "photo_templates.json"
COMPOSITIONS_DIR = "compositions"
# The attributes a user may edit, in the order their words join the prompt.
ATTRIBUTE_NAMES = ("age", "hairstyle", "hair_colour", "expression", "glasses", "beard", "makeup", "clothing")
COMPOSITION_SCALE_RANGE = (0.3, 1.0)
# A composition sketch's width/height may differ from its template's aspect by this fraction.
COMPOSITION_ASPECT_TOLERANCE = 0.02
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PortraitCatalogueError(ValueError):
    """A catalogue entry that cannot be used; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Stylization:
    name: str
    label: str
    label_zh: str
    prompt: str
    negative: str

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        """The stylized prompt and the user's negative joined with the stylization's."""
        styled = self.prompt.replace("{prompt}", prompt.strip())
        negatives = [n for n in (negative.strip(), self.negative) if n]
        return styled, ", ".join(negatives)


@dataclass(frozen=True)
class EditOption:
    name: str
    label: str
    label_zh: str
    words: str


@dataclass(frozen=True)
class Attribute:
    name: str
    label: str
    label_zh: str
    options: dict[str, EditOption]  # in file order


@dataclass(frozen=True)
class PortraitCategory:
    name: str
    label: str
    label_zh: str


@dataclass(frozen=True)
class AvatarStyle:
    name: str
    label: str
    label_zh: str
    category: str
    prompt: str
    negative: str
    aspect: str = "1:1"
    lora: StyleLora | None = None

    def render(self, subject: str) -> str:
        return self.prompt.replace("{subject}", subject.strip())

    def lora_for(self, profile_name: str) -> StyleLora | None:
        return self.lora if self.lora is not None and self.lora.profile == profile_name else None


@dataclass(frozen=True)
class PhotoTemplate:
    name: str
    label: str
    label_zh: str
    category: str
    prompt: str
    negative: str
    aspect: str = "3:4"
    composition: Path | None = None  # absolute path of the sketch in templates/compositions/
    composition_scale: float = 0.0

    def render(self, subject: str) -> str:
        return self.prompt.replace("{subject}", subject.strip())


@dataclass(frozen=True)
class PortraitCatalogue:
    stylizations: dict[str, Stylization]
    attributes: dict[str, Attribute]
    avatar_categories: dict[str, PortraitCategory]
    avatar_styles: dict[str, AvatarStyle]
    template_categories: dict[str, PortraitCategory]
    photo_templates: dict[str, PhotoTemplate]


# ---------------------------------------------------------------------------------------------- checks


class _Entry:
    """Checks on one catalogue entry; every failure names the file, the kind of entry and its name."""

    def __init__(self, file: str, kind: str, entry: object):
        self.file, self.kind = file, kind
        if not isinstance(entry, dict):
            raise PortraitCatalogueError(f"{file}: a {kind} must be an object, not {entry!r}")
        self.entry = entry
        self.name = entry.get("name", "")

    def fail(self, message: str) -> PortraitCatalogueError:
        return PortraitCatalogueError(f"{self.file}: {self.kind} {self.name!r}: {message}")

    def check_name(self) -> str:
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            raise self.fail("the name must be lower-case words joined by '-'")
        return self.name

    def text(self, key: str, required: bool = True) -> str:
        value = self.entry.get(key, "")
        if not isinstance(value, str):
            raise self.fail(f"{key} must be text")
        if required and not value.strip():
            raise self.fail(f"{key} is empty")
        return value

    def slot(self, key: str, slot: str) -> str:
        value = self.text(key)
        if value.count(slot) != 1:
            raise self.fail(f"the {key} template needs exactly one {slot} slot")
        return value

    def known(self, *keys: str) -> None:
        unknown = set(self.entry) - set(keys)
        if unknown:
            raise self.fail(f"unknown field(s) {', '.join(sorted(unknown))}")

    def category(self, categories: dict[str, PortraitCategory]) -> str:
        category = self.entry.get("category")
        if category not in categories:
            raise self.fail(f"unknown category {category!r}")
        return category

    def aspect(self, default: str) -> str:
        aspect = self.entry.get("aspect", default)
        if aspect not in ASPECT_RATIOS:
            raise self.fail(f"aspect {aspect!r} must be one of {', '.join(ASPECT_RATIOS)}")
        return aspect

    def lora(self) -> StyleLora | None:
        lora = self.entry.get("lora")
        if lora is None:
            return None
        if not isinstance(lora, dict):
            raise self.fail("the LoRA must be an object with profile, model, weight_name and weight")
        missing = {"profile", "model", "weight_name", "weight"} - set(lora)
        if missing:
            raise self.fail(f"the LoRA lacks {', '.join(sorted(missing))}")
        unknown = set(lora) - {"profile", "model", "weight_name", "weight"}
        if unknown:
            raise self.fail(f"the LoRA has unknown field(s) {', '.join(sorted(unknown))}")
        if not all(isinstance(lora[k], str) and lora[k].strip() for k in ("profile", "model", "weight_name")):
            raise self.fail("the LoRA's profile, model and weight_name must be non-empty text")
        if not lora["weight_name"].endswith(".safetensors"):
            raise self.fail("a style's LoRA must be a .safetensors file")
        weight = lora["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 2:
            raise self.fail("the LoRA weight must be above 0 and at most 2")
        return StyleLora(lora["profile"], lora["model"], lora["weight_name"], float(weight))


def _aspect_value(aspect: str) -> float:
    w, h = (int(x) for x in aspect.split(":"))
    return w / h


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header (the first 24 bytes), or None if the file is not a PNG."""
    with path.open("rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _read(templates_dir: Path, file: str, keys: tuple[str, ...]) -> dict:
    path = templates_dir / file
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PortraitCatalogueError(f"{file}: the catalogue is missing ({path})") from None
    except json.JSONDecodeError as e:
        raise PortraitCatalogueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise PortraitCatalogueError(f"{file}: the catalogue must be an object with {', '.join(keys)}")
    for key in keys:
        if not isinstance(data.get(key), list):
            raise PortraitCatalogueError(f"{file}: {key!r} must be a list")
    unknown = set(data) - set(keys)
    if unknown:
        raise PortraitCatalogueError(f"{file}: unknown field(s) {', '.join(sorted(unknown))}")
    return data


def _add(file: str, kind: str, into: dict, item) -> None:
    if item.name in into:
        raise PortraitCatalogueError(f"{file}: {kind} {item.name!r} appears twice")
    into[item.name] = item


# ------------------------------------------------------------------------------------- the catalogues


def _stylization(entry: object) -> Stylization:
    e = _Entry(PRESETS_FILE, "stylization", entry)
    e.known("name", "label", "label_zh", "prompt", "negative")
    return Stylization(name=e.check_name(), label=e.text("label"), label_zh=e.text("label_zh"),
                       prompt=e.slot("prompt", "{prompt}"), negative=e.text("negative", required=False))


def _option(attribute: str, entry: object) -> EditOption:
    e = _Entry(PRESETS_FILE, f"attribute {attribute!r} option", entry)
    e.known("name", "label", "label_zh", "words")
    name = e.check_name()
    if name == "none":
        raise e.fail("leave the attribute unchosen to keep it unchanged instead of offering 'none'")
    return EditOption(name=name, label=e.text("label"), label_zh=e.text("label_zh"), words=e.text("words"))


def _attribute(entry: object) -> Attribute:
    e = _Entry(PRESETS_FILE, "attribute", entry)
    e.known("name", "label", "label_zh", "options")
    if e.name not in ATTRIBUTE_NAMES:
        raise e.fail(f"unknown attribute; the attributes are {', '.join(ATTRIBUTE_NAMES)}")
    options_list = e.entry.get("options")
    if not isinstance(options_list, list) or not options_list:
        raise e.fail("options must be a non-empty list")
    options: dict[str, EditOption] = {}
    for option_entry in options_list:
        _add(PRESETS_FILE, f"attribute {e.name!r} option", options, _option(e.name, option_entry))
    return Attribute(name=e.name, label=e.text("label"), label_zh=e.text("label_zh"), options=options)


def _category(file: str, entry: object) -> PortraitCategory:
    e = _Entry(file, "category", entry)
    e.known("name", "label", "label_zh")
    return PortraitCategory(name=e.check_name(), label=e.text("label"), label_zh=e.text("label_zh"))


def _avatar_style(entry: object, categories: dict[str, PortraitCategory]) -> AvatarStyle:
    e = _Entry(AVATAR_STYLES_FILE, "avatar style", entry)
    e.known("name", "label", "label_zh", "category", "prompt", "negative", "aspect", "lora")
    return AvatarStyle(name=e.check_name(), label=e.text("label"), label_zh=e.text("label_zh"),
                       category=e.category(categories), prompt=e.slot("prompt", "{subject}"),
                       negative=e.text("negative", required=False), aspect=e.aspect("1:1"), lora=e.lora())


def _photo_template(entry: object, categories: dict[str, PortraitCategory], compositions: Path) -> PhotoTemplate:
    e = _Entry(PHOTO_TEMPLATES_FILE, "photo template", entry)
    e.known("name", "label", "label_zh", "category", "prompt", "negative", "aspect", "composition",
            "composition_scale")
    name, aspect = e.check_name(), e.aspect("3:4")
    composition, scale = e.entry.get("composition"), e.entry.get("composition_scale")
    path = None
    if composition is None:
        if scale is not None:
            raise e.fail("composition_scale is set without a composition")
        scale = 0.0
    else:
        if not isinstance(composition, str) or Path(composition).name != composition or \
                not composition.lower().endswith(".png"):
            raise e.fail(f"composition {composition!r} must be the name of a .png file in {COMPOSITIONS_DIR}/")
        path = (compositions / composition).resolve()
        if not path.is_file():
            raise e.fail(f"composition {composition!r} is not in {compositions}")
        size = _png_size(path)
        if size is None:
            raise e.fail(f"composition {composition!r} is not a PNG image")
        if not size[1] or abs(size[0] / size[1] / _aspect_value(aspect) - 1) > COMPOSITION_ASPECT_TOLERANCE:
            raise e.fail(f"composition {composition!r} is {size[0]}×{size[1]}, not of the aspect {aspect}")
        low, high = COMPOSITION_SCALE_RANGE
        if scale is None:
            raise e.fail("composition_scale is needed with a composition")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not low <= scale <= high:
            raise e.fail(f"composition_scale {scale!r} must be a number from {low} to {high}")
    return PhotoTemplate(name=name, label=e.text("label"), label_zh=e.text("label_zh"),
                         category=e.category(categories), prompt=e.slot("prompt", "{subject}"),
                         negative=e.text("negative", required=False), aspect=aspect, composition=path,
                         composition_scale=float(scale))


def load_portrait_catalogue(templates_dir: str | Path | None = None) -> PortraitCatalogue:
    """The three portrait catalogues in ``templates_dir`` (``templates/`` by default), checked."""
    root = Path(templates_dir) if templates_dir is not None else DEFAULT_TEMPLATES_DIR

    presets = _read(root, PRESETS_FILE, ("stylizations", "attributes"))
    stylizations: dict[str, Stylization] = {}
    for entry in presets["stylizations"]:
        _add(PRESETS_FILE, "stylization", stylizations, _stylization(entry))
    if "none" not in stylizations:
        raise PortraitCatalogueError(f"{PRESETS_FILE}: the stylization 'none' (the user's prompt as written) "
                                     "is missing")
    attributes: dict[str, Attribute] = {}
    for entry in presets["attributes"]:
        _add(PRESETS_FILE, "attribute", attributes, _attribute(entry))
    if tuple(attributes) != ATTRIBUTE_NAMES:
        raise PortraitCatalogueError(f"{PRESETS_FILE}: the attributes must be exactly "
                                     f"{', '.join(ATTRIBUTE_NAMES)} in this order, not {', '.join(attributes)}")

    avatars = _read(root, AVATAR_STYLES_FILE, ("categories", "styles"))
    avatar_categories: dict[str, PortraitCategory] = {}
    for entry in avatars["categories"]:
        _add(AVATAR_STYLES_FILE, "category", avatar_categories, _category(AVATAR_STYLES_FILE, entry))
    avatar_styles: dict[str, AvatarStyle] = {}
    for entry in avatars["styles"]:
        _add(AVATAR_STYLES_FILE, "avatar style", avatar_styles, _avatar_style(entry, avatar_categories))

    photos = _read(root, PHOTO_TEMPLATES_FILE, ("categories", "templates"))
    template_categories: dict[str, PortraitCategory] = {}
    for entry in photos["categories"]:
        _add(PHOTO_TEMPLATES_FILE, "category", template_categories, _category(PHOTO_TEMPLATES_FILE, entry))
    photo_templates: dict[str, PhotoTemplate] = {}
    compositions = root / COMPOSITIONS_DIR
    for entry in photos["templates"]:
        _add(PHOTO_TEMPLATES_FILE, "photo template", photo_templates,
             _photo_template(entry, template_categories, compositions))

    return PortraitCatalogue(stylizations=stylizations, attributes=attributes,
                             avatar_categories=avatar_categories, avatar_styles=avatar_styles,
                             template_categories=template_categories, photo_templates=photo_templates)


# ------------------------------------------------------------------------------------------ edits


def apply_edits(prompt: str, edits: dict[str, str], attributes: dict[str, Attribute]) -> str:
    """The prompt with the words of each chosen option added, in the attributes' order; an attribute left
    empty (or None) stays as it is."""
    for name, choice in edits.items():
        if name not in attributes:
            raise ValueError(f"Unknown attribute {name!r}: choose one of {', '.join(attributes)}.")
        attribute = attributes[name]
        if choice and choice not in attribute.options:
            raise ValueError(f"Unknown {attribute.label} {choice!r}: choose one of "
                             f"{', '.join(attribute.options)}.")
    words = [attribute.options[edits[name]].words for name, attribute in attributes.items() if edits.get(name)]
    return ", ".join(part for part in (prompt.strip(), *words) if part)


# ---------------------------------------------------------------------------------------- class words

# Words that name the kind of person a portrait shows -> the English class they mean. An identity adapter
# needs one in the prompt (the face goes to the person that word names).
CLASS_WORDS: dict[str, str] = {
    "man": "man", "men": "man", "woman": "woman", "women": "woman",
    "boy": "boy", "boys": "boy", "girl": "girl", "girls": "girl",
    "person": "person", "persons": "person", "people": "person",
    "child": "child", "children": "child", "kid": "child", "kids": "child",
    "baby": "baby", "babies": "baby", "toddler": "child", "toddlers": "child",
    "lady": "woman", "ladies": "woman", "gentleman": "man", "gentlemen": "man",
    "guy": "man", "guys": "man", "teenager": "person", "teenagers": "person",
    "男人": "man", "男子": "man", "男士": "man", "男生": "man", "先生": "man", "帅哥": "man", "小伙": "man",
    "女人": "woman", "女子": "woman", "女士": "woman", "女生": "woman", "美女": "woman", "姑娘": "woman",
    "男孩": "boy", "少年": "boy", "女孩": "girl", "少女": "girl",
    "孩子": "child", "小孩": "child", "儿童": "child", "宝宝": "baby", "婴儿": "baby",
    "老人": "person", "人": "person",
}


def _class_word_pattern() -> re.Pattern:
    parts = []
    for word in sorted(CLASS_WORDS, key=len, reverse=True):
        # English as a whole word; Chinese has no spaces between words, so anywhere.
        parts.append(rf"(?<![a-z]){re.escape(word)}(?![a-z])" if word.isascii() else re.escape(word))
    return re.compile("|".join(parts), re.IGNORECASE)


_CLASS_WORD = _class_word_pattern()


def find_class_word(prompt: str) -> str | None:
    """The first class word in the prompt, as its key in CLASS_WORDS (lower-case; "Two Women" gives
    "women"), or None. At one place the longest word wins, so 女孩 rather than a shorter word inside it."""
    match = _CLASS_WORD.search(prompt)
    return match.group(0).lower() if match else None
