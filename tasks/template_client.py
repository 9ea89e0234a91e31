"""The template square for the web side: the studio's industry templates and the templates users save from
their own results, private or shared with every user. Torch-free.

A card's key says where its template lives: ``studio:<name>`` (templates/industry_templates.json, read-only)
or ``user:<id>`` (the user_templates table).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.game.request import AssetType, load_asset_types
from engine.img2img_request import UNNAMED_SUBJECT
from engine.industry_templates import (
    MAX_PER_TEMPLATE,
    TEMPLATE_TABS,
    CatalogNames,
    IndustryTemplate,
    TemplateError,
    TemplateField,
    all_tags,
    load_industry_templates,
    template_from_dict,
)
from engine.params import ASPECT_RATIOS
from engine.product.request import CANVAS_FORMATS, MAX_VARIANTS
from engine.product.scenes import CUSTOM_SCENE
from engine.profiles import Profile
from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.models import JobState
from storage.templates import PREVIEW_EXTENSION, TemplateLibrary, UserTemplateView

STUDIO, MINE, SHARED = "studio", "mine", "shared"
SOURCES = ("all", STUDIO, MINE, SHARED)
# Job kind -> the tab whose template its results become.
KIND_TABS = {kind: tab for tab, kind in TEMPLATE_TABS.items()}
TAB_LABELS = {"create": "Create", "img2img": "Image-to-image", "product": "Product", "game": "Game assets",
              "photomaker": "PhotoMaker"}
# The tag a saved template gets when the user gives none: the word the studio's catalogue uses for the tab.
DEFAULT_TAGS = {"create": "create", "img2img": "restyle", "product": "product", "game": "game",
                "photomaker": "portrait"}
# How a result's job ended, when it did not succeed.
JOB_STATE_WORDS = {JobState.FAILED: "failed", JobState.CANCELLED: "was cancelled", JobState.RUNNING: "is still running",
                   JobState.QUEUED: "has not started"}
MAX_TITLE_CHARS = 120
MAX_TAGS = 10
SLUG_CHARS = 60


class StudioTemplateReadOnly(TemplateError):
    """A change asked of one of the studio's own templates; they are data files, not users' rows."""


class TemplateNotFound(TemplateError, LookupError):
    """No such template among the user's own: another user's, even a shared one, is not theirs to change."""


@dataclass(frozen=True)
class TemplateCard:
    """A template as the square shows it: where it comes from, whose it is, what picture it shows."""

    key: str  # "studio:<name>" or "user:<id>"
    template: IndustryTemplate
    source: str  # studio | mine | shared
    owner: str | None = None  # the user who saved it; None for the studio's
    preview_hash: str | None = None  # users' templates: the PNG of the result it was saved from
    shared: bool = False  # users' templates: whether every user sees it

    @property
    def editable(self) -> bool:
        """Whether the asking user may share, unshare or delete it."""
        return self.source == MINE


def slug(title: str) -> str:
    """An ASCII name from a title ("My poster!" -> "my-poster"); "template" when nothing ASCII is left."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")[:SLUG_CHARS].rstrip("-")
    return name or "template"


def nearest_aspect(width: int, height: int) -> str:
    """The aspect ratio of ASPECT_RATIOS closest to width:height (compared as log ratios, so 2:1 and 1:2
    are as far from 1:1)."""
    def distance(aspect: str) -> float:
        w, h = (int(x) for x in aspect.split(":"))
        return abs(math.log(width / height) - math.log(w / h))
    return min(ASPECT_RATIOS, key=distance)


def stored_template(entry: dict) -> IndustryTemplate:
    """A user's template from its stored entry, checked when it was saved; read back as it is, so a style
    since removed from the catalogue shows up when the template is used rather than hiding it."""
    return IndustryTemplate(
        name=entry["name"], title=entry["title"], title_zh=entry["title_zh"], description=entry["description"],
        description_zh=entry["description_zh"], tab=entry["tab"], tags=tuple(entry["tags"]), prompt=entry["prompt"],
        negative_prompt=entry["negative_prompt"], fields=tuple(TemplateField(**f) for f in entry["fields"]),
        settings=dict(entry["settings"]),
    )


def _clean_text(value: str, what: str, required: bool) -> str:
    text = " ".join(str(value or "").split())
    if required and not text:
        raise TemplateError(f"Give the template a {what}.")
    if len(text) > MAX_TITLE_CHARS:
        raise TemplateError(f"The {what} has {len(text)} characters; the limit is {MAX_TITLE_CHARS}.")
    return text


def _clean_tags(tags: Iterable[str] | str, tab: str) -> list[str]:
    """Tags from a list or a comma-separated string, lower case, words joined by '-'; the tab's word when none."""
    if isinstance(tags, str):
        tags = tags.replace("，", ",").split(",")
    cleaned = list(dict.fromkeys(re.sub(r"[\s_]+", "-", str(t).strip().lower()) for t in tags if str(t).strip()))
    if len(cleaned) > MAX_TAGS:
        raise TemplateError(f"{len(cleaned)} tags; a template takes at most {MAX_TAGS}.")
    return cleaned or [DEFAULT_TAGS[tab]]


