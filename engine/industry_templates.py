"""Industry templates (the "template square"): ready-made prompts with a few blanks to fill in and the
settings of one tab, read from ``templates/industry_templates.json``. A template prefills its tab, or
becomes that tab's raw request once its blanks are filled.

Users' own saved templates go through the same checks (``template_from_dict``), so nothing here is tied
to the shipped file. Torch-free, so the web process can list, search and fill templates without a model.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.game.request import load_asset_types
from engine.img2img_request import KEEPS, MAX_KEEP_WEIGHT
from engine.params import ASPECT_RATIOS, ASPECT_SIZE_MULTIPLE, MAX_STEPS, size_for_aspect
from engine.portraits import load_portrait_catalogue
from engine.product.request import CANVAS_FORMATS, MAX_VARIANTS
from engine.product.scenes import load_scenes
from engine.profiles import Profile
from engine.styles import load_catalogue

DEFAULT_TEMPLATES_FILE = Path(__file__).resolve().parents[1] / "templates" / "industry_templates.json"

# Tab -> the job kind its request is submitted as.
TEMPLATE_TABS: dict[str, str] = {
    "create": "generate",
    "img2img": "img2img",
    "product": "product",
    "game": "game_asset",
    "photomaker": "identity",
}
# Tab -> the request key the filled prompt goes to: a product's prompt describes the scene around it.
PROMPT_KEYS: dict[str, str] = {tab: "scene_prompt" if tab == "product" else "prompt" for tab in TEMPLATE_TABS}

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Lower case, words joined by '-'; any script, so a user's own template may carry Chinese tags.
TAG_PATTERN = re.compile(r"^[^\s,，{}]+$")
FIELD_NAME_PATTERN = re.compile(r"^[a-z_]+$")
SLOT_PATTERN = re.compile(r"\{([^{}]*)\}")
MAX_FIELDS = 4
# A template asks for a handful of pictures (or candidates per picture); a user raises it in the tab.
MAX_PER_TEMPLATE = 4
ENTRY_KEYS = ("name", "title", "title_zh", "description", "description_zh", "tab", "tags", "prompt",
              "negative_prompt", "fields", "settings")
FIELD_KEYS = ("name", "label", "label_zh", "example")


class TemplateError(ValueError):
    """A template that cannot be used, or blanks filled in wrongly; the message says what to change."""


@dataclass(frozen=True)
class _TabSettings:
    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def allowed(self) -> tuple[str, ...]:
        return self.required + self.optional


# The raw request keys a template may set on each tab (a tab's other keys stay the user's choice).
TAB_SETTINGS: dict[str, _TabSettings] = {
    "create": _TabSettings(("style", "aspect"), ("steps", "guidance", "count")),
    "img2img": _TabSettings(("style", "strength"), ("keeps", "steps", "guidance", "count")),
    "product": _TabSettings((), ("scenes", "canvas_format", "variants", "steps", "guidance")),
    "game": _TabSettings(("asset_type", "style"), ("transparent", "sprite_sheet", "count", "steps", "guidance")),
    "photomaker": _TabSettings((), ("stylization", "count", "best_of", "steps", "guidance")),
}
_WHOLE_RANGES = {"steps": (1, MAX_STEPS), "count": (1, MAX_PER_TEMPLATE), "variants": (1, MAX_VARIANTS),
                 "best_of": (1, MAX_PER_TEMPLATE)}
_DECIMAL_RANGES = {"guidance": (0.0, 30.0), "strength": (0.05, 1.0)}
_FLAGS = ("transparent", "sprite_sheet")


@dataclass(frozen=True)
class CatalogNames:
    """The names a template's settings may refer to, from the other catalogues."""

    styles: frozenset[str]
    scenes: frozenset[str]
    asset_types: frozenset[str]
    stylizations: frozenset[str]

    @classmethod
    def load(cls) -> CatalogNames:
        return cls(styles=frozenset(load_catalogue().styles), scenes=frozenset(load_scenes()),
                   asset_types=frozenset(load_asset_types()),
                   stylizations=frozenset(load_portrait_catalogue().stylizations))


