"""Queries on jobs, assets and workers. Every read of a user's work filters by its owner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.models import (
    Asset,
    Avatar,
    AvatarPhoto,
    Job,
    JobState,
    LoraState,
    Material,
    TrainedModel,
    User,
    UserTemplate,
    WorkerRecord,
    utcnow,
)

LOCAL_USER = "local"


def ensure_user(session: Session, name: str = LOCAL_USER) -> User:
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name)
        session.add(user)
        try:
            session.commit()
        except IntegrityError:  # another process created it first
            session.rollback()
            user = session.scalar(select(User).where(User.name == name))
    return user


def create_job(session: Session, owner_id: str, kind: str, params: dict, profile: str, origin: str,
               commit: bool = True) -> Job:
    job = Job(owner_id=owner_id, kind=kind, params=params, profile=profile, origin=origin)
    session.add(job)
    session.commit() if commit else session.flush()
    return job


def get_job(session: Session, job_id: str, owner_id: str | None = None) -> Job | None:
    query = select(Job).where(Job.id == job_id)
    if owner_id is not None:
        query = query.where(Job.owner_id == owner_id)
    return session.scalar(query)


def owner_jobs(session: Session, owner_id: str, states: tuple[str, ...] = (), limit: int = 50) -> list[Job]:
    query = select(Job).where(Job.owner_id == owner_id)
    if states:
        query = query.where(Job.state.in_(states))
    return list(session.scalars(query.order_by(Job.created_at.desc()).limit(limit)))


def claim_job(session: Session, job_id: str, worker: str, live_within: timedelta | None = None) -> Job | None:
    """Mark a job running for this delivery; None when there is nothing (more) to do for it, or when another
    worker that reported within ``live_within`` is running it (it took the job into a batch, or the broker
    delivered the message twice): that worker finishes it, and if it dies the job is handed on."""
    job = session.get(Job, job_id, with_for_update=True)
    if job is None or job.state in JobState.FINISHED:
        session.rollback()
        return None
    if live_within is not None and job.state == JobState.RUNNING and job.worker not in (None, worker):
        record = session.get(WorkerRecord, job.worker)
        if record is not None and record.last_seen >= utcnow() - live_within:
            session.rollback()
            return None
    now = utcnow()
    if job.cancel_requested:
        job.state, job.stage, job.finished_at = JobState.CANCELLED, "cancelled", now
        # Cancelled while its worker was down: nothing runs again to say how it ended.
        release_loras(session, job.id, "Cancelled before it finished.")
        session.commit()
        return None
    job.state, job.worker, job.attempts = JobState.RUNNING, worker, job.attempts + 1
    job.started_at = job.started_at or now
    job.heartbeat_at = now
    job.stage = "starting" if job.attempts == 1 else f"restarting (attempt {job.attempts})"
    session.commit()
    return job


def batch_candidates(session: Session, kind: str, profile: str, exclude_id: str, limit: int) -> list[Job]:
    """Waiting jobs of ``kind`` on ``profile``, oldest first: those that could join a batch."""
    return list(session.scalars(
        select(Job).where(Job.kind == kind, Job.profile == profile, Job.state == JobState.QUEUED, Job.id != exclude_id,
                          Job.cancel_requested.is_(False)).order_by(Job.created_at).limit(limit)))


def claim_into_batch(session: Session, job_id: str, worker: str, stage: str) -> bool:
    """Take a waiting job into a batch this worker runs; False when it is no longer waiting (taken, cancelled)."""
    now = utcnow()
    changed = session.execute(
        update(Job).where(Job.id == job_id, Job.state == JobState.QUEUED, Job.cancel_requested.is_(False))
        .values(state=JobState.RUNNING, worker=worker, attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now),
                heartbeat_at=now, stage=stage)
    ).rowcount
    session.commit()
    return changed == 1


def record_progress(session: Session, job_id: str, fraction: float, stage: str) -> bool:
    """Store progress and return whether the job should stop (cancel asked, or no longer running)."""
    cancel = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.RUNNING)
        .values(progress=fraction, stage=stage, heartbeat_at=utcnow())
        .returning(Job.cancel_requested)
    ).scalar_one_or_none()
    session.commit()
    return cancel is None or cancel


def finish_job(session: Session, job_id: str, state: str, stage: str, error: str | None = None) -> None:
    values = dict(state=state, stage=stage, error=error, finished_at=utcnow())
    if state == JobState.SUCCEEDED:
        values["progress"] = 1.0
    session.execute(update(Job).where(Job.id == job_id).values(**values))
    if state != JobState.SUCCEEDED:
        # A train or check job that ended before its task could record the outcome (a worker without the
        # profile, a base model that does not load) would otherwise leave its LoRA busy for ever.
        release_loras(session, job_id, error or stage)
    session.commit()


def release_loras(session: Session, job_id: str, note: str) -> None:
    """Mark failed a LoRA that still waits on this (ending) job; its train or check task has not said how."""
    session.execute(update(TrainedModel).where(TrainedModel.job_id == job_id, TrainedModel.state.in_(LoraState.BUSY))
                    .values(state=LoraState.FAILED, state_note=note, updated_at=utcnow()))


def request_cancel(session: Session, job: Job) -> Job:
    """A queued job is cancelled at once; a running one stops at its next step; a finished one stays."""
    if job.state in JobState.FINISHED:
        return job
    job.cancel_requested = True
    if job.state == JobState.QUEUED:
        job.state, job.stage, job.finished_at = JobState.CANCELLED, "cancelled", utcnow()
        # A LoRA waiting on this job would otherwise say "training" for ever.
        release_loras(session, job.id, "Cancelled before it started.")
    session.commit()
    return job


def stale_running_jobs(session: Session, worker: str) -> list[Job]:
    """Jobs this worker name was running when it died: their broker message died with it."""
    return list(session.scalars(select(Job).where(Job.state == JobState.RUNNING, Job.worker == worker)))


def orphaned_jobs(session: Session, timeout: timedelta) -> list[Job]:
    """Running jobs whose worker has not reported for ``timeout``."""
    live = select(WorkerRecord.hostname).where(WorkerRecord.last_seen >= utcnow() - timeout)
    return list(session.scalars(select(Job).where(Job.state == JobState.RUNNING, Job.worker.not_in(live))))


def requeue_orphaned_job(session: Session, job_id: str, worker: str) -> bool:
    """Put a dead worker's job back to queued; False when another worker already did (or it moved on)."""
    changed = session.execute(
        update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker == worker)
        .values(state=JobState.QUEUED, stage=f"queued again: worker {worker} stopped answering")
    ).rowcount
    session.commit()
    return changed == 1


