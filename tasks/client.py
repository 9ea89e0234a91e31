"""What the web process uses to submit, poll and cancel jobs. It never imports torch."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from engine.chat_request import DEFAULT_CANDIDATES, resolve_chat_turn
from engine.game.request import AssetType, load_asset_types, resolve_game_asset
from engine.identity_request import bind_avatar, resolve_avatar_batch, resolve_identity, resolve_photo_templates
from engine.img2img_request import DEFAULT_STRENGTH as IMG2IMG_STRENGTH
from engine.img2img_request import KEEPS, keep_problem, resolve_img2img
from engine.lora_request import resolve_training
from engine.params import (
    ASPECT_RATIOS,
    MAX_COUNT,
    MAX_STEPS,
    SAMPLERS,
    ParamError,
    resolve_generation,
    size_for_aspect,
    size_like,
    style_defaults,
)
from engine.portraits import PortraitCatalogue, load_portrait_catalogue
from engine.product.request import CANVAS_FORMATS, CUSTOM_FORMAT, resolve_cutout, resolve_product
from engine.product.scenes import Scene, load_scenes
from engine.profiles import STAGE_LABELS, Profile, model_obtainable
from engine.styles import Style, StyleCategory, load_catalogue
from storage import conversations, loras, repo
from storage.avatars import AVATAR_TRIGGER
from storage.conversations import ConversationError
from storage.db import Database
from storage.models import Avatar, Conversation, Job, JobState, LoraState, Material, PhotoVerdict, TrainedModel, Turn
from storage.quota import LimitExceeded, Quota
from tasks.celery_app import JOB_TASKS, LOWEST_PRIORITY, TASK_QUEUES

log = logging.getLogger(__name__)

# A worker that has not reported for this long is not counted as live.
WORKER_TIMEOUT = timedelta(seconds=30)


class QueueUnavailable(RuntimeError):
    """The broker could not be reached; the job was not created."""


class OverLimit(LimitExceeded):
    """A job over one of the user's limits (jobs at once, pictures per job, storage)."""


class InvalidRequest(ValueError):
    """Parameters a user must correct; the message says how."""


@dataclass(frozen=True)
class Catalog:
    """The presets requests are checked against: style presets, product scenes, game-asset types and the
    portrait catalogues (stylizations, attribute edits, avatar styles, photo templates)."""

    styles: dict[str, Style]
    scenes: dict[str, Scene]
    asset_types: dict[str, AssetType]
    portraits: PortraitCatalogue


@dataclass(frozen=True)
class KeepOption:
    """An image-to-image keep as the form offers it; ``problem`` says why it cannot run here (None: it can)."""

    name: str
    label: str
    default_weight: float
    problem: str | None


