"""A creation-chat turn as a request: checked in the web process before it becomes a job. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.params import ASPECT_RATIOS, MAX_COUNT, ParamError, is_name, number_field
from engine.profiles import Profile
from engine.styles import Style

DEFAULT_CANDIDATES = 4
MAX_MESSAGE_CHARS = 10_000  # the refiner reads the first 1,000; beyond this the request is refused
# Per-image tweaks: what each needs besides the image it starts from.
TWEAKS = {
    "style": "another style preset",
    "aspect": "another aspect ratio",
    "upscale": "higher resolution",
    "variations": "variations",
}


@dataclass
class ChatTurnRequest:
    text: str
    conversation_id: str | None = None
    parent_turn_id: str | None = None
    count: int = DEFAULT_CANDIDATES
    aspect: str = "1:1"
    tweak: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_chat_turn(raw: dict, profile: Profile, styles: dict[str, Style]) -> ChatTurnRequest:
    text = " ".join(str(raw.get("text") or "").split())
    tweak = raw.get("tweak") or None
    if tweak is None and not text:
        raise ParamError("The message is empty: tell me what to draw, e.g. 'a cat on a beach at dusk' or '海边的猫，黄昏'.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ParamError(f"The message has {len(text)} characters; the limit is {MAX_MESSAGE_CHARS}.")
    for key in ("conversation_id", "parent_turn_id"):
        if raw.get(key) and not is_name(raw[key]):
            raise ParamError(f"{key} must be the id of one of your conversations or turns, not {raw[key]!r}.")
    aspect = raw.get("aspect") or "1:1"
    if not is_name(aspect) or aspect not in ASPECT_RATIOS:
        raise ParamError(f"Unknown aspect ratio {aspect!r}. Choose one of {', '.join(ASPECT_RATIOS)}.")
    count = number_field(raw, "count", DEFAULT_CANDIDATES, "Candidate count", 1, MAX_COUNT)
    if tweak is not None:
        tweak = _resolve_tweak(tweak, styles)
        if not raw.get("parent_turn_id"):
            raise ParamError("A tweak needs the turn whose image it changes (parent_turn_id).")
        text = text or _describe(tweak, styles)
        aspect = tweak.get("aspect", aspect)
    return ChatTurnRequest(text=text, conversation_id=raw.get("conversation_id") or None,
                           parent_turn_id=raw.get("parent_turn_id") or None, count=count, aspect=aspect, tweak=tweak)


def _resolve_tweak(tweak: dict, styles: dict[str, Style]) -> dict:
    if not isinstance(tweak, dict):
        raise ParamError(f"A tweak is an object such as {{\"kind\": \"variations\", \"asset_id\": \"...\"}}, not {tweak!r}.")
    kind = tweak.get("kind")
    if not is_name(kind) or kind not in TWEAKS:
        raise ParamError(f"Unknown tweak {kind!r}. Known tweaks: {', '.join(TWEAKS)}.")
    if not tweak.get("asset_id"):
        raise ParamError(f"Pick the image to apply {TWEAKS[kind]} to.")
    resolved = {"kind": kind, "asset_id": str(tweak["asset_id"])}
    if kind == "style":
        if not is_name(tweak.get("style")) or tweak["style"] not in styles:
            raise ParamError(f"Unknown style {tweak.get('style')!r}. Known styles: {', '.join(sorted(styles))}.")
        resolved["style"] = tweak["style"]
    if kind == "aspect":
        if not is_name(tweak.get("aspect")) or tweak["aspect"] not in ASPECT_RATIOS:
            raise ParamError(f"Unknown aspect ratio {tweak.get('aspect')!r}. Choose one of {', '.join(ASPECT_RATIOS)}.")
        resolved["aspect"] = tweak["aspect"]
    return resolved


def _describe(tweak: dict, styles: dict[str, Style]) -> str:
    if tweak["kind"] == "style":
        style = styles[tweak["style"]]
        return f"Style → {style.label} · {style.label_zh}"
    if tweak["kind"] == "aspect":
        return f"Aspect ratio → {tweak['aspect']}"
    return {"upscale": "Higher resolution · 高清放大", "variations": "Variations · 变体"}[tweak["kind"]]