def store_asset(session: Session, **fields) -> Asset:
    """Insert an asset once per (job, stage, output index): a redelivered job reuses the row."""
    existing = session.scalar(
        select(Asset).where(
            Asset.job_id == fields["job_id"], Asset.stage == fields["stage"], Asset.output_index == fields["output_index"]
        )
    )
    if existing is not None:
        return existing
    asset = Asset(**fields)
    session.add(asset)
    session.commit()
    return asset


@dataclass
class AssetFilter:
    origin: str | None = None
    favourites_only: bool = False
    since: datetime | None = None
    search: str | None = None
    include_stages: bool = False
    limit: int = 100
    offset: int = 0


def list_assets(session: Session, owner_id: str, flt: AssetFilter) -> list[Asset]:
    query = select(Asset).where(Asset.owner_id == owner_id)
    if not flt.include_stages:
        query = query.where(Asset.stage == "final")
    if flt.origin:
        query = query.where(Asset.origin == flt.origin)
    if flt.favourites_only:
        query = query.where(Asset.favourite.is_(True))
    if flt.since:
        query = query.where(Asset.created_at >= flt.since)
    if flt.search:
        for word in flt.search.split():
            # The word as typed: % and _ in it are no wildcards (a search for "50%" finds "50%", not "500").
            literal = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(Asset.prompt.ilike(f"%{literal}%", escape="\\"))
    query = query.order_by(Asset.created_at.desc(), Asset.output_index).limit(flt.limit).offset(flt.offset)
    return list(session.scalars(query))


def job_assets(session: Session, job_id: str, owner_id: str) -> list[Asset]:
    """A job's images: the final ones in output order, then any kept stage images."""
    assets = session.scalars(select(Asset).where(Asset.job_id == job_id, Asset.owner_id == owner_id))
    return sorted(assets, key=lambda a: (a.stage != "final", a.stage, a.output_index))


def child_assets(session: Session, parent_id: str, owner_id: str) -> list[Asset]:
    """The assets made from one asset: a product picture's layers and exports."""
    query = select(Asset).where(Asset.parent_id == parent_id, Asset.owner_id == owner_id)
    return list(session.scalars(query.order_by(Asset.created_at, Asset.stage)))


def get_asset(session: Session, asset_id: str, owner_id: str) -> Asset | None:
    return session.scalar(select(Asset).where(Asset.id == asset_id, Asset.owner_id == owner_id))


def set_favourite(session: Session, asset: Asset, favourite: bool) -> Asset:
    asset.favourite = favourite
    session.commit()
    return asset


def delete_asset(session: Session, asset: Asset) -> str | None:
    """Delete the row; return the file hash when no other asset uses that file (the caller removes it)."""
    digest = asset.file_hash
    session.execute(update(Asset).where(Asset.parent_id == asset.id).values(parent_id=None))
    session.execute(delete(Asset).where(Asset.id == asset.id))
    session.commit()
    return digest if unused_files(session, [digest]) else None


