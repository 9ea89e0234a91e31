"""REST routes under /api/v1. Services come in through FastAPI dependencies."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from storage import repo
from storage.models import Asset
from tasks.client import ConversationView, InvalidRequest, JobView, QueueUnavailable
from ui.services import Services

router = APIRouter(prefix="/api/v1", tags=["studio"])


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


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
    created_at: datetime
    file_url: str

    @classmethod
    def of(cls, asset: Asset) -> "AssetOut":
        fields = {k: getattr(asset, k) for k in cls.model_fields if k != "file_url"}
        return cls(**fields, file_url=f"/api/v1/assets/{asset.id}/file")


class AssetPatch(BaseModel):
    favourite: bool


@router.post("/jobs", status_code=202, response_model=JobView)
def submit_job(body: JobRequest, services: ServicesDep) -> JobView:
    try:
        job = services.client.submit(services.owner_id, body.kind, body.params, origin="api")
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    except QueueUnavailable as exc:
        raise HTTPException(503, str(exc)) from exc
    return job


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, services: ServicesDep) -> JobView:
    job = services.client.job(services.owner_id, job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}.")
    return job


@router.delete("/jobs/{job_id}", response_model=JobView)
def cancel_job(job_id: str, services: ServicesDep) -> JobView:
    job = services.client.cancel(services.owner_id, job_id)
    if job is None:
        raise HTTPException(404, f"No job {job_id}.")
    return job


@router.get("/assets", response_model=list[AssetOut])
def list_assets(
    services: ServicesDep,
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
        return [AssetOut.of(a) for a in repo.list_assets(session, services.owner_id, flt)]


def _asset(services: Services, asset_id: str) -> Asset:
    with services.db.session() as session:
        asset = repo.get_asset(session, asset_id, services.owner_id)
    if asset is None:
        raise HTTPException(404, f"No asset {asset_id}.")
    return asset


@router.get("/assets/{asset_id}", response_model=AssetOut)
def get_asset(asset_id: str, services: ServicesDep) -> AssetOut:
    return AssetOut.of(_asset(services, asset_id))


@router.get("/assets/{asset_id}/file")
def get_asset_file(asset_id: str, services: ServicesDep) -> FileResponse:
    asset = _asset(services, asset_id)
    path = services.asset_path(asset)
    if not path.is_file():
        raise HTTPException(410, f"The file of asset {asset_id} is missing from the file store.")
    return FileResponse(path, media_type=asset.mime, filename=f"studio-{asset.id[:12]}{path.suffix}")


@router.patch("/assets/{asset_id}", response_model=AssetOut)
def patch_asset(asset_id: str, body: AssetPatch, services: ServicesDep) -> AssetOut:
    asset = _asset(services, asset_id)
    with services.db.session() as session:
        return AssetOut.of(repo.set_favourite(session, session.merge(asset), body.favourite))


@router.delete("/assets/{asset_id}", status_code=204)
def delete_asset(asset_id: str, services: ServicesDep) -> None:
    services.delete_asset(_asset(services, asset_id))


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
def list_conversations(services: ServicesDep) -> list[dict]:
    return services.client.conversations.list(services.owner_id)


@router.get("/conversations/{conversation_id}", response_model=ConversationView)
def get_conversation(conversation_id: str, services: ServicesDep) -> ConversationView:
    return _conversation(services.client.conversations.get(services.owner_id, conversation_id), conversation_id)


@router.patch("/conversations/{conversation_id}", response_model=ConversationView)
def patch_conversation(conversation_id: str, body: ConversationPatch, services: ServicesDep) -> ConversationView:
    chats, owner = services.client.conversations, services.owner_id
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
def undo_turn(conversation_id: str, services: ServicesDep) -> ConversationView:
    try:
        result = services.client.conversations.undo(services.owner_id, conversation_id)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from exc
    return _conversation(result, conversation_id)


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: str, services: ServicesDep) -> None:
    if not services.client.conversations.delete(services.owner_id, conversation_id):
        raise HTTPException(404, f"No conversation {conversation_id}.")


@router.get("/health")
def health(services: ServicesDep) -> dict:
    return services.client.health()