def _count(value: int, most: int = MAX_PER_TEMPLATE) -> int:
    """A job's picture count as a template may ask for it (a handful; the user raises it in the tab)."""
    return min(max(int(value), 1), most)


def _create(params: dict, job_params: dict, width: int, height: int) -> tuple[str, str, dict]:
    settings = {"style": params.get("style") or "none", "aspect": nearest_aspect(width, height),
                "steps": params["steps"], "guidance": params["guidance"], "count": _count(job_params.get("count", 1))}
    return params["prompt"], params.get("negative_prompt", ""), settings


def _img2img(params: dict, job_params: dict) -> tuple[str, str, dict]:
    settings = {"style": params.get("style") or "none", "strength": params["strength"],
                "keeps": [{"kind": c["kind"], "weight": c["weight"]} for c in params.get("controls", [])],
                "steps": params["steps"], "guidance": params["guidance"], "count": _count(job_params.get("count", 1))}
    # A restyle without words drew the style around a neutral subject: the template says so in its prompt.
    return params["prompt"] or UNNAMED_SUBJECT, params.get("negative_prompt", ""), settings


def _product(params: dict, job_params: dict) -> tuple[str, str, dict]:
    scene = params["scene"]
    # A preset's picture becomes a written scene with the preset's words (and its lighting): as a preset
    # beside a written scene it would make every picture twice.
    if scene["name"] == CUSTOM_SCENE:
        written = scene["prompt"]
    else:
        written = ", ".join(part for part in (scene["prompt"], scene.get("lighting", "")) if part)
    settings = {"variants": _count(job_params.get("variants", 1), MAX_VARIANTS), "steps": params["steps"],
                "guidance": params["guidance"]}
    if params.get("canvas_format") in CANVAS_FORMATS:  # a custom canvas has no name a template can keep
        settings["canvas_format"] = params["canvas_format"]
    return written, "", settings


def _game(params: dict, job_params: dict, asset_types: dict[str, AssetType]) -> tuple[str, str, dict]:
    negative = params.get("negative_prompt", "")
    asset_type = asset_types.get(params["asset_type"])
    # The asset type's negative words were appended to the user's; the tab appends them again.
    if asset_type and asset_type.negative and negative.endswith(asset_type.negative):
        negative = negative[:-len(asset_type.negative)].rstrip(", ")
    settings = {"asset_type": params["asset_type"], "style": params.get("style") or "none",
                "transparent": bool(params.get("transparent")), "sprite_sheet": bool(params.get("sprite_sheet")),
                "count": _count(job_params.get("count", 1)), "steps": params["steps"], "guidance": params["guidance"]}
    return params["subject"], negative, settings


def _photomaker(params: dict, job_params: dict) -> tuple[str, str, dict]:
    count = job_params["items"][0]["generation"].get("count", 1)
    settings = {"stylization": params["preset"], "count": _count(count), "best_of": _count(params.get("best_of", 1)),
                "steps": params["steps"], "guidance": params["guidance"]}
    return params["prompt"], params.get("negative_prompt", ""), settings


def _parse_key(key: str) -> tuple[str, str] | None:
    source, _, ident = key.partition(":")
    return (source, ident) if source in (STUDIO, "user") and ident else None


