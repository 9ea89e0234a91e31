"""A game-asset request: an asset type's composition words and defaults around the user's subject, then a
generation request, plus what is done afterwards (transparent sprites, a sprite sheet). Torch-free.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.params import GenerationParams, ParamError, is_name, number_field, resolve_generation, style_size
from engine.profiles import Profile
from engine.styles import Style

DEFAULT_ASSET_TYPES_FILE = Path(__file__).resolve().parents[2] / "templates" / "asset_types.json"
MAX_SHEET_COLUMNS = 8


@dataclass(frozen=True)
class AssetType:
    name: str
    label: str
    label_zh: str
    prompt: str  # composition words around the subject, with a {prompt} slot
    negative: str
    aspect: str
    transparent: bool  # whether sprites on transparency are offered (and on by default)
    sheet_align: str  # how sprites stand in a sheet's cells: "bottom" (characters) or "center"
    tileable: bool = False


def load_asset_types(path: str | Path | None = None) -> dict[str, AssetType]:
    types = {}
    for entry in json.loads(Path(path or DEFAULT_ASSET_TYPES_FILE).read_text(encoding="utf-8")):
        asset_type = AssetType(**entry)
        if asset_type.prompt.count("{prompt}") != 1:
            raise ValueError(f"asset type {asset_type.name!r} needs exactly one {{prompt}} slot")
        if asset_type.sheet_align not in ("bottom", "center"):
            raise ValueError(f"asset type {asset_type.name!r}: sheet_align must be bottom or center")
        types[asset_type.name] = asset_type
    return types


@dataclass
class GameAssetParams(GenerationParams):
    subject: str = ""  # the user's words, before the asset type's composition words
    asset_type: str = "character"
    transparent: bool = False
    sprite_sheet: bool = False
    sheet_columns: int = 0  # 0: as square as the count allows
    sheet_align: str = "center"


def resolve_game_asset(raw: dict, profile: Profile, styles: dict[str, Style], asset_types: dict[str, AssetType],
                       rng: random.Random | None = None) -> GameAssetParams:
    type_name = raw.get("asset_type") or "character"
    if not is_name(type_name) or type_name not in asset_types:
        raise ParamError(f"Unknown asset type {type_name!r}. Known types: {', '.join(asset_types)}.")
    asset_type = asset_types[type_name]
    subject = str(raw.get("prompt") or "").strip()
    if not subject:
        raise ParamError("Describe the asset: what should the character, prop, icon, scene or texture be?")
    style_name = raw.get("style") or "none"
    style = styles.get(style_name) if is_name(style_name) else None  # an unknown one is refused by resolve_generation
    composed = dict(raw, prompt=asset_type.prompt.replace("{prompt}", subject),
                    negative_prompt=", ".join(n for n in (str(raw.get("negative_prompt") or "").strip(), asset_type.negative) if n),
                    tileable=asset_type.tileable)
    if style is not None and raw.get("width") in (None, "") and raw.get("height") in (None, ""):
        # The asset type decides the shape (a character stands, an icon is square); the style the scale.
        composed["width"], composed["height"] = style_size(style, profile, asset_type.aspect)
    generation = resolve_generation(composed, profile, styles, rng)
    transparent = bool(raw.get("transparent", asset_type.transparent))
    if transparent and not asset_type.transparent:
        raise ParamError(f"A {asset_type.label.lower()} fills its frame; transparent output is for characters, props and icons.")
    sprite_sheet = bool(raw.get("sprite_sheet", False))
    if sprite_sheet and not transparent:
        raise ParamError("A sprite sheet packs transparent sprites: turn on transparent output.")
    if sprite_sheet and generation.count < 2:
        raise ParamError("A sprite sheet needs at least 2 variations: raise the image count.")
    columns = number_field(raw, "sheet_columns", 0, "Sheet columns", 0, MAX_SHEET_COLUMNS)
    return GameAssetParams(**asdict(generation), subject=subject, asset_type=type_name, transparent=transparent,
                           sprite_sheet=sprite_sheet, sheet_columns=columns, sheet_align=asset_type.sheet_align)