@dataclass(frozen=True)
class TemplateField:
    """A blank in a template's prompt: its ``{name}`` slot, its label in both languages, an example value."""

    name: str
    label: str
    label_zh: str
    example: str


@dataclass(frozen=True)
class IndustryTemplate:
    name: str
    title: str
    title_zh: str
    description: str
    description_zh: str
    tab: str
    tags: tuple[str, ...]
    prompt: str  # with a {field} slot for each field
    negative_prompt: str
    fields: tuple[TemplateField, ...]
    settings: dict  # raw request keys of the tab; read-only

    @property
    def job_kind(self) -> str:
        return TEMPLATE_TABS[self.tab]

    def missing(self, values: Mapping[str, str]) -> list[TemplateField]:
        """The fields left empty or blank."""
        return [f for f in self.fields if not str(values.get(f.name) or "").strip()]

    def filled_prompt(self, values: Mapping[str, str]) -> str:
        """The prompt with every slot replaced by its (stripped) value."""
        missing = self.missing(values)
        if missing:
            raise TemplateError(f"Fill in: {', '.join(f.label for f in missing)}")
        filled = {f.name: str(values[f.name]).strip() for f in self.fields}
        for f in self.fields:
            # A brace in a value could open a slot of its own, or trip compel's syntax downstream.
            if "{" in filled[f.name] or "}" in filled[f.name]:
                raise TemplateError(f"{f.label} may not contain {{ or }}.")
        return SLOT_PATTERN.sub(lambda match: filled[match.group(1)], self.prompt)

    def request(self, values: Mapping[str, str], profile: Profile) -> dict:
        """The raw request of the tab's job kind, ready for that kind's resolver."""
        raw: dict = {PROMPT_KEYS[self.tab]: self.filled_prompt(values)}
        if self.tab != "product":
            raw["negative_prompt"] = self.negative_prompt
        for key, value in self.settings.items():
            if key == "aspect":
                raw["width"], raw["height"] = aspect_size(value, profile)
            else:
                raw[key] = copy.deepcopy(value)
        return raw

    def matches(self, search: str, tags: Iterable[str]) -> bool:
        """Whether the template has every one of ``tags`` and ``search`` appears in its words."""
        if not set(tags) <= set(self.tags):
            return False
        needle = search.strip().casefold()
        haystack = (self.title, self.title_zh, self.description, self.description_zh, self.prompt, *self.tags)
        return not needle or any(needle in text.casefold() for text in haystack)

    def to_dict(self) -> dict:
        """The template as an entry of the JSON file."""
        return {
            "name": self.name, "title": self.title, "title_zh": self.title_zh, "description": self.description,
            "description_zh": self.description_zh, "tab": self.tab, "tags": list(self.tags), "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "fields": [{"name": f.name, "label": f.label, "label_zh": f.label_zh, "example": f.example}
                       for f in self.fields],
            "settings": copy.deepcopy(self.settings),
        }