def unused_files(session: Session, digests: list[str]) -> list[str]:
    """Those of ``digests`` no row refers to any more (see ``file_references``)."""
    used = {reference.digest for reference in file_references(session, set(digests))}
    return [d for d in dict.fromkeys(digests) if d not in used]


@dataclass(frozen=True)
class FileReference:
    table: str
    row_id: str
    column: str  # the hash column, or "dataset" for a LoRA's training image
    digest: str


# Every column that holds a stored file's hash: the one list of what keeps a file.
FILE_COLUMNS = (Asset.file_hash, Material.file_hash, Material.mask_hash, TrainedModel.file_hash, AvatarPhoto.file_hash,
                AvatarPhoto.crop_hash, UserTemplate.preview_hash)


def file_references(session: Session, digests: set[str] | None = None) -> list[FileReference]:
    """The rows that refer to stored files (only to those of ``digests`` when given): assets, materials (the
    photo and its mask), LoRAs (the weights and, in their dataset, the training images), avatar photos (the
    photo and its face crop) and user templates (the preview, which outlives the result it was saved from)."""
    found = []
    for column in FILE_COLUMNS:
        query = select(column.class_.id, column).where(column.is_not(None))
        if digests is not None:
            query = query.where(column.in_(digests))
        found += [FileReference(column.class_.__tablename__, row_id, column.key, digest)
                  for row_id, digest in session.execute(query)]
    for row_id, dataset in session.execute(select(TrainedModel.id, TrainedModel.dataset)):
        found += [FileReference(TrainedModel.__tablename__, row_id, "dataset", item["hash"])
                  for item in dataset if digests is None or item["hash"] in digests]
    return found


def _owned_digests(owner_id: str):
    """One query per column of FILE_COLUMNS: the content hashes of the files an owner's rows refer to."""
    queries = []
    for column in FILE_COLUMNS:
        query = select(column).where(column.is_not(None))
        if column.class_ is AvatarPhoto:  # an avatar's photos belong to the avatar's owner
            query = query.join(Avatar, Avatar.id == AvatarPhoto.avatar_id).where(Avatar.owner_id == owner_id)
        else:
            query = query.where(column.class_.owner_id == owner_id)
        queries.append(query)
    return queries


def may_read_file(session: Session, owner_id: str, digest: str) -> bool:
    """Whether a stored file is this user's to see: one of their rows refers to it, or it is the preview of a
    template shared with everyone."""
    for query in _owned_digests(owner_id):
        column = query.selected_columns[0]
        if session.scalar(query.where(column == digest).limit(1)) is not None:
            return True
    if session.scalar(select(UserTemplate.id).where(UserTemplate.preview_hash == digest, UserTemplate.shared.is_(True)).limit(1)):
        return True
    # A LoRA's training pictures are listed in its dataset, not in a column of their own.
    return any(item["hash"] == digest for dataset in session.scalars(
        select(TrainedModel.dataset).where(TrainedModel.owner_id == owner_id)) for item in dataset)


def owner_digests(session: Session, owner_id: str) -> set[str]:
    """The content hashes of every file an owner's rows refer to (their storage quota counts each once)."""
    digests = set()
    for query in _owned_digests(owner_id):
        digests.update(session.scalars(query))
    for dataset in session.scalars(select(TrainedModel.dataset).where(TrainedModel.owner_id == owner_id)):
        digests.update(item["hash"] for item in dataset)
    return digests


def heartbeat(session: Session, hostname: str, queues: list[str], profile: str, pid: int, model_loads: int | None = None) -> None:
    """Record that a worker is alive; ``model_loads`` is left as it was when None."""
    record = session.get(WorkerRecord, hostname)
    if record is None:
        record = WorkerRecord(hostname=hostname, queues=queues, profile=profile, pid=pid, started_at=utcnow())
        session.add(record)
    record.queues, record.profile, record.pid = queues, profile, pid
    if model_loads is not None:
        record.model_loads = model_loads
    record.last_seen = utcnow()
    session.commit()


def live_workers(session: Session, within: timedelta) -> list[WorkerRecord]:
    return list(session.scalars(select(WorkerRecord).where(WorkerRecord.last_seen >= utcnow() - within)))


def count_owner_jobs(session: Session, owner_id: str, states: tuple[str, ...], kinds: list[str] | None = None) -> int:
    query = select(func.count()).select_from(Job).where(Job.owner_id == owner_id, Job.state.in_(states))
    if kinds is not None:
        query = query.where(Job.kind.in_(kinds))
    return session.scalar(query)


def count_jobs(session: Session, state: str) -> int:
    return session.scalar(select(func.count()).select_from(Job).where(Job.state == state))
