"""REST routes under /api/v1. Services come in through FastAPI dependencies."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from storage import repo
from storage.avatars import AvatarError, AvatarView
from storage.images import ImageUploadError, clean_file_name, read_mask_upload
from storage.loras import LoraError, LoraView
from storage.materials import MaterialError, MaterialView
from storage.models import Asset
from storage.quota import LimitExceeded
from storage.users import MIN_PASSWORD, UnknownUser, UserError, UserView
from tasks.client import ConversationView, InvalidRequest, JobView, QueueUnavailable
from tasks.template_client import StudioTemplateReadOnly, TemplateCard, TemplateError, TemplateNotFound
from ui.auth import current_user
from ui.request_guard import refuse_unstorable_text
from ui.services import Services


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


# The database keeps naive UTC times; answered with their zone ("...Z"), as the schema's date-time promises.
UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Problem(BaseModel):
    """Why a request was refused: a sentence for the user, or (a malformed request) FastAPI's field errors."""

    detail: str | list[dict[str, Any]]


# Every refusal (401, 403, 404, 409, 410, 413, 422, 429) answers {"detail": ...}: documented once for all routes.
REFUSALS: dict[int | str, dict[str, Any]] = {"4XX": {"model": Problem, "description": "Refused, with the reason in detail"}}

# Every route but the health check needs a signed-in user (an API token, or the browser's session).
# Then text no database can hold (NUL, lone surrogates) and oversized JSON are refused before any route runs.
router = APIRouter(prefix="/api/v1", tags=["studio"], responses=REFUSALS,
                   dependencies=[Depends(current_user), Depends(refuse_unstorable_text)])
public_router = APIRouter(prefix="/api/v1", tags=["studio"])


def get_services(request: Request) -> Services:
    return request.app.state.services


def current_owner(user: Annotated[UserView, Depends(current_user)]) -> str:
    return user.id


def admin_user(user: Annotated[UserView, Depends(current_user)]) -> UserView:
    if not user.is_admin:
        raise HTTPException(403, "Only an admin can manage users.")
    return user


ServicesDep = Annotated[Services, Depends(get_services)]
OwnerDep = Annotated[str, Depends(current_owner)]


def limit_exceeded(_request: Request, exc: LimitExceeded) -> JSONResponse:
    """Any route: a request over one of the user's limits gets its message and status (413, 422, 429, 507)."""
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


class JobRequest(BaseModel):
    kind: str = Field(examples=["generate"])
    params: dict[str, Any] = Field(default_factory=dict, examples=[{"prompt": "a red fox in snow", "count": 2}])


class AssetOut(BaseModel):
    id: str
    kind: str
    origin: str
    stage: str
    job_id: str | None
    parent_id: str | None
    width: int
    height: int
    prompt: str
    favourite: bool
    score: float | None
    params: dict
    created_at: UtcDatetime
    file_url: str

    @classmethod
    def of(cls, asset: Asset) -> "AssetOut":
        fields = {k: getattr(asset, k) for k in cls.model_fields if k != "file_url"}
        return cls(**fields, file_url=f"/api/v1/assets/{asset.id}/file")


class AssetPatch(BaseModel):
    favourite: bool


@router.post("/jobs", status_code=202, response_model=JobView)
def submit_job(body: JobRequest, services: ServicesDep, owner: OwnerDep) -> JobView:
    try:
        job = services.client.submit(owner, body.kind, body.params, origin="api")
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    return job


@router.get("/jobs", response_model=list[JobView])
def list_jobs(services: ServicesDep, owner: OwnerDep, state: Annotated[list[str] | None, Query()] = None,
              limit: int = Query(50, ge=1, le=500)) -> list[JobView]:
    """Your jobs, newest first; ``state=queued&state=running`` for the ones still under way."""
    return services.client.jobs(owner, state or (), limit)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
    job = services.client.job(owner, job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}.")
    return job


@router.delete("/jobs/{job_id}", response_model=JobView)
def cancel_job(job_id: str, services: ServicesDep, owner: OwnerDep) -> JobView:
    job = services.client.cancel(owner, job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}.")
    return job