class TemplateClient:
    """Lists, searches and fetches the square's templates, and saves, shares and deletes users' own."""

    def __init__(self, db: Database, files: FileStore, profile: Profile, names: CatalogNames | None = None,
                 catalogue_path: str | Path | None = None):
        self.db, self.files, self.profile = db, files, profile
        self.library = TemplateLibrary(db, files)
        self.names = names or CatalogNames.load()
        self.catalogue = load_industry_templates(catalogue_path, self.names)
        self.asset_types = load_asset_types()

    def _studio_card(self, template: IndustryTemplate) -> TemplateCard:
        return TemplateCard(key=f"{STUDIO}:{template.name}", template=template, source=STUDIO)

    def _user_card(self, view: UserTemplateView) -> TemplateCard:
        return TemplateCard(key=f"user:{view.id}", template=stored_template(view.entry),
                            source=MINE if view.mine else SHARED, owner=view.owner, preview_hash=view.preview_hash,
                            shared=view.shared)

    def list(self, owner_id: str, search: str = "", tags: Iterable[str] = (),
             source: str = "all") -> list[TemplateCard]:
        """The studio's templates in catalogue order, then the user's own, then those others shared (newest
        first), with every one of ``tags`` and ``search`` in their words."""
        if source not in SOURCES:
            raise TemplateError(f"Unknown template source {source!r}; choose one of {', '.join(SOURCES)}.")
        cards = [self._studio_card(t) for t in self.catalogue.values()] if source in ("all", STUDIO) else []
        if source != STUDIO:
            cards += [card for card in map(self._user_card, self.library.visible(owner_id))
                      if source in ("all", card.source)]
        tags = tuple(tags)
        return [card for card in cards if card.template.matches(search, tags)]

    def get(self, owner_id: str, key: str) -> TemplateCard | None:
        """The card of ``key``; None when there is none, or it is another user's private template."""
        parsed = _parse_key(key)
        if parsed is None:
            return None
        source, ident = parsed
        if source == STUDIO:
            template = self.catalogue.get(ident)
            return self._studio_card(template) if template else None
        view = self.library.get(owner_id, ident)
        return self._user_card(view) if view else None

    def tags(self, owner_id: str) -> list[str]:
        return all_tags(card.template for card in self.list(owner_id))

    def request(self, card: TemplateCard, values: Mapping[str, str]) -> tuple[str, dict]:
        """The job kind and raw request of the card's template with its blanks filled, on this studio's profile."""
        return card.template.job_kind, card.template.request(values, self.profile)

    def save_from_asset(self, owner_id: str, asset_id: str, title: str, title_zh: str = "", shared: bool = False,
                        tags: Iterable[str] | str = ()) -> TemplateCard:
        """A template from one of the user's results: its tab from the job that made it, its prompt and
        settings from the result's parameters, its picture as the preview."""
        title = _clean_text(title, "title", required=True)
        title_zh = _clean_text(title_zh, "Chinese title", required=False) or title
        with self.db.session() as session:
            asset = repo.get_asset(session, asset_id, owner_id)
            if asset is None or asset.stage != "final" or asset.mime != "image/png":
                raise TemplateError(f"No result {asset_id} among yours.")
            job = asset.job
            tab = KIND_TABS.get(job.kind) if job is not None else None
            if tab is None:
                made_by = f"a {job.kind.replace('_', ' ')} job" if job is not None else "no job of this studio"
                raise TemplateError(f"Result {asset_id} was made by {made_by}; only results of "
                                    f"{', '.join(TAB_LABELS.values())} can be saved as templates.")
            if job.state != JobState.SUCCEEDED:
                ended = JOB_STATE_WORDS.get(job.state, job.state)
                raise TemplateError(f"Result {asset_id} comes from a job that {ended}; only results of jobs that "
                                    "succeeded can be saved as templates.")
            params, job_params = dict(asset.params), dict(job.params)
            width, height, preview_hash = asset.width, asset.height, asset.file_hash
        if not self.files.exists(preview_hash, PREVIEW_EXTENSION):
            raise TemplateError(f"The picture of result {asset_id} is missing from the file store.")
        try:
            prompt, negative, settings = self._derive(tab, params, job_params, (width, height))
        except (KeyError, IndexError, TypeError) as exc:  # a result stored before the studio kept these settings
            raise TemplateError(f"Result {asset_id} does not record the settings a template needs ({exc}).") from exc
        entry = {"name": slug(title), "title": title, "title_zh": title_zh, "description": "",
                 "description_zh": "", "tab": tab, "tags": _clean_tags(tags, tab), "prompt": prompt,
                 "negative_prompt": negative, "fields": [], "settings": settings}
        template = template_from_dict(entry, self.names)
        view = self.library.save(owner_id, template.to_dict(), preview_hash, shared=shared, source_asset_id=asset_id)
        return self._user_card(view)

    def _derive(self, tab: str, params: dict, job_params: dict, size: tuple[int, int]) -> tuple[str, str, dict]:
        """The prompt, negative prompt and settings of a ``tab`` template, from a result's parameters and its job's."""
        if tab == "create":
            return _create(params, job_params, *size)
        if tab == "img2img":
            return _img2img(params, job_params)
        if tab == "product":
            return _product(params, job_params)
        if tab == "game":
            return _game(params, job_params, self.asset_types)
        return _photomaker(params, job_params)

    def _user_id(self, key: str) -> str:
        """The id of the user template ``key`` names; a studio template cannot be changed."""
        parsed = _parse_key(key)
        if parsed is None or (parsed[0] == STUDIO and parsed[1] not in self.catalogue):
            raise TemplateNotFound(f"No template {key}.")
        if parsed[0] == STUDIO:
            raise StudioTemplateReadOnly(f"{key} is one of the studio's own templates, which cannot be changed or "
                                         "deleted; save your own from one of your results.")
        return parsed[1]

    def set_shared(self, owner_id: str, key: str, shared: bool) -> TemplateCard:
        """Share one of the user's templates with every user, or make it private again."""
        template_id = self._user_id(key)
        try:
            view = self.library.set_shared(owner_id, template_id, shared)
        except LookupError:
            raise TemplateNotFound(f"No template {key} among yours.") from None
        return self._user_card(view)

    def delete(self, owner_id: str, key: str) -> None:
        """Delete one of the user's templates, and its preview file when nothing else uses it."""
        template_id = self._user_id(key)
        try:
            self.library.delete(owner_id, template_id)
        except LookupError:
            raise TemplateNotFound(f"No template {key} among yours.") from None
