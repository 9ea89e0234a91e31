"""Image-to-image requests: restyle or translate a source picture, keeping its pose, structure or depth
through the profile's ControlNets, or only its composition (plain image-to-image).

Torch-free: the web side checks requests, and tells which keeps this machine can run, with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from engine.params import GenerationParams, ParamError, number_field, resolve_generation
from engine.profiles import Profile
from engine.styles import Style

DEFAULT_STRENGTH = 0.6
MAX_KEEP_WEIGHT = 2.0
UNNAMED_SUBJECT = "the same subject"


@dataclass(frozen=True)
class Keep:
    """What a ControlNet keeps of the source, and the preprocessor that draws its map."""

    name: str
    label: str
    label_zh: str
    controlnet_role: str
    preprocessor_role: str | None  # None: the preprocessor needs no model (edges)
    default_weight: float

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.controlnet_role,) + ((self.preprocessor_role,) if self.preprocessor_role else ())


KEEPS = {
    "pose": Keep("pose", "Pose (OpenPose keypoints)", "姿势（骨架关键点）", "controlnet_pose", "pose", 1.0),
    "edges": Keep("edges", "Structure (edges)", "结构（边缘线稿）", "controlnet", None, 0.8),
    "depth": Keep("depth", "Depth", "景深（深度图）", "controlnet_depth", "depth", 0.8),
}


def keep_problem(keep: Keep, profile: Profile, present: Callable[[str], bool]) -> str | None:
    """Why ``keep`` cannot run on ``profile`` (a role it lacks, or a model ``present`` does not find), or None."""
    for role in keep.roles:
        spec = profile.roles.get(role)
        what = "preprocessor" if role == keep.preprocessor_role else "ControlNet"
        if spec is None:
            return f"{keep.label}: the {profile.name} profile names no {what} for it (role '{role}')."
        if not present(spec.model):
            return f"{keep.label}: its {what} model {spec.model} is not on this machine."
    return None


def resolve_controls(raw_controls, profile: Profile) -> list[dict]:
    """The keeps a request names, as ``[{"kind", "weight"}]`` in request order; each kind once."""
    if raw_controls in (None, ""):
        return []
    if not isinstance(raw_controls, list):
        raise ParamError('keeps must be a list of {"kind": "pose" | "edges" | "depth", "weight": 0-2}.')
    controls = []
    for item in raw_controls:
        item = {"kind": item} if isinstance(item, str) else item
        kind = item.get("kind") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in KEEPS:
            raise ParamError(f"Unknown keep {kind!r}: choose from {', '.join(KEEPS)} (or none for composition only).")
        keep = KEEPS[kind]
        missing = [role for role in keep.roles if role not in profile.roles]
        if missing:
            raise ParamError(f"{keep.label} cannot be kept on the {profile.name} profile: it names no "
                             f"{' or '.join(missing)} model.")
        weight = number_field(item, "weight", keep.default_weight, f"The weight of {keep.label}", 0.0, MAX_KEEP_WEIGHT, whole=False)
        controls.append({"kind": kind, "weight": weight})
    if len({c["kind"] for c in controls}) < len(controls):
        raise ParamError("The same keep is named twice; give it one weight.")
    return controls


def resolve_img2img(raw: dict, profile: Profile, styles: dict[str, Style]) -> GenerationParams:
    """Check an image-to-image request: one source (an asset or a material), a prompt and/or a style, the
    strength, what to keep, and Create's settings (the size defaults to the profile's; the worker crops
    the source to the size's shape)."""
    asset_id, material_id = raw.get("source_asset_id") or None, raw.get("source_material_id") or None
    if bool(asset_id) == bool(material_id):
        raise ParamError("Choose one source picture: source_asset_id (one of your results) or source_material_id "
                         "(an upload in your material library).")
    style = raw.get("style") or "none"
    prompt = str(raw.get("prompt") or "").strip()
    if not prompt and style == "none":
        raise ParamError("Describe the result in the prompt, pick a style, or both.")
    strength = number_field(raw, "strength", DEFAULT_STRENGTH, "Strength", 0.05, 1.0, whole=False)
    # A style alone restyles the source: the style's template gets a neutral subject, the source gives the content.
    params = resolve_generation(dict(raw, prompt=prompt or UNNAMED_SUBJECT, strength=strength, init_asset_id=None), profile, styles)
    params.prompt = prompt
    params.init_asset_id = str(asset_id) if asset_id else None
    params.init_material_id = str(material_id) if material_id else None
    params.controls = resolve_controls(raw.get("keeps"), profile)
    return params