@router.get("/assets", response_model=list[AssetOut])
def list_assets(
    services: ServicesDep, owner: OwnerDep,
    origin: str | None = None,
    favourites: bool = False,
    since: datetime | None = None,
    search: str | None = None,
    include_stages: bool = False,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> list[AssetOut]:
    flt = repo.AssetFilter(origin=origin, favourites_only=favourites, since=since, search=search,
                           include_stages=include_stages, limit=limit, offset=offset)
    with services.db.session() as session:
        return [AssetOut.of(a) for a in repo.list_assets(session, owner, flt)]


def _asset(services: Services, owner: str, asset_id: str) -> Asset:
    with services.db.session() as session:
        asset = repo.get_asset(session, asset_id, owner)
    if asset is None:
        raise HTTPException(404, f"No asset {asset_id}.")
    return asset


@router.get("/assets/{asset_id}", response_model=AssetOut)
def get_asset(asset_id: str, services: ServicesDep, owner: OwnerDep) -> AssetOut:
    return AssetOut.of(_asset(services, owner, asset_id))


@router.get("/assets/{asset_id}/file")
def get_asset_file(asset_id: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    asset = _asset(services, owner, asset_id)
    path = services.asset_path(asset)
    if not path.is_file():
        raise HTTPException(410, f"The file of asset {asset_id} is missing from the file store.")
    return FileResponse(path, media_type=asset.mime, filename=f"studio-{asset.id[:12]}{path.suffix}")


@router.get("/assets/{asset_id}/layers", response_model=list[AssetOut])
def get_asset_layers(asset_id: str, services: ServicesDep, owner: OwnerDep) -> list[AssetOut]:
    """What was made from an asset: a product picture's layers (background, shadow, product, mask) and exports
    (manifest, psd, zip); the pictures and keep maps image-to-image made from it."""
    _asset(services, owner, asset_id)
    with services.db.session() as session:
        return [AssetOut.of(a) for a in repo.child_assets(session, asset_id, owner)]


class RerunRequest(BaseModel):
    canvas_format: str = Field(examples=["9:16"])
    width: int | None = None
    height: int | None = None


@router.post("/assets/{asset_id}/rerun", status_code=202, response_model=JobView)
def rerun_product_picture(asset_id: str, body: RerunRequest, services: ServicesDep, owner: OwnerDep) -> JobView:
    """Re-render a product picture on another canvas: same scene, seed and product; a new background."""
    _asset(services, owner, asset_id)
    try:
        return services.products.rerun(owner, asset_id, body.canvas_format, body.width, body.height)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc


@router.patch("/assets/{asset_id}", response_model=AssetOut)
def patch_asset(asset_id: str, body: AssetPatch, services: ServicesDep, owner: OwnerDep) -> AssetOut:
    asset = _asset(services, owner, asset_id)
    with services.db.session() as session:
        return AssetOut.of(repo.set_favourite(session, session.merge(asset), body.favourite))


@router.delete("/assets/{asset_id}", status_code=204)
def delete_asset(asset_id: str, services: ServicesDep, owner: OwnerDep) -> None:
    services.delete_asset(_asset(services, owner, asset_id))


class ConversationSummary(BaseModel):
    id: str
    title: str
    updated_at: str
    head_turn_id: str | None


class ConversationPatch(BaseModel):
    """Rename, and/or move the head: ``head_turn_id`` branches from that turn (null: back to the start)."""

    title: str | None = None
    head_turn_id: str | None = Field(default=None, examples=["<turn id>"])
    move_head: bool = False


def _conversation(result: ConversationView | None, conversation_id: str) -> ConversationView:
    if result is None:
        raise HTTPException(404, f"No conversation {conversation_id}.")
    return result


@router.get("/conversations", response_model=list[ConversationSummary])
def list_conversations(services: ServicesDep, owner: OwnerDep) -> list[dict]:
    return services.client.conversations.list(owner)


@router.get("/conversations/{conversation_id}", response_model=ConversationView)
def get_conversation(conversation_id: str, services: ServicesDep, owner: OwnerDep) -> ConversationView:
    return _conversation(services.client.conversations.get(owner, conversation_id), conversation_id)


@router.patch("/conversations/{conversation_id}", response_model=ConversationView)
def patch_conversation(conversation_id: str, body: ConversationPatch, services: ServicesDep, owner: OwnerDep) -> ConversationView:
    chats = services.client.conversations
    try:
        result = chats.get(owner, conversation_id)
        if result is not None and body.title is not None:
            result = chats.rename(owner, conversation_id, body.title)
        if result is not None and body.move_head:
            result = chats.branch(owner, conversation_id, body.head_turn_id)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    return _conversation(result, conversation_id)


@router.post("/conversations/{conversation_id}/undo", response_model=ConversationView)
def undo_turn(conversation_id: str, services: ServicesDep, owner: OwnerDep) -> ConversationView:
    try:
        result = services.client.conversations.undo(owner, conversation_id)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    return _conversation(result, conversation_id)


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: str, services: ServicesDep, owner: OwnerDep) -> None:
    if not services.client.conversations.delete(owner, conversation_id):
        raise HTTPException(404, f"No conversation {conversation_id}.")


class MaterialOut(BaseModel):
    id: str
    name: str
    kind: str
    tags: list[str]
    width: int
    height: int
    has_alpha: bool
    notes: list[str]
    mask_source: str | None
    mask_note: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    file_url: str
    mask_url: str | None

    @classmethod
    def of(cls, material: MaterialView) -> "MaterialOut":
        fields = {k: getattr(material, k) for k in cls.model_fields if k not in ("file_url", "mask_url")}
        base = f"/api/v1/materials/{material.id}"
        return cls(**fields, file_url=f"{base}/file", mask_url=f"{base}/mask" if material.mask_hash else None)


class MaterialPatch(BaseModel):
    name: str | None = None
    kind: str | None = None
    tags: list[str] | None = None


def _material(services: Services, owner: str, material_id: str) -> MaterialView:
    material = services.materials.get(owner, material_id)
    if material is None:
        raise HTTPException(404, f"No material {material_id}.")
    return material


@router.post("/materials", status_code=201, response_model=MaterialOut)
def upload_material(services: ServicesDep, owner: OwnerDep, file: UploadFile = File(...), name: str | None = Form(None),
                    kind: str = Form("product"), tags: str = Form("")) -> MaterialOut:
    """Add a product photo, logo or reference to the library; ``tags`` is comma-separated."""
    try:
        material = services.materials.upload(owner, file.file.read(), clean_file_name(file.filename), name, kind, tags)
    except (ImageUploadError, MaterialError) as exc:
        raise HTTPException(422, str(exc)) from exc
    return MaterialOut.of(material)


@router.get("/materials", response_model=list[MaterialOut])
def list_materials(services: ServicesDep, owner: OwnerDep, kind: str | None = None, tag: str | None = None,
                   search: str | None = None) -> list[MaterialOut]:
    return [MaterialOut.of(m) for m in services.materials.list(owner, kind, tag, search)]


@router.get("/materials/{material_id}", response_model=MaterialOut)
def get_material(material_id: str, services: ServicesDep, owner: OwnerDep) -> MaterialOut:
    return MaterialOut.of(_material(services, owner, material_id))


@router.patch("/materials/{material_id}", response_model=MaterialOut)
def patch_material(material_id: str, body: MaterialPatch, services: ServicesDep, owner: OwnerDep) -> MaterialOut:
    _material(services, owner, material_id)
    try:
        return MaterialOut.of(services.materials.update(owner, material_id, body.name, body.kind, body.tags))
    except MaterialError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.delete("/materials/{material_id}", status_code=204)
def delete_material(material_id: str, services: ServicesDep, owner: OwnerDep) -> None:
    _material(services, owner, material_id)
    services.materials.delete(owner, material_id)


def _png_file(services: Services, digest: str, filename: str) -> FileResponse:
    path = services.files.path(digest, "png")
    if not path.is_file():
        raise HTTPException(410, "The file is missing from the file store.")
    return FileResponse(path, media_type="image/png", filename=filename)


@router.get("/materials/{material_id}/file")
def get_material_file(material_id: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    material = _material(services, owner, material_id)
    return _png_file(services, material.file_hash, f"material-{material.id[:12]}.png")


@router.get("/materials/{material_id}/mask")
def get_material_mask(material_id: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    material = _material(services, owner, material_id)
    if not material.mask_hash:
        raise HTTPException(404, f"Material {material_id} has no mask yet: submit a cutout job first.")
    return _png_file(services, material.mask_hash, f"mask-{material.id[:12]}.png")


@router.put("/materials/{material_id}/mask", response_model=MaterialOut)
def put_material_mask(material_id: str, services: ServicesDep, owner: OwnerDep, file: UploadFile = File(...)) -> MaterialOut:
    """Replace the product mask: a PNG the photo's size, white (or opaque) on the product."""
    material = _material(services, owner, material_id)
    try:
        # Read as carefully as any upload: the header's size checked before decoding, so no bomb is opened.
        mask = read_mask_upload(file.file.read(), (material.width, material.height),
                                max_bytes=services.limits.max_upload_bytes)
    except ImageUploadError as exc:
        raise HTTPException(422, str(exc)) from exc
    try:
        return MaterialOut.of(services.products.replace_mask(owner, material_id, mask))
    except (InvalidRequest, MaterialError) as exc:
        raise HTTPException(422, str(exc)) from exc


class StyleOut(BaseModel):
    name: str
    label: str
    label_zh: str
    category: str
    family: str
    prompt: str
    negative: str
    aspect: str
    suggested: dict  # width, height, steps, guidance on the active profile
    lora: dict | None  # the published LoRA it applies on the active profile
    preview_url: str | None


@router.get("/styles", response_model=list[StyleOut])
def list_styles(services: ServicesDep, category: str | None = None, family: str | None = None) -> list[StyleOut]:
    """The style catalogue, with each style's suggestions and preview on the active profile."""
    options = services.options
    profile = options.profile.name
    categories = services.client.style_categories
    out = []
    for style in options.catalog.styles.values():
        style_family = categories[style.category].family
        if (category and style.category != category) or (family and style_family != family):
            continue
        lora = style.lora_for(profile)
        out.append(StyleOut(
            name=style.name, label=style.label, label_zh=style.label_zh, category=style.category, family=style_family,
            prompt=style.prompt, negative=style.negative, aspect=style.aspect, suggested=options.style_settings(style.name),
            lora={"model": lora.model, "weight_name": lora.weight_name, "weight": lora.weight} if lora else None,
            preview_url=f"/api/v1/styles/{style.name}/preview" if services.previews.path(profile, style.name) else None,
        ))
    return out


@router.get("/styles/{name}/preview")
def get_style_preview(name: str, services: ServicesDep) -> FileResponse:
    path = services.previews.path(services.options.profile.name, name)
    if path is None:
        raise HTTPException(404, f"No preview of style {name!r} on this profile: run `python app.py styles previews`.")
    return FileResponse(path, media_type="image/png")


@router.get("/asset-types")
def list_asset_types(services: ServicesDep) -> list[dict]:
    """The Game assets tab's asset types: composition words, shape, and whether sprites are offered."""
    return [{"name": t.name, "label": t.label, "label_zh": t.label_zh, "prompt": t.prompt, "aspect": t.aspect,
             "transparent": t.transparent, "tileable": t.tileable} for t in services.options.catalog.asset_types.values()]


class TemplateOut(BaseModel):
    key: str  # "studio:<name>" or "user:<id>"
    name: str
    title: str
    title_zh: str
    description: str
    description_zh: str
    tab: str
    job_kind: str
    tags: list[str]
    prompt: str  # with a {field} slot for each field
    negative_prompt: str
    fields: list[dict]  # name, label, label_zh, example
    settings: dict  # the tab's raw request keys
    source: str  # studio | mine | shared
    owner: str | None
    shared: bool
    preview_url: str | None

    @classmethod
    def of(cls, card: TemplateCard, services: Services) -> "TemplateOut":
        entry = card.template.to_dict()
        return cls(**entry, key=card.key, job_kind=card.template.job_kind, source=card.source, owner=card.owner,
                   shared=card.shared,
                   preview_url=f"/api/v1/templates/{card.key}/preview" if _template_preview(services, card) else None)


class TemplateCreate(BaseModel):
    asset_id: str = Field(examples=["<asset id>"])
    title: str = Field(examples=["Autumn sale poster"])
    title_zh: str = ""
    tags: list[str] = Field(default_factory=list, examples=[["poster", "autumn"]])
    shared: bool = False


class TemplatePatch(BaseModel):
    shared: bool


def _template_preview(services: Services, card: TemplateCard) -> Path | None:
    """A user's template shows the result it was saved from; a studio template its rendered preview, if any."""
    if card.preview_hash:
        return services.files.path(card.preview_hash, "png")
    return services.template_previews.path(services.options.profile.name, card.template.name)


def _template(services: Services, owner: str, key: str) -> TemplateCard:
    card = services.templates.get(owner, key)
    if card is None:
        raise HTTPException(404, f"No template {key}.")
    return card


def _template_change(change: Callable[[], Any]) -> Any:
    """Run a change to a user's template: another user's (or none) is 404, a studio template's 403."""
    try:
        return change()
    except TemplateNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    except StudioTemplateReadOnly as exc:
        raise HTTPException(403, str(exc)) from exc


@router.get("/templates", response_model=list[TemplateOut])
def list_templates(services: ServicesDep, owner: OwnerDep, search: str = "", tag: Annotated[list[str] | None, Query()] = None,
                   source: str = "all") -> list[TemplateOut]:
    """The template square: the studio's templates, then yours, then those other users shared; ``tag``
    (repeatable) keeps templates with every tag, ``source`` is all, studio, mine or shared."""
    try:
        cards = services.templates.list(owner, search, tag or (), source)
    except TemplateError as exc:
        raise HTTPException(422, str(exc)) from exc
    return [TemplateOut.of(card, services) for card in cards]


@router.post("/templates", status_code=201, response_model=TemplateOut)
def save_template(body: TemplateCreate, services: ServicesDep, owner: OwnerDep) -> TemplateOut:
    """Save one of your results (Create, Image-to-image, Product, Game assets, PhotoMaker) as a template:
    its prompt and settings, with the picture as its preview; ``shared`` shows it to every user."""
    try:
        card = services.templates.save_from_asset(owner, body.asset_id, body.title, body.title_zh,
                                                  body.shared, body.tags)
    except TemplateError as exc:
        raise HTTPException(422, str(exc)) from exc
    return TemplateOut.of(card, services)


@router.get("/templates/{key}", response_model=TemplateOut)
def get_template(key: str, services: ServicesDep, owner: OwnerDep) -> TemplateOut:
    return TemplateOut.of(_template(services, owner, key), services)


@router.get("/templates/{key}/preview")
def get_template_preview(key: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    card = _template(services, owner, key)
    if card.preview_hash:
        return _png_file(services, card.preview_hash, f"template-{card.template.name}.png")
    path = _template_preview(services, card)
    if path is None:
        raise HTTPException(404, f"No preview of the studio template {key} on this profile: "
                                 "render them with `python app.py styles previews --templates`.")
    return FileResponse(path, media_type="image/png")


@router.patch("/templates/{key}", response_model=TemplateOut)
def patch_template(key: str, body: TemplatePatch, services: ServicesDep, owner: OwnerDep) -> TemplateOut:
    """Share one of your templates with every user of the studio, or make it private again."""
    return TemplateOut.of(_template_change(lambda: services.templates.set_shared(owner, key, body.shared)), services)


@router.delete("/templates/{key}", status_code=204)
def delete_template(key: str, services: ServicesDep, owner: OwnerDep) -> None:
    _template_change(lambda: services.templates.delete(owner, key))


class LoraOut(BaseModel):
    id: str
    name: str
    kind: str
    profile: str
    base_model: str
    trigger: str
    state: str
    state_note: str | None
    file_size: int | None
    job_id: str | None
    default_weight: float
    settings: dict
    images: list[dict]  # the training images: name, caption, size
    losses: list[float]
    samples: list[dict]
    created_at: UtcDatetime
    file_url: str | None

    @classmethod
    def of(cls, lora: LoraView) -> "LoraOut":
        return cls(id=lora.id, name=lora.name, kind=lora.kind, profile=lora.profile, base_model=lora.base_model,
                   trigger=lora.trigger, state=lora.state, state_note=lora.state_note, file_size=lora.file_size,
                   job_id=lora.job_id, default_weight=lora.default_weight, settings=lora.settings,
                   images=[{k: item[k] for k in ("name", "caption", "width", "height")} for item in lora.dataset],
                   losses=lora.metrics.get("losses", []), samples=lora.metrics.get("samples", []),
                   created_at=lora.created_at, file_url=f"/api/v1/loras/{lora.id}/file" if lora.file_hash else None)


class LoraTrainingOut(BaseModel):
    lora: LoraOut
    job: JobView
    images: list[dict]  # each uploaded image's check: name, ok, reason, caption, width, height, notes


class LoraUploadOut(BaseModel):
    lora: LoraOut
    job: JobView


class LoraPatch(BaseModel):
    name: str | None = None
    default_weight: float | None = None


def _lora(services: Services, owner: str, lora_id: str) -> LoraView:
    lora = services.loras.library.get(owner, lora_id)
    if lora is None:
        raise HTTPException(404, f"No LoRA {lora_id}.")
    return lora


async def _files(images: list[UploadFile]) -> list[tuple[str, bytes]]:
    return [(clean_file_name(image.filename) or f"image-{i}", await image.read()) for i, image in enumerate(images)]


def _captions(raw: str) -> dict[str, str]:
    if not raw:
        return {}
    try:
        captions = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"captions must be a JSON object of file name to caption ({exc.msg}).") from exc
    if not isinstance(captions, dict):
        raise HTTPException(422, "captions must be a JSON object of file name to caption.")
    return {str(k): str(v) for k, v in captions.items()}


@router.post("/loras/check-images")
async def check_training_images(services: ServicesDep, images: list[UploadFile] = File(...)) -> list[dict]:
    """Check training images (unreadable, too small, duplicates) without storing anything."""
    try:
        return [v.to_dict() for v in services.loras.check_images(await _files(images))]
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc


@router.post("/loras/train", status_code=202, response_model=LoraTrainingOut)
async def train_lora(services: ServicesDep, owner: OwnerDep, images: list[UploadFile] = File(...), name: str = Form("My style"),
                     trigger: str = Form(""), captions: str = Form(""), settings: str = Form("{}")) -> LoraTrainingOut:
    """Upload 5-30 images (``.txt`` files with the same names are their captions, or ``captions`` as JSON)
    and queue a ``train_lora`` job; ``settings`` is JSON: rank, steps, learning_rate, batch_size,
    train_text_encoder, sample_every, checkpoint_every, seed, sample_prompt."""
    try:
        settings_dict = json.loads(settings or "{}")
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"settings must be a JSON object ({exc.msg}).") from exc
    if not isinstance(settings_dict, dict):
        raise HTTPException(422, "settings must be a JSON object.")
    try:
        lora, job, verdicts = services.loras.start_training(owner, await _files(images), name, trigger,
                                                            _captions(captions), settings_dict)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    return LoraTrainingOut(lora=LoraOut.of(lora), job=job, images=[v.to_dict() for v in verdicts])


@router.post("/loras", status_code=202, response_model=LoraUploadOut)
def upload_lora(services: ServicesDep, owner: OwnerDep, file: UploadFile = File(...), name: str | None = Form(None),
                weight: float = Form(1.0)) -> LoraUploadOut:
    """Upload a LoRA as .safetensors; a ``lora_check`` job matches it against the base model before use."""
    try:
        lora, job = services.loras.upload(owner, file.file.read(), clean_file_name(file.filename), name, weight)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    return LoraUploadOut(lora=LoraOut.of(lora), job=job)


@router.get("/loras", response_model=list[LoraOut])
def list_loras(services: ServicesDep, owner: OwnerDep, usable: bool = False) -> list[LoraOut]:
    library = services.loras.library
    profile = services.options.profile.name if usable else None
    return [LoraOut.of(lora) for lora in library.list(owner, profile=profile, usable_only=usable)]


@router.get("/loras/{lora_id}", response_model=LoraOut)
def get_lora(lora_id: str, services: ServicesDep, owner: OwnerDep) -> LoraOut:
    return LoraOut.of(_lora(services, owner, lora_id))


@router.patch("/loras/{lora_id}", response_model=LoraOut)
def patch_lora(lora_id: str, body: LoraPatch, services: ServicesDep, owner: OwnerDep) -> LoraOut:
    _lora(services, owner, lora_id)
    try:
        return LoraOut.of(services.loras.library.update(owner, lora_id, body.name, body.default_weight))
    except LoraError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.delete("/loras/{lora_id}", status_code=204)
def delete_lora(lora_id: str, services: ServicesDep, owner: OwnerDep) -> None:
    _lora(services, owner, lora_id)
    try:
        services.loras.library.delete(owner, lora_id)
    except LoraError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("/loras/{lora_id}/file")
def get_lora_file(lora_id: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    lora = _lora(services, owner, lora_id)
    if not lora.file_hash:
        raise HTTPException(404, f"LoRA {lora_id} has no weights yet ({lora.state}).")
    path = services.loras.library.file_path(lora)
    if not path.is_file():
        raise HTTPException(410, "The file is missing from the file store.")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in lora.name)[:60] or "lora"
    return FileResponse(path, media_type="application/vnd.safetensors", filename=f"{safe}.safetensors")


class AvatarOut(BaseModel):
    id: str
    name: str
    subject: str
    profile: str
    state: str
    usable_photos: int
    photos: list[dict]
    lora_id: str | None
    check_job_id: str | None
    training_job_id: str | None
    lora_note: str | None
    check_error: str | None
    created_at: str


class AvatarCreated(BaseModel):
    avatar: AvatarOut
    job: JobView
    photos: list[dict]


class AttributeEdit(BaseModel):
    edits: dict[str, str] = Field(description="attribute name → option name, e.g. {\"hair_colour\": \"silver\"}")


def _avatar(services: Services, owner: str, avatar_id: str) -> AvatarView:
    avatar = services.identity.avatars.get(owner, avatar_id)
    if avatar is None:
        raise HTTPException(404, f"No avatar {avatar_id}.")
    return avatar


def _submitted(submit) -> JobView:
    try:
        return submit()
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc


@router.get("/portrait-presets")
def portrait_presets(services: ServicesDep) -> dict:
    """PhotoMaker's stylizations and the attribute edits with their options."""
    catalogue = services.identity.catalogue
    return {
        "stylizations": [{"name": s.name, "label": s.label, "label_zh": s.label_zh} for s in catalogue.stylizations.values()],
        "attributes": [{"name": a.name, "label": a.label, "label_zh": a.label_zh,
                        "options": [{"name": o.name, "label": o.label, "label_zh": o.label_zh} for o in a.options.values()]}
                       for a in catalogue.attributes.values()],
    }


@router.get("/avatar-styles")
def list_avatar_styles(services: ServicesDep, category: str | None = None) -> list[dict]:
    catalogue, profile = services.identity.catalogue, services.options.profile.name
    return [{"name": s.name, "label": s.label, "label_zh": s.label_zh, "category": s.category, "aspect": s.aspect,
             "lora": s.lora_for(profile) is not None,
             "preview_url": f"/api/v1/avatar-styles/{s.name}/preview" if services.avatar_previews.path(profile, s.name) else None}
            for s in catalogue.avatar_styles.values() if not category or s.category == category]


@router.get("/avatar-styles/{name}/preview")
def get_avatar_style_preview(name: str, services: ServicesDep) -> FileResponse:
    path = services.avatar_previews.path(services.options.profile.name, name)
    if name not in services.identity.catalogue.avatar_styles or path is None:
        raise HTTPException(404, f"No preview of the avatar style {name!r} on this profile: "
                                 "render them with `python app.py styles previews --avatars`.")
    return FileResponse(path, media_type="image/png")


@router.get("/photo-templates")
def list_photo_templates(services: ServicesDep, category: str | None = None) -> list[dict]:
    catalogue = services.identity.catalogue
    return [{"name": t.name, "label": t.label, "label_zh": t.label_zh, "category": t.category, "aspect": t.aspect,
             "composition_url": f"/api/v1/photo-templates/{t.name}/composition" if t.composition else None}
            for t in catalogue.photo_templates.values() if not category or t.category == category]


@router.get("/photo-templates/{name}/composition")
def get_template_composition(name: str, services: ServicesDep) -> FileResponse:
    template = services.identity.catalogue.photo_templates.get(name)
    if template is None or template.composition is None:
        raise HTTPException(404, f"No photo template {name!r} with a composition image.")
    return FileResponse(template.composition, media_type="image/png")


@router.post("/portraits/{asset_id}/edit", status_code=202, response_model=JobView)
def edit_portrait(asset_id: str, body: AttributeEdit, services: ServicesDep, owner: OwnerDep) -> JobView:
    """Redraw a PhotoMaker picture with attribute edits, keeping its identity and seed (job kind ``identity``)."""
    return _submitted(lambda: services.identity.edit(owner, asset_id, body.edits))


@router.post("/avatars/check-photos")
async def check_avatar_photos(services: ServicesDep, photos: list[UploadFile] = File(...)) -> list[dict]:
    """The upload checks of 5-20 face photos (unreadable, not a photo, too small, duplicates, over the
    limit), without storing anything; faces are checked once the avatar is made."""
    return [v.to_dict() for v in services.identity.check_photos(await _files(photos))]


@router.post("/avatars", status_code=202, response_model=AvatarCreated)
async def create_avatar(services: ServicesDep, owner: OwnerDep, photos: list[UploadFile] = File(...), name: str = Form("My avatar"),
                        subject: str = Form(...)) -> AvatarCreated:
    """Store the usable photos as a new avatar and queue the check of each face (job kind ``face_check``)."""
    try:
        avatar, job, verdicts = services.identity.create_avatar(owner, name, subject, await _files(photos))
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    return AvatarCreated(avatar=AvatarOut(**avatar.to_dict()), job=job, photos=[v.to_dict() for v in verdicts])


@router.get("/avatars", response_model=list[AvatarOut])
def list_avatars(services: ServicesDep, owner: OwnerDep) -> list[AvatarOut]:
    return [AvatarOut(**a.to_dict()) for a in services.identity.avatars.list(owner)]


@router.get("/avatars/{avatar_id}", response_model=AvatarOut)
def get_avatar(avatar_id: str, services: ServicesDep, owner: OwnerDep) -> AvatarOut:
    return AvatarOut(**_avatar(services, owner, avatar_id).to_dict())


@router.get("/avatars/{avatar_id}/photos/{photo_id}/crop")
def get_avatar_crop(avatar_id: str, photo_id: str, services: ServicesDep, owner: OwnerDep) -> FileResponse:
    try:
        path = services.identity.avatars.photo(owner, avatar_id, photo_id, crop=True)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    return FileResponse(path, media_type="image/png")


@router.post("/avatars/{avatar_id}/train", status_code=202, response_model=JobView)
def train_avatar(avatar_id: str, services: ServicesDep, owner: OwnerDep, settings: dict[str, Any] | None = None) -> JobView:
    """Train the avatar's identity LoRA on its usable face crops (job kind ``train_avatar``); settings as
    for style LoRAs (rank, steps, learning_rate, seed, ...)."""
    _avatar(services, owner, avatar_id)
    return _submitted(lambda: services.identity.train_avatar(owner, avatar_id, settings))


@router.delete("/avatars/{avatar_id}", status_code=204)
def delete_avatar(avatar_id: str, services: ServicesDep, owner: OwnerDep) -> None:
    """Delete the avatar with its photos, face crops, embeddings and trained LoRA."""
    _avatar(services, owner, avatar_id)
    try:
        services.identity.avatars.delete(owner, avatar_id)
    except AvatarError as exc:
        raise HTTPException(409, str(exc)) from exc


@public_router.get("/health")
def health(services: ServicesDep) -> dict:
    """The profile, the live workers (each with the profile and queues it serves) and the queue depth."""
    return services.client.health()


class UserOut(BaseModel):
    id: str
    name: str
    role: str
    disabled: bool
    can_sign_in: bool
    created_at: UtcDatetime
    last_login_at: UtcDatetime | None


class MeOut(UserOut):
    storage_used_bytes: int
    limits: dict[str, int]


@router.get("/me", response_model=MeOut)
def me(services: ServicesDep, user: Annotated[UserView, Depends(current_user)]) -> MeOut:
    """Who you are signed in as, your limits, and how much of your storage quota is used."""
    return MeOut(**vars(user), storage_used_bytes=services.quota.used(user.id), limits=vars(services.limits))


class UserCreate(BaseModel):
    name: str = Field(examples=["mei"])
    password: str = Field(min_length=MIN_PASSWORD, max_length=200)
    role: str = Field("member", examples=["member"])


class UserPatch(BaseModel):
    disabled: bool | None = None
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=200)


@router.get("/users", response_model=list[UserOut], dependencies=[Depends(admin_user)])
def list_users(services: ServicesDep) -> list[UserOut]:
    return [UserOut(**vars(u)) for u in services.users.list()]


@router.post("/users", status_code=201, response_model=UserOut, dependencies=[Depends(admin_user)])
def add_user(body: UserCreate, services: ServicesDep) -> UserOut:
    try:
        return UserOut(**vars(services.users.add(body.name, body.password, body.role)))
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc


@router.patch("/users/{name}", response_model=UserOut, dependencies=[Depends(admin_user)])
def patch_user(name: str, body: UserPatch, services: ServicesDep) -> UserOut:
    """Disable or enable a user (their sessions and tokens stop at once), or set their password."""
    users = services.users
    try:
        if body.password is not None:
            users.set_password(name, body.password)
        if body.disabled is not None:
            users.set_disabled(name, body.disabled)
        return UserOut(**vars(users.get(name)))
    except UnknownUser as exc:
        raise HTTPException(404, str(exc)) from exc
    except UserError as exc:
        raise HTTPException(422, str(exc)) from exc
