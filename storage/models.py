"""SQLAlchemy 2 typed models. Every row that holds a user's work has an owner."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class Role:
    ADMIN = "admin"
    MEMBER = "member"
    ALL = (ADMIN, MEMBER)


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    # An argon2 hash; None for the local single user, who never signs in.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16), default=Role.MEMBER)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime)


class ApiToken(Base):
    """A secret for scripts; only its SHA-256 is kept (the secret is long and random, so no slow hash is needed)."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    origin: Mapped[str] = mapped_column(String(40), default="api")
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED, index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str] = mapped_column(String(200), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict] = mapped_column(default=dict)
    profile: Mapped[str] = mapped_column(String(80))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)

    assets: Mapped[list["Asset"]] = relationship(back_populates="job", order_by="Asset.output_index")


board_assets = Table(
    "board_assets",
    Base.metadata,
    Column("board_id", ForeignKey("boards.id", ondelete="CASCADE"), primary_key=True),
    Column("asset_id", ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True),
)


class Asset(Base):
    __tablename__ = "assets"
    __table_args__ = (UniqueConstraint("job_id", "stage", "output_index", name="uq_asset_job_output"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id"))
    kind: Mapped[str] = mapped_column(String(40), default="image")
    origin: Mapped[str] = mapped_column(String(40), default="create", index=True)
    stage: Mapped[str] = mapped_column(String(40), default="final")
    output_index: Mapped[int] = mapped_column(Integer, default=0)
    file_hash: Mapped[str] = mapped_column(String(64), index=True)
    mime: Mapped[str] = mapped_column(String(60), default="image/png")
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text, default="")
    params: Mapped[dict] = mapped_column(default=dict)
    favourite: Mapped[bool] = mapped_column(Boolean, default=False)
    score: Mapped[float | None] = mapped_column(Float)  # CLIP text-image score, when the job ranked its candidates
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    job: Mapped[Job | None] = relationship(back_populates="assets")


class Board(Base):
    __tablename__ = "boards"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    assets: Mapped[list[Asset]] = relationship(secondary=board_assets)


class Conversation(Base):
    """A creation chat. Its turns form a tree; ``head_turn_id`` is the turn the next message follows."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200), default="New conversation")
    head_turn_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    turns: Mapped[list["Turn"]] = relationship(back_populates="conversation", order_by="Turn.created_at")


class Turn(Base):
    """One user message (or per-image tweak) and what the studio made of it."""

    __tablename__ = "turns"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("turns.id"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    tweak: Mapped[dict | None] = mapped_column(JSON)  # {"kind": style|aspect|upscale|variations, "asset_id", ...}
    settings: Mapped[dict] = mapped_column(default=dict)  # count, aspect, size: the form's choices for this turn
    refined: Mapped[dict | None] = mapped_column(JSON)  # engine.refiner.RefinedTurn as a dict, once refined
    seed: Mapped[int | None] = mapped_column(BigInteger)
    candidates: Mapped[list] = mapped_column(default=list)  # [{"asset_id", "score", "seed", "index"}], best first
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)

    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    job: Mapped[Job | None] = relationship()


class Material(Base):
    """A user's upload kept for reuse (product photo, logo, reference), with the product's mask once cut out."""

    __tablename__ = "materials"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(20), default="product", index=True)  # product | logo | reference
    tags: Mapped[list] = mapped_column(default=list)
    file_hash: Mapped[str] = mapped_column(String(64))  # the upload, normalised to PNG
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    has_alpha: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[list] = mapped_column(default=list)  # what was done to the upload (rotated, downscaled, ...)
    mask_hash: Mapped[str | None] = mapped_column(String(64))  # PNG, 255 on the product
    mask_source: Mapped[str | None] = mapped_column(String(20))  # alpha | segmenter | brush
    mask_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerRecord(Base):
    """A worker's heartbeat: the embedded broker has no remote control, so workers report here."""

    __tablename__ = "workers"
    hostname: Mapped[str] = mapped_column(String(200), primary_key=True)
    queues: Mapped[list] = mapped_column(default=list)
    profile: Mapped[str] = mapped_column(String(80))
    pid: Mapped[int] = mapped_column(Integer)
    model_loads: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LoraState:
    NEW = "new"  # training images stored, not trained yet
    TRAINING = "training"  # its train job is queued or running
    CHECKING = "checking"  # an upload whose keys a worker is checking against the base model
    READY = "ready"
    FAILED = "failed"  # training failed, or was cancelled
    REJECTED = "rejected"  # an upload that does not fit the base model
    USABLE = (READY,)
    BUSY = (TRAINING, CHECKING)


class TrainedModel(Base):
    """A LoRA owned by a user: trained here from their images, or uploaded as safetensors."""

    __tablename__ = "trained_models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    kind: Mapped[str] = mapped_column(String(20), default="style", index=True)  # style | uploaded
    profile: Mapped[str] = mapped_column(String(80))  # the profile whose base model it adapts
    base_model: Mapped[str] = mapped_column(String(500))
    trigger: Mapped[str] = mapped_column(String(80), default="")
    state: Mapped[str] = mapped_column(String(16), default=LoraState.NEW, index=True)
    state_note: Mapped[str | None] = mapped_column(Text)  # why it failed or was rejected
    file_hash: Mapped[str | None] = mapped_column(String(64))  # the safetensors file, once there is one
    file_size: Mapped[int | None] = mapped_column(BigInteger)
    job_id: Mapped[str | None] = mapped_column(String(32))  # the latest train or check job
    dataset: Mapped[list] = mapped_column(default=list)  # [{"hash", "name", "caption", "width", "height"}]
    settings: Mapped[dict] = mapped_column(default=dict)  # the training request, as trained
    metrics: Mapped[dict] = mapped_column(default=dict)  # {"losses": [...], "samples": [{"step", "asset_id"}], ...}
    default_weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PhotoVerdict:
    PENDING = "pending"  # stored, not analysed yet
    USABLE = "usable"
    REJECTED = "rejected"


class Avatar(Base):
    """A digital avatar: a person's checked photos, their identity, and the identity LoRA trained on them.
    Face data of one user only; deleting the avatar deletes its photos, crops, embeddings and LoRA."""

    __tablename__ = "avatars"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(80))  # the class-word phrase: "a woman", "一个男孩"
    profile: Mapped[str] = mapped_column(String(80))
    identity: Mapped[list | None] = mapped_column(JSON)  # mean normalised embedding of the usable photos
    check_job_id: Mapped[str | None] = mapped_column(String(32))
    lora_id: Mapped[str | None] = mapped_column(ForeignKey("trained_models.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    photos: Mapped[list["AvatarPhoto"]] = relationship(back_populates="avatar", cascade="all, delete-orphan",
                                                       order_by="AvatarPhoto.position")
    lora: Mapped[TrainedModel | None] = relationship()


class AvatarPhoto(Base):
    __tablename__ = "avatar_photos"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    avatar_id: Mapped[str] = mapped_column(ForeignKey("avatars.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))  # the uploaded file's name
    file_hash: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    verdict: Mapped[str] = mapped_column(String(16), default=PhotoVerdict.PENDING)
    problems: Mapped[list] = mapped_column(default=list)
    crop_hash: Mapped[str | None] = mapped_column(String(64))  # the face's portrait crop, for training
    embedding: Mapped[list | None] = mapped_column(JSON)
    face_box: Mapped[list | None] = mapped_column(JSON)
    sharpness: Mapped[float | None] = mapped_column(Float)
    similarity: Mapped[float | None] = mapped_column(Float)  # to the group's median identity
    avatar: Mapped[Avatar] = relationship(back_populates="photos")


class UserTemplate(Base):
    """A template a user saved from one of their results: an industry-template entry, private or shared with
    every user of the studio. Its preview is the result's file, kept when the result is deleted."""

    __tablename__ = "user_templates"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_user_template_name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(80))  # a slug, unique per owner
    title: Mapped[str] = mapped_column(String(200))
    title_zh: Mapped[str] = mapped_column(String(200), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    description_zh: Mapped[str] = mapped_column(Text, default="")
    tab: Mapped[str] = mapped_column(String(20))  # create | img2img | product | game | photomaker
    tags: Mapped[list] = mapped_column(default=list)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    fields: Mapped[list] = mapped_column(default=list)  # [{"name", "label", "label_zh", "example"}]
    settings: Mapped[dict] = mapped_column(default=dict)  # raw request keys of the tab
    shared: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    preview_hash: Mapped[str] = mapped_column(String(64))  # PNG: the result it was saved from
    # The result stays deletable: its row goes, the template (and its preview file) stays.
    source_asset_id: Mapped[str | None] = mapped_column(ForeignKey("assets.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