@dataclass(frozen=True)
class FormOptions:
    """What the web side's forms offer: the active profile (limits, defaults, stages), styles, samplers."""

    profile: Profile
    styles: list[tuple[str, str]]  # (label shown, name)
    samplers: list[str]
    stage_labels: dict[str, str]
    scenes: list[tuple[str, str]]  # (label shown, name)
    aspect_ratios: tuple[str, ...] = ASPECT_RATIOS
    canvas_formats: dict[str, tuple[int, int]] = field(default_factory=lambda: dict(CANVAS_FORMATS))
    custom_format: str = CUSTOM_FORMAT
    max_count: int = MAX_COUNT
    max_steps: int = MAX_STEPS
    default_candidates: int = DEFAULT_CANDIDATES
    style_categories: list[tuple[str, str]] = field(default_factory=list)  # (label shown, name)
    asset_types: list[tuple[str, str]] = field(default_factory=list)  # (label shown, name)
    catalog: Catalog | None = None
    keeps: list[KeepOption] = field(default_factory=list)
    img2img_strength: float = IMG2IMG_STRENGTH
    fast_problem: str | None = None  # why the profile's fast mode cannot be offered; None when it can

    @classmethod
    def of(cls, profile: Profile, catalog: Catalog, categories: dict[str, StyleCategory] | None = None,
           present: Callable[..., bool] = model_obtainable) -> "FormOptions":
        """``present`` tells whether a model is on this machine (or can be fetched): keeps whose models are
        missing are offered with the reason, and the others still work."""
        keeps = [KeepOption(k.name, f"{k.label} · {k.label_zh}", k.default_weight, keep_problem(k, profile, present))
                 for k in KEEPS.values()]
        fast = profile.fast_mode
        fast_problem = (f"The {profile.name} profile has no distilled fast mode." if fast is None else
                        None if present(fast.model, (fast.weight_name,)) else f"Fast: its distilled LoRA {fast.model} is not on this machine.")
        return cls(profile=profile, keeps=keeps, fast_problem=fast_problem, styles=[(f"{s.label} · {s.label_zh}", s.name) for s in catalog.styles.values()],
                   samplers=list(SAMPLERS), stage_labels={**STAGE_LABELS, **{k.name: f"{k.label} map" for k in KEEPS.values()}},
                   scenes=[(f"{s.label} · {s.label_zh}", s.name) for s in catalog.scenes.values()],
                   style_categories=[(f"{c.label} · {c.label_zh}", c.name) for c in (categories or {}).values()],
                   asset_types=[(f"{t.label} · {t.label_zh}", t.name) for t in catalog.asset_types.values()],
                   catalog=catalog)

    def style_settings(self, name: str, asset_type: str | None = None) -> dict:
        """What a style suggests on this profile (at the asset type's shape when given): width, height,
        steps, guidance."""
        aspect = self.catalog.asset_types[asset_type].aspect if asset_type else None
        return style_defaults(self.catalog.styles[name], self.profile, aspect)

    def styles_in(self, category: str | None) -> list[tuple[str, str]]:
        """(label, name) of the styles in a category, or of all styles."""
        return [(f"{s.label} · {s.label_zh}", s.name) for s in self.catalog.styles.values() if not category or s.category == category]

    @property
    def has_controlnet(self) -> bool:
        return "controlnet" in self.profile.roles

    @staticmethod
    def size_for_aspect(aspect: str, long_side: int) -> tuple[int, int]:
        return size_for_aspect(aspect, long_side)

    def size_like(self, width: int, height: int) -> tuple[int, int]:
        return size_like(width, height, self.profile)


@dataclass
class JobKind:
    # (raw params, profile, catalog) -> validated parameters with to_dict(); raises ParamError
    resolve: Callable[[dict, Profile, Catalog], object]
    # Rows the job works on, checked or added with it in one transaction: (session, owner, params, job id)
    # -> params to store; raises ParamError or ConversationError
    prepare: Callable[[Session, str, dict, str], dict] | None = None
    # Undo ``prepare`` when the job cannot be queued: (session, stored params)
    withdraw: Callable[[Session, dict], None] | None = None


def images_requested(params: dict) -> int:
    """How many pictures a job's stored parameters ask for (none for cut-outs, training and checks)."""
    if "items" in params:  # identity kinds: pictures kept per item
        return sum(item.get("count", 1) for item in params["items"])
    if "variants" in params:  # product: each variant in each scene
        return len(params["scenes"]) * params["variants"]
    return int(params.get("count", 0))