def aspect_size(aspect: str, profile: Profile) -> tuple[int, int]:
    """Width and height at ``aspect`` around the profile's native size, within its range. Sides are
    multiples of 32 (as ``size_for_aspect`` makes them, so the latent upscaler takes them) unless the
    range's own bounds cut them; a ratio whose short side would fall below the minimum is widened."""
    width, height = size_for_aspect(aspect, max(profile.default_size))
    if min(width, height) < profile.min_size:
        w, h = (int(x) for x in aspect.split(":"))
        short = profile.min_size
        width, height = (short * w / h, short) if w >= h else (short, short * h / w)
    step = ASPECT_SIZE_MULTIPLE
    low, high = -(-profile.min_size // 8) * 8, profile.max_size // 8 * 8
    return min(high, max(low, round(width / step) * step)), min(high, max(low, round(height / step) * step))


# ------------------------------------------------------------------------------------------ checks


class _Check:
    """Checks on one template entry; every failure names the template."""

    def __init__(self, data: object):
        if not isinstance(data, dict):
            raise TemplateError(f"A template must be an object, not {data!r}.")
        self.data = data
        self.name = data.get("name", "")

    def fail(self, message: str) -> TemplateError:
        return TemplateError(f"Template {self.name!r}: {message}.")

    def text(self, key: str, required: bool = True) -> str:
        value = self.data.get(key, "")
        if not isinstance(value, str):
            raise self.fail(f"{key} must be text")
        if required and not value.strip():
            raise self.fail(f"{key} is missing")
        return value.strip()


def _number(check: _Check, key: str, value: object, low: float, high: float, whole: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not float(value).is_integer()):
        raise check.fail(f"{key} must be a {'whole ' if whole else ''}number, not {value!r}")
    if not low <= value <= high:
        raise check.fail(f"{key} {value} is out of range: choose {low} to {high}")


def _choice(check: _Check, key: str, value: object, known: Collection[str]) -> None:
    if not isinstance(value, str) or value not in known:
        raise check.fail(f"unknown {key.replace('_', ' ')} {value!r}; choose one of {', '.join(sorted(known))}")


def _keeps(check: _Check, value: object) -> None:
    if not isinstance(value, list):
        raise check.fail('keeps must be a list of {"kind": ..., "weight": ...}')
    kinds = []
    for keep in value:
        if not isinstance(keep, dict) or set(keep) != {"kind", "weight"}:
            raise check.fail(f'each keep must be {{"kind": ..., "weight": ...}}, not {keep!r}')
        _choice(check, "keep kind", keep["kind"], KEEPS)
        _number(check, f"the {keep['kind']} keep's weight", keep["weight"], 0.0, MAX_KEEP_WEIGHT, whole=False)
        kinds.append(keep["kind"])
    duplicated = sorted({kind for kind in kinds if kinds.count(kind) > 1})
    if duplicated:
        raise check.fail(f"the keep kind {', '.join(duplicated)} appears twice")


def _scenes(check: _Check, value: object, known: frozenset[str]) -> None:
    if not isinstance(value, list):
        raise check.fail("scenes must be a list of scene names")
    for scene in value:
        _choice(check, "scene", scene, known)
    if len(set(value)) < len(value):
        raise check.fail("a scene is named twice")


def _settings(check: _Check, tab: str, names: CatalogNames) -> dict:
    settings = check.data.get("settings", {})
    if not isinstance(settings, dict):
        raise check.fail("settings must be an object")
    spec = TAB_SETTINGS[tab]
    unknown = sorted(set(settings) - set(spec.allowed))
    if unknown:
        raise check.fail(f"unknown settings key {', '.join(unknown)} for the {tab} tab; "
                         f"it takes {', '.join(spec.allowed)}")
    absent = [key for key in spec.required if key not in settings]
    if absent:
        raise check.fail(f"the {tab} tab needs the setting {', '.join(absent)}")
    choices = {"style": names.styles, "aspect": ASPECT_RATIOS, "canvas_format": CANVAS_FORMATS,
               "asset_type": names.asset_types, "stylization": names.stylizations}
    for key, value in settings.items():
        if key in choices:
            _choice(check, key, value, choices[key])
        elif key in _WHOLE_RANGES:
            _number(check, key, value, *_WHOLE_RANGES[key], whole=True)
        elif key in _DECIMAL_RANGES:
            _number(check, key, value, *_DECIMAL_RANGES[key], whole=False)
        elif key in _FLAGS:
            if not isinstance(value, bool):
                raise check.fail(f"{key} must be true or false")
        elif key == "keeps":
            _keeps(check, value)
        elif key == "scenes":
            _scenes(check, value, names.scenes)
    return copy.deepcopy(settings)


def _tags(check: _Check) -> tuple[str, ...]:
    tags = check.data.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise check.fail("tags must be a list of strings")
    bad = [tag for tag in tags if not TAG_PATTERN.match(tag) or tag != tag.lower()]
    if bad:
        raise check.fail(f"tag {bad[0]!r} must be lower case, words joined by '-'")
    if len(set(tags)) < len(tags):
        raise check.fail("a tag appears twice")
    return tuple(tags)


def _fields(check: _Check) -> tuple[TemplateField, ...]:
    entries = check.data.get("fields", [])
    if not isinstance(entries, list) or len(entries) > MAX_FIELDS:
        raise check.fail(f"fields must be a list of at most {MAX_FIELDS} fields")
    fields = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - set(FIELD_KEYS):
            raise check.fail(f"a field must be an object with {', '.join(FIELD_KEYS)}, not {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not FIELD_NAME_PATTERN.match(name):
            raise check.fail(f"field name {name!r} must be lower-case letters and '_'")
        values = {key: entry.get(key, "") for key in ("label", "label_zh", "example")}
        if not all(isinstance(value, str) for value in values.values()):
            raise check.fail(f"the field {name!r} needs its label, label_zh and example as text")
        if not values["label"].strip() or not values["label_zh"].strip():
            raise check.fail(f"the field {name!r} needs a label and a label_zh")
        if "{" in values["example"] or "}" in values["example"]:
            raise check.fail(f"the example of the field {name!r} may not contain {{ or }}")
        fields.append(TemplateField(name, values["label"].strip(), values["label_zh"].strip(),
                                    values["example"].strip()))
    names = [f.name for f in fields]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise check.fail(f"the field {', '.join(duplicated)} is declared twice")
    return tuple(fields)


def _check_slots(check: _Check, prompt: str, fields: tuple[TemplateField, ...]) -> None:
    slots = SLOT_PATTERN.findall(prompt)
    rest = SLOT_PATTERN.sub("", prompt)
    if "{" in rest or "}" in rest:
        raise check.fail("the prompt has a stray { or }")
    declared = {f.name for f in fields}
    undeclared = sorted(set(slots) - declared)
    if undeclared:
        raise check.fail(f"the prompt slot {', '.join('{' + s + '}' for s in undeclared)} is not declared in fields")
    unused = [f.name for f in fields if f.name not in slots]
    if unused:
        raise check.fail(f"the field {', '.join(unused)} is declared but not used in the prompt")


def template_from_dict(data: dict, catalog_names: CatalogNames) -> IndustryTemplate:
    """A template from its JSON entry, every part checked; a TemplateError names the template and the problem."""
    check = _Check(data)
    if not isinstance(check.name, str) or not NAME_PATTERN.match(check.name):
        raise check.fail("the name must be lower-case letters, digits and '-'")
    unknown = sorted(set(data) - set(ENTRY_KEYS))
    if unknown:
        raise check.fail(f"unknown key {', '.join(unknown)}")
    tab = data.get("tab")
    if tab not in TEMPLATE_TABS:
        raise check.fail(f"unknown tab {tab!r}; choose one of {', '.join(TEMPLATE_TABS)}")
    prompt = check.text("prompt")
    negative = check.text("negative_prompt", required=False)
    if tab == "product" and negative:
        raise check.fail("a product template has no negative prompt (a written scene has its own)")
    fields = _fields(check)
    _check_slots(check, prompt, fields)
    return IndustryTemplate(
        name=check.name, title=check.text("title"), title_zh=check.text("title_zh"),
        description=check.text("description", required=False),
        description_zh=check.text("description_zh", required=False), tab=tab, tags=_tags(check),
        prompt=prompt, negative_prompt=negative, fields=fields, settings=_settings(check, tab, catalog_names),
    )


def load_industry_templates(path: str | Path | None = None,
                            names: CatalogNames | None = None) -> dict[str, IndustryTemplate]:
    """Every template of the file (the shipped catalogue by default), by name, in the file's order."""
    path = Path(path or DEFAULT_TEMPLATES_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("templates"), list) or set(data) != {"templates"}:
        raise TemplateError(f'{path}: the file must be {{"templates": [...]}}')
    names = names or CatalogNames.load()
    templates: dict[str, IndustryTemplate] = {}
    for entry in data["templates"]:
        template = template_from_dict(entry, names)
        if template.name in templates:
            raise TemplateError(f"{path}: the template {template.name!r} appears twice")
        templates[template.name] = template
    return templates


def all_tags(templates: Iterable[IndustryTemplate] | Mapping[str, IndustryTemplate]) -> list[str]:
    """The distinct tags of the templates (a list of them, or the dict load_industry_templates gives), sorted."""
    items = templates.values() if isinstance(templates, Mapping) else templates
    return sorted({tag for template in items for tag in template.tags})
