"""Identity jobs as requests: a PhotoMaker portrait, an avatar per style, or an avatar rendered into photo
templates. Each is a list of items (one generation each) that keep one identity: the faces of 1-4 photos,
optionally mixed with a second person's, or a trained digital avatar.

Torch-free, so the web process checks a request before it becomes a job.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from engine.params import (
    MAX_PROMPT_CHARS,
    GenerationParams,
    ParamError,
    is_name,
    number_field,
    pin_seed,
    resolve_generation,
    size_for_aspect,
)
from engine.portraits import CLASS_WORDS, AvatarStyle, PortraitCatalogue, apply_edits, find_class_word
from engine.profiles import Profile
from engine.refiner.terms import has_cjk
from engine.styles import Style

MAX_PHOTOS = 4
MAX_BEST_OF = 4
MAX_ITEMS = 100  # more than either catalogue holds: "all" is one job
DEFAULT_SCALE = 0.8
DEFAULT_BEST_OF = 2
# The "none" style: identity prompts are styled by the portrait catalogues, not the art-style catalogue.
PLAIN = {"none": Style(name="none", label="No style", label_zh="无风格", category="general", prompt="{prompt}", negative="")}


@dataclass
class IdentityItem:
    """One generation of an identity job: what is drawn (its parameters), under which preset."""

    name: str  # the stylization, avatar style or photo template
    label: str
    generation: dict  # GenerationParams.to_dict()
    composition: str | None = None  # a photo template's composition image (file name in templates/compositions)
    composition_scale: float = 0.0

    @property
    def params(self) -> GenerationParams:
        return GenerationParams.from_dict(self.generation)


@dataclass
class IdentityRequest:
    kind: str  # identity | avatar_batch | photo_template
    profile: str
    subject: str  # the class-word phrase: "a woman", "一个女孩"
    items: list[IdentityItem]
    photos: list[str] = field(default_factory=list)  # face photos (material ids) of the person
    mix_photos: list[str] = field(default_factory=list)  # a second person's
    photo_hashes: list[str] = field(default_factory=list)  # their files, pinned when the job is made
    mix_hashes: list[str] = field(default_factory=list)
    mix: float = 0.0  # 0: the first person alone; 1: the second alone
    scale: float = DEFAULT_SCALE  # how strongly the face is kept
    best_of: int = 1  # candidates drawn per kept picture, the ones most like the person kept
    avatar_id: str | None = None  # photo templates: the digital avatar rendered
    edit_of: str | None = None  # an attribute edit: the picture it changes (the "before")
    edits: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "IdentityRequest":
        values = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        values["items"] = [IdentityItem(**item) for item in data["items"]]
        return cls(**values)


def _require_identity(profile: Profile) -> None:
    if "identity" not in profile.roles or "faces" not in profile.roles:
        raise ParamError(f"The {profile.name} profile has no identity adapter, so it cannot keep a face: "
                         "run the studio with the sdxl or sd15 profile.")


def _photos(raw: dict, key: str, label: str, required: bool) -> list[str]:
    photos = raw.get(key) or []
    if not isinstance(photos, list) or not all(isinstance(p, str) and p for p in photos):
        raise ParamError(f"{label} must be a list of face-photo ids (materials of kind 'face').")
    if required and not photos:
        raise ParamError(f"Upload 1 to {MAX_PHOTOS} photos of the person whose face the portrait keeps.")
    if len(photos) > MAX_PHOTOS:
        raise ParamError(f"{len(photos)} photos were given for {label.lower()}; use at most {MAX_PHOTOS} (the clearest ones).")
    return photos


def english_class(subject: str) -> str:
    """The class word of ``subject`` in English ("woman" for "一个女孩" is "girl"), or "person"."""
    word = find_class_word(subject)
    return CLASS_WORDS[word] if word else "person"


def _english_subject(subject: str) -> str:
    """The class word in English, for prompts to a model that reads English only."""
    return f"a {english_class(subject)}"


def avatar_person(subject: str, trigger: str) -> str:
    """How prompts name a trained avatar: its trigger and class word ("sks woman"), as it was trained."""
    return f"{trigger} {english_class(subject)}"


def _shared(raw: dict) -> dict:
    return {"scale": number_field(raw, "scale", DEFAULT_SCALE, "Face strength", 0.0, 1.5, whole=False),
            "best_of": number_field(raw, "best_of", DEFAULT_BEST_OF, "Candidates per picture", 1, MAX_BEST_OF)}


def _generation(raw: dict, profile: Profile, prompt: str, negative: str, rng, aspect: str | None = None,
                count: int | None = None) -> dict:
    fields = {k: raw[k] for k in ("steps", "guidance", "sampler", "seed", "width", "height") if raw.get(k) not in (None, "")}
    if aspect and "width" not in fields:
        width, height = size_for_aspect(aspect, max(profile.default_size))
        fields.update(width=min(profile.max_size, width), height=min(profile.max_size, height))
    fields.update(prompt=prompt[:MAX_PROMPT_CHARS], negative_prompt=negative[:MAX_PROMPT_CHARS], count=count or raw.get("count") or 1)
    return resolve_generation(fields, profile, PLAIN, rng).to_dict()


def _subject_for(profile: Profile, subject: str) -> str:
    return subject if profile.prompt_language == "zh" or not has_cjk(subject) else _english_subject(subject)


def resolve_identity(raw: dict, profile: Profile, catalogue: PortraitCatalogue, rng: random.Random | None = None) -> IdentityRequest:
    """A PhotoMaker request: a prompt with a class word, a stylization, attribute edits, 1-4 photos and
    optionally a second person to mix in."""
    _require_identity(profile)
    prompt = str(raw.get("prompt") or "").strip()
    word = find_class_word(prompt)
    if not word:
        raise ParamError("Say who is in the picture with a class word, e.g. 'a man in a garden' or '一个女孩在海边'.")
    photos = _photos(raw, "photos", "Photos", required=True)
    mix_photos = _photos(raw, "mix_photos", "Second person's photos", required=False)
    mix = number_field(raw, "mix", 0.0, "Mix", 0.0, 1.0, whole=False) if mix_photos else 0.0
    name = raw.get("stylization") or "none"
    if not is_name(name) or name not in catalogue.stylizations:
        raise ParamError(f"Unknown stylization {name!r}: choose one of {', '.join(catalogue.stylizations)}.")
    edit_of = raw.get("edit_of") or None
    if edit_of is not None and not is_name(edit_of):
        raise ParamError(f"edit_of must be the id of one of your PhotoMaker pictures, not {edit_of!r}.")
    edits = raw.get("edits") or {}
    if not isinstance(edits, dict) or not all(is_name(v) for v in edits.values() if v):
        raise ParamError('Edits must be an object of attribute name to option name, e.g. {"hair_colour": "silver"}.')
    edits = {k: v for k, v in edits.items() if v}
    try:
        edited = apply_edits(prompt, edits, catalogue.attributes)
    except ValueError as exc:
        raise ParamError(str(exc)) from exc
    if profile.prompt_language != "zh" and has_cjk(edited):
        edited = f"{_english_subject(prompt)}, {edited}"
    styled, negative = catalogue.stylizations[name].apply(edited, str(raw.get("negative_prompt") or ""))
    stylization = catalogue.stylizations[name]
    item = IdentityItem(name=name, label=stylization.label, generation=_generation(raw, profile, styled, negative, rng))
    # What the user wrote; the full prompts say what was drawn (an edit starts again from the user's own).
    item.generation.update(prompt=prompt, negative_prompt=str(raw.get("negative_prompt") or "").strip())
    return IdentityRequest(kind="identity", profile=profile.name, subject=prompt, items=[item], photos=photos,
                           mix_photos=mix_photos, mix=mix, edits=edits, edit_of=edit_of, **_shared(raw))


def _chosen(raw: dict, key: str, known: dict, what: str) -> list[str]:
    chosen = raw.get(key) or []
    if chosen == "all":
        chosen = list(known)
    if not isinstance(chosen, list) or not chosen:
        raise ParamError(f"Pick at least one {what} (or all of them).")
    unknown = [c for c in chosen if not is_name(c) or c not in known]
    if unknown:
        raise ParamError(f"Unknown {what} {', '.join(map(repr, unknown))}.")
    if len(chosen) > MAX_ITEMS:
        raise ParamError(f"{len(chosen)} {what}s were picked; at most {MAX_ITEMS} run in one job.")
    return list(dict.fromkeys(chosen))


def _subject(raw: dict) -> str:
    subject = " ".join(str(raw.get("subject") or "").split())
    if not find_class_word(subject):
        raise ParamError("Say who the avatar shows with a class word, e.g. 'a woman', 'a boy' or '一个女孩'.")
    if len(subject) > 80:
        raise ParamError("Keep the subject short (a class word and a few details, at most 80 characters).")
    return subject


def avatar_style_params(style: AvatarStyle, profile: Profile, subject: str, raw: dict, rng: random.Random | None = None) -> GenerationParams:
    """One avatar in ``style``: its prompt around the subject, its aspect, its LoRA on this profile."""
    generation = _generation(raw, profile, style.render(_subject_for(profile, subject)), style.negative, rng,
                             aspect=style.aspect, count=1)
    lora = style.lora_for(profile.name)
    if lora:
        generation["loras"] = [{"name": f"{style.label} style", "model": lora.model, "weight_name": lora.weight_name,
                                "weight": lora.weight}]
    return GenerationParams.from_dict(generation)


def resolve_avatar_batch(raw: dict, profile: Profile, catalogue: PortraitCatalogue, rng: random.Random | None = None) -> IdentityRequest:
    """One avatar per chosen style from 1-4 photos, all with one seed."""
    _require_identity(profile)
    subject = _subject(raw)
    photos = _photos(raw, "photos", "Photos", required=True)
    raw = dict(raw, seed=pin_seed(raw, rng))
    items = []
    for name in _chosen(raw, "styles", catalogue.avatar_styles, "avatar style"):
        style = catalogue.avatar_styles[name]
        items.append(IdentityItem(name=name, label=style.label, generation=avatar_style_params(style, profile, subject, raw, rng).to_dict()))
    return IdentityRequest(kind="avatar_batch", profile=profile.name, subject=subject, items=items, photos=photos, **_shared(raw))


def resolve_photo_templates(raw: dict, profile: Profile, catalogue: PortraitCatalogue, rng: random.Random | None = None) -> IdentityRequest:
    """A digital avatar (its LoRA and identity, pinned when the job is made) rendered into photo templates."""
    _require_identity(profile)
    avatar_id = str(raw.get("avatar_id") or "").strip()
    if not avatar_id:
        raise ParamError("Choose the digital avatar to render (avatar_id).")
    subject = "a person"  # the avatar's own subject replaces it when the job is made (bind_avatar)
    raw = dict(raw, seed=pin_seed(raw, rng))
    items = []
    for name in _chosen(raw, "templates", catalogue.photo_templates, "photo template"):
        template = catalogue.photo_templates[name]
        generation = _generation(raw, profile, template.render(_subject_for(profile, subject)), template.negative, rng,
                                 aspect=template.aspect, count=1)
        items.append(IdentityItem(name=name, label=template.label, generation=generation,
                                  composition=template.composition.name if template.composition else None,
                                  composition_scale=template.composition_scale))
    return IdentityRequest(kind="photo_template", profile=profile.name, subject=subject, items=items, avatar_id=avatar_id,
                           **_shared(raw))


def bind_avatar(params: dict, catalogue: PortraitCatalogue, subject: str, trigger: str, lora: dict) -> dict:
    """A photo-template request with its avatar filled in: each template's prompt names the avatar as it
    was trained, and the avatar's identity LoRA (pinned by file) applies to every picture."""
    request = IdentityRequest.from_dict(params)
    request.subject = subject
    person = avatar_person(subject, trigger)
    for item in request.items:
        prompt = catalogue.photo_templates[item.name].render(person)
        item.generation.update(prompt=prompt, full_prompt=prompt, loras=[lora, *item.generation.get("loras", [])])
    return request.to_dict()