def _start_turn(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    turn = conversations.start_turn(session, owner_id, params, job_id)
    return dict(params, conversation_id=turn.conversation_id, turn_id=turn.id)


def _owned(session: Session, model, row_id: str, owner_id: str, missing: str):
    """The owner's row of ``model`` with this id; another user's row is as missing as no row."""
    row = session.get(model, row_id)
    if row is None or row.owner_id != owner_id:
        raise ParamError(missing)
    return row


def _owned_material(session: Session, owner_id: str, material_id: str) -> Material:
    return _owned(session, Material, material_id, owner_id, f"No material {material_id} in your library (it may have been deleted).")


def _product_sources(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    """Pin the photo and mask the job renders: the material's current ones, or for a re-run those of the
    picture it re-renders, so only the background changes."""
    material = _owned_material(session, owner_id, params["material_id"])
    material_hash, mask_hash = material.file_hash, material.mask_hash
    if params.get("rerun_of"):
        source = repo.get_asset(session, params["rerun_of"], owner_id)
        if source is None or source.params.get("kind") != "product":
            raise ParamError(f"No product picture {params['rerun_of']} to re-run.")
        material_hash, mask_hash = source.params["material_hash"], source.params["mask_hash"]
    if not mask_hash:
        raise ParamError(f"'{material.name}' has no product mask yet: cut it out (or paint its mask) first.")
    return dict(params, material_name=material.name, material_hash=material_hash, mask_hash=mask_hash)


def _cutout_source(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    _owned_material(session, owner_id, params["material_id"])
    return params


def _owned_lora(session: Session, owner_id: str, lora_id: str) -> TrainedModel:
    return _owned(session, TrainedModel, lora_id, owner_id, f"No LoRA {lora_id} among yours (it may have been deleted).")


def _pin_loras(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    """Check each LoRA the job names is the owner's, ready, and made for this profile; pin its file."""
    pinned = []
    for item in params.get("loras", []):
        if item.get("lora_id"):
            lora = _owned_lora(session, owner_id, item["lora_id"])
            if lora.state not in LoraState.USABLE or not lora.file_hash:
                raise ParamError(f"The LoRA '{lora.name}' is {lora.state}, not ready to use"
                                 f"{': ' + lora.state_note if lora.state_note else ''}.")
            if lora.profile != params["profile"]:
                raise ParamError(f"The LoRA '{lora.name}' was made for the {lora.profile} profile; this studio runs "
                                 f"{params['profile']}, whose base model it does not fit.")
            item = dict(item, name=lora.name, file_hash=lora.file_hash)
        pinned.append(item)
    return dict(params, loras=pinned)


def _img2img_source(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    """Check the source picture is the owner's (a result or a material) before the job is queued."""
    if params.get("init_asset_id") and repo.get_asset(session, params["init_asset_id"], owner_id) is None:
        raise ParamError(f"No picture {params['init_asset_id']} among your results (it may have been deleted).")
    if params.get("init_material_id"):
        _owned_material(session, owner_id, params["init_material_id"])
    return _pin_loras(session, owner_id, params, job_id)


def _start_training(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    lora = _owned_lora(session, owner_id, params["lora_id"])
    if lora.kind not in ("style", "avatar") or not lora.dataset:
        raise ParamError(f"'{lora.name}' has no training images: it was uploaded, not trained here.")
    if lora.state in (LoraState.TRAINING, LoraState.CHECKING):
        raise ParamError(f"'{lora.name}' is already {lora.state}: wait for it or cancel its job.")
    if lora.profile != params["profile"]:
        raise ParamError(f"'{lora.name}' was set up for the {lora.profile} profile; this studio runs {params['profile']}.")
    loras.attach_job(session, lora.id, job_id, LoraState.TRAINING, settings=params)
    return params


def _start_check(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    lora = _owned_lora(session, owner_id, params["lora_id"])
    if lora.kind != "uploaded":
        raise ParamError(f"'{lora.name}' was trained here; only uploaded LoRAs are checked.")
    loras.attach_job(session, lora.id, job_id, LoraState.CHECKING)
    return params


def _unqueued(state: str):
    """Undo for a LoRA job the queue did not take: the LoRA says so, and can be started again."""
    def withdraw(session: Session, params: dict) -> None:
        lora = session.get(TrainedModel, params["lora_id"])
        lora.state, lora.state_note = state, "The job queue was unreachable, so nothing ran; start it again."
        session.commit()
    return withdraw


def _face_photos(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    """Check the face photos are the owner's; pin their files."""
    def hashes(ids: list[str]) -> list[str]:
        found = []
        for material_id in ids:
            material = _owned_material(session, owner_id, material_id)
            if material.kind != "face":
                raise ParamError(f"'{material.name}' is a {material.kind} material, not a face photo.")
            found.append(material.file_hash)
        return found

    if params.get("edit_of") and repo.get_asset(session, params["edit_of"], owner_id) is None:
        raise ParamError(f"No picture {params['edit_of']} to edit.")
    return dict(params, photo_hashes=hashes(params["photos"]), mix_hashes=hashes(params["mix_photos"]))


def _owned_avatar(session: Session, owner_id: str, avatar_id: str) -> Avatar:
    return _owned(session, Avatar, avatar_id, owner_id, f"No avatar {avatar_id} among yours (it may have been deleted).")


def _pin_avatar(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    """A photo-template job renders a trained avatar: its subject and trigger in the prompts, its LoRA file."""
    avatar = _owned_avatar(session, owner_id, params["avatar_id"])
    lora = avatar.lora
    if lora is None or lora.state != LoraState.READY or not lora.file_hash:
        raise ParamError(f"The avatar '{avatar.name}' is not trained yet: train it first.")
    if avatar.profile != params["profile"]:
        raise ParamError(f"The avatar '{avatar.name}' was trained on the {avatar.profile} profile; this studio runs {params['profile']}.")
    pinned = {"lora_id": lora.id, "name": lora.name, "file_hash": lora.file_hash, "weight": 1.0}
    return bind_avatar(params, load_portrait_catalogue(), avatar.subject, AVATAR_TRIGGER, pinned)


def _check_faces(session: Session, owner_id: str, params: dict, job_id: str) -> dict:
    avatar = _owned_avatar(session, owner_id, params["avatar_id"])
    avatar.check_job_id = job_id
    for photo in avatar.photos:
        photo.verdict = PhotoVerdict.PENDING
    return params


@dataclass(frozen=True)
class AvatarRequest:
    """A job about one avatar: checking its photos."""

    avatar_id: str
    profile: str

    def to_dict(self) -> dict:
        return {"avatar_id": self.avatar_id, "profile": self.profile}


def _avatar_request(raw: dict, profile: Profile) -> AvatarRequest:
    if not raw.get("avatar_id"):
        raise ParamError("Name the avatar (avatar_id).")
    return AvatarRequest(str(raw["avatar_id"]), profile.name)


@dataclass(frozen=True)
class LoraCheckRequest:
    lora_id: str

    def to_dict(self) -> dict:
        return {"lora_id": self.lora_id}


def _lora_check_request(raw: dict) -> LoraCheckRequest:
    if not raw.get("lora_id"):
        raise ParamError("Name the uploaded LoRA to check (lora_id).")
    return LoraCheckRequest(str(raw["lora_id"]))


JOB_KINDS = {
    "generate": JobKind(resolve=lambda raw, profile, catalog: resolve_generation(raw, profile, catalog.styles),
                        prepare=_pin_loras),
    "img2img": JobKind(resolve=lambda raw, profile, catalog: resolve_img2img(raw, profile, catalog.styles),
                       prepare=_img2img_source),
    "chat_turn": JobKind(resolve=lambda raw, profile, catalog: resolve_chat_turn(raw, profile, catalog.styles),
                         prepare=_start_turn,
                         withdraw=lambda session, params: conversations.withdraw_turn(session, params["turn_id"])),
    "cutout": JobKind(resolve=lambda raw, profile, catalog: resolve_cutout(raw), prepare=_cutout_source),
    "product": JobKind(resolve=lambda raw, profile, catalog: resolve_product(raw, profile, catalog.scenes),
                       prepare=_product_sources),
    "game_asset": JobKind(resolve=lambda raw, profile, catalog: resolve_game_asset(raw, profile, catalog.styles, catalog.asset_types),
                          prepare=_pin_loras),
    "train_lora": JobKind(resolve=lambda raw, profile, catalog: resolve_training(raw, profile),
                          prepare=_start_training, withdraw=_unqueued(LoraState.FAILED)),
    "lora_check": JobKind(resolve=lambda raw, profile, catalog: _lora_check_request(raw),
                          prepare=_start_check, withdraw=_unqueued(LoraState.REJECTED)),
    "identity": JobKind(resolve=lambda raw, profile, catalog: resolve_identity(raw, profile, catalog.portraits),
                        prepare=_face_photos),
    "avatar_batch": JobKind(resolve=lambda raw, profile, catalog: resolve_avatar_batch(raw, profile, catalog.portraits),
                            prepare=_face_photos),
    "photo_template": JobKind(resolve=lambda raw, profile, catalog: resolve_photo_templates(raw, profile, catalog.portraits),
                              prepare=_pin_avatar),
    "train_avatar": JobKind(resolve=lambda raw, profile, catalog: resolve_training(raw, profile),
                            prepare=_start_training, withdraw=_unqueued(LoraState.FAILED)),
    "face_check": JobKind(resolve=lambda raw, profile, catalog: _avatar_request(raw, profile), prepare=_check_faces),
}


@dataclass
class JobView:
    """A job as the UI and the API show it."""

    id: str
    kind: str
    state: str
    progress: float
    stage: str
    error: str | None
    asset_ids: list[str]
    params: dict
    attempts: int

    @property
    def finished(self) -> bool:
        return self.state in JobState.FINISHED

    @classmethod
    def of(cls, job: Job) -> "JobView":
        return cls(
            id=job.id, kind=job.kind, state=job.state, progress=job.progress, stage=job.stage, error=job.error,
            asset_ids=[a.id for a in job.assets if a.stage == "final"], params=job.params, attempts=job.attempts,
        )


class StudioClient:
    def __init__(self, db: Database, celery: Celery, profile: Profile, styles: dict[str, Style],
                 scenes: dict[str, Scene] | None = None, style_categories: dict[str, StyleCategory] | None = None,
                 quota: Quota | None = None):
        self.db, self.celery, self.profile, self.styles, self.quota = db, celery, profile, styles, quota
        self.catalog = Catalog(styles, scenes if scenes is not None else load_scenes(), load_asset_types(),
                               load_portrait_catalogue())
        categories = style_categories if style_categories is not None else load_catalogue().categories
        self.style_categories = categories
        self.options = FormOptions.of(profile, self.catalog, categories)
        self.conversations = ConversationClient(db)

    def validate(self, kind: str, raw_params: dict) -> dict:
        """The request's parameters checked and completed, as a job of ``kind`` would store them (before the
        rows it names are looked up); raises InvalidRequest with what to correct."""
        if kind not in JOB_KINDS:
            raise InvalidRequest(f"Unknown job kind {kind!r}. Known kinds: {', '.join(JOB_KINDS)}.")
        try:
            return JOB_KINDS[kind].resolve(raw_params, self.profile, self.catalog).to_dict()
        except ParamError as exc:
            raise InvalidRequest(str(exc)) from exc

    def check_limits(self, owner_id: str, params: dict) -> None:
        """Raise OverLimit when the job would take the user past a limit."""
        if self.quota is None:
            return
        limits = self.quota.limits
        images = images_requested(params)
        if images > limits.max_images_per_job:
            raise OverLimit(f"This job would make {images} pictures; one job makes at most {limits.max_images_per_job} "
                            "for you. Ask for fewer images, variants, scenes or styles.", status=422)
        with self.db.session() as session:
            waiting = repo.count_owner_jobs(session, owner_id, (JobState.QUEUED, JobState.RUNNING))
        if waiting >= limits.max_queued_jobs:
            raise OverLimit(f"You have {waiting} jobs waiting or running, the most you can have at once. "
                            "Wait for some to finish, or cancel some, then submit this again.")
        try:
            self.quota.check(owner_id)
        except LimitExceeded as exc:
            raise OverLimit(str(exc), status=exc.status) from None

    def submit(self, owner_id: str, kind: str, raw_params: dict, origin: str = "api") -> JobView:
        """Validate, check the user's limits, insert the job row, send the task. Raises InvalidRequest, OverLimit
        or QueueUnavailable."""
        params = self.validate(kind, raw_params)
        self.check_limits(owner_id, params)
        spec, task = JOB_KINDS[kind], JOB_TASKS[kind]
        with self.db.session() as session:
            # Fair shares: a job's priority is how many of its owner's jobs already wait on its queue, so one
            # user's long backlog does not hold back another's first job (brokers with priorities: Redis).
            backlog = repo.count_owner_jobs(session, owner_id, (JobState.QUEUED,),
                                            [k for k, t in JOB_TASKS.items() if TASK_QUEUES[t] == TASK_QUEUES[task]])
            job = repo.create_job(session, owner_id, kind, params, self.profile.name, origin, commit=False)
            try:
                if spec.prepare:
                    job.params = params = spec.prepare(session, owner_id, params, job.id)
            except (ConversationError, ParamError) as exc:
                session.rollback()
                raise InvalidRequest(str(exc)) from exc
            session.commit()
        try:
            self.celery.send_task(task, args=[job.id], task_id=job.id, queue=TASK_QUEUES[task], retry=False,
                                  priority=min(backlog, LOWEST_PRIORITY))
        except (OperationalError, OSError) as exc:
            log.error("broker unreachable, job %s withdrawn: %s", job.id, exc)
            with self.db.session() as session:
                if spec.withdraw:
                    spec.withdraw(session, params)
                session.delete(session.merge(job))
                session.commit()
            raise QueueUnavailable(
                "The job queue is unreachable, so the job was not created. Check that the broker "
                f"({self.celery.conf.broker_url.split('://')[0]}) is running and try again."
            ) from exc
        return JobView(id=job.id, kind=kind, state=job.state, progress=0.0, stage=job.stage, error=None,
                       asset_ids=[], params=params, attempts=0)

    def job(self, owner_id: str, job_id: str) -> JobView | None:
        with self.db.session() as session:
            job = repo.get_job(session, job_id, owner_id)
            return JobView.of(job) if job is not None else None

    def jobs(self, owner_id: str, states: tuple[str, ...] | list[str] = (), limit: int = 50) -> list[JobView]:
        """The user's jobs, newest first, optionally only those in ``states``."""
        with self.db.session() as session:
            return [JobView.of(job) for job in repo.owner_jobs(session, owner_id, tuple(states), limit)]

    def cancel(self, owner_id: str, job_id: str) -> JobView | None:
        with self.db.session() as session:
            job = repo.get_job(session, job_id, owner_id)
            return JobView.of(repo.request_cancel(session, job)) if job is not None else None

    def health(self) -> dict:
        with self.db.session() as session:
            workers = repo.live_workers(session, WORKER_TIMEOUT)
            queued = repo.count_jobs(session, JobState.QUEUED)
            running = repo.count_jobs(session, JobState.RUNNING)
        return {
            "profile": self.profile.name,
            "profile_label": self.profile.label,
            "images_are_noise": self.profile.is_noise,
            "workers": [
                {"hostname": w.hostname, "queues": w.queues, "profile": w.profile, "model_loads": w.model_loads,
                 "last_seen": w.last_seen.isoformat() + "Z"}
                for w in workers
            ],
            "queue_depth": queued,
            "running": running,
        }


@dataclass
class TurnView:
    """A conversation turn as the chat tab and the API show it."""

    id: str
    parent_id: str | None
    text: str
    tweak: dict | None
    settings: dict
    created_at: str
    job: JobView | None
    refined: dict | None  # engine.refiner.RefinedTurn as a dict: intent, prompt, mapping, reply, source, fallback...
    seed: int | None
    candidates: list[dict]  # [{"asset_id", "score", "seed", "index"}], best score first

    @classmethod
    def of(cls, turn: Turn) -> "TurnView":
        return cls(id=turn.id, parent_id=turn.parent_id, text=turn.text, tweak=turn.tweak, settings=turn.settings,
                   created_at=turn.created_at.isoformat() + "Z", job=JobView.of(turn.job) if turn.job else None,
                   refined=turn.refined, seed=turn.seed, candidates=turn.candidates)


@dataclass
class ConversationView:
    id: str
    title: str
    head_turn_id: str | None
    created_at: str
    updated_at: str
    path: list[str]  # turn ids from the first message to the head: the conversation as it reads now
    turns: list[TurnView]  # every turn of the tree, oldest first

    @classmethod
    def of(cls, session: Session, conversation: Conversation) -> "ConversationView":
        head = conversations.get_turn(session, conversation.head_turn_id) if conversation.head_turn_id else None
        return cls(id=conversation.id, title=conversation.title, head_turn_id=conversation.head_turn_id,
                   created_at=conversation.created_at.isoformat() + "Z", updated_at=conversation.updated_at.isoformat() + "Z",
                   path=[t.id for t in conversations.turn_path(session, head)],
                   turns=[TurnView.of(t) for t in conversation.turns])

    def turn(self, turn_id: str) -> TurnView | None:
        return next((t for t in self.turns if t.id == turn_id), None)


class ConversationClient:
    """Reads and moves in a user's conversations: list, open, rename, undo, branch, delete."""

    def __init__(self, db: Database):
        self.db = db

    def list(self, owner_id: str) -> list[dict]:
        with self.db.session() as session:
            return [{"id": c.id, "title": c.title, "updated_at": c.updated_at.isoformat() + "Z", "head_turn_id": c.head_turn_id}
                    for c in conversations.list_conversations(session, owner_id)]

    def get(self, owner_id: str, conversation_id: str) -> ConversationView | None:
        with self.db.session() as session:
            conversation = conversations.get_conversation(session, conversation_id, owner_id)
            return ConversationView.of(session, conversation) if conversation else None

    def _change(self, owner_id: str, conversation_id: str, change) -> ConversationView | None:
        with self.db.session() as session:
            conversation = conversations.get_conversation(session, conversation_id, owner_id)
            if conversation is None:
                return None
            try:
                change(session, conversation)
            except ConversationError as exc:
                raise InvalidRequest(str(exc)) from exc
            return ConversationView.of(session, conversation)

    def rename(self, owner_id: str, conversation_id: str, title: str) -> ConversationView | None:
        return self._change(owner_id, conversation_id, lambda s, c: conversations.rename(s, c, title))

    def undo(self, owner_id: str, conversation_id: str) -> ConversationView | None:
        return self._change(owner_id, conversation_id, conversations.undo)

    def branch(self, owner_id: str, conversation_id: str, turn_id: str | None) -> ConversationView | None:
        """Continue from ``turn_id``: the next message becomes a new branch after it."""
        return self._change(owner_id, conversation_id, lambda s, c: conversations.move_head(s, c, turn_id))

    def delete(self, owner_id: str, conversation_id: str) -> bool:
        with self.db.session() as session:
            conversation = conversations.get_conversation(session, conversation_id, owner_id)
            if conversation is None:
                return False
            conversations.delete_conversation(session, conversation)
            return True
