"""A user's digital avatars: the photo studio's face photos (checked per photo), their face crops and
identity embeddings, and the identity LoRA trained on them.

Uploads are checked here for what needs no model (unreadable, not a photo, too small, duplicates, over
the limit); a ``face_check`` job then checks each face (one face, large, sharp, the same person) and
stores the crops and embeddings. Every query filters by owner; deleting an avatar deletes every file of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.loras import ImageVerdict, LoraView, check_training_images, refused_summary
from storage.models import Asset, Avatar, AvatarPhoto, Job, JobState, LoraState, PhotoVerdict, TrainedModel
from storage.quota import Quota

MIN_PHOTOS, MAX_PHOTOS = 5, 20
MIN_PHOTO_SIDE = 256
# A photo's 64×64 thumbnail has thousands of colours; a logo, drawing or screenshot has a few dozen.
MIN_PHOTO_COLOURS = 64
MAX_NAME_CHARS = 120
# The identity LoRA's trigger: a rare token the base model has no meaning for (as DreamBooth uses).
AVATAR_TRIGGER = "sks"


class AvatarError(ValueError):
    """A request about avatars a user must correct; the message says how."""


@dataclass
class PhotoView:
    id: str
    name: str
    verdict: str
    problems: list[str]
    file_hash: str
    crop_hash: str | None
    face_box: list | None
    sharpness: float | None
    similarity: float | None

    @classmethod
    def of(cls, row: AvatarPhoto) -> "PhotoView":
        return cls(id=row.id, name=row.name, verdict=row.verdict, problems=list(row.problems), file_hash=row.file_hash,
                   crop_hash=row.crop_hash, face_box=row.face_box, sharpness=row.sharpness, similarity=row.similarity)

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "verdict": self.verdict, "problems": self.problems,
                "face_box": self.face_box, "sharpness": self.sharpness, "similarity": self.similarity}


@dataclass
class AvatarView:
    id: str
    name: str
    subject: str
    profile: str
    check_job_id: str | None
    created_at: datetime
    photos: list[PhotoView]
    lora: LoraView | None
    check_ended: bool = False  # the face_check job has ended (succeeded, failed or cancelled)
    check_error: str | None = None

    @classmethod
    def of(cls, session: Session, row: Avatar) -> "AvatarView":
        check = session.get(Job, row.check_job_id) if row.check_job_id else None
        return cls(id=row.id, name=row.name, subject=row.subject, profile=row.profile, check_job_id=row.check_job_id,
                   created_at=row.created_at, photos=[PhotoView.of(p) for p in row.photos],
                   lora=LoraView.of(row.lora) if row.lora is not None else None,
                   check_ended=check is not None and check.state in JobState.FINISHED,
                   check_error=(check.error or f"the check was {check.state}")
                   if check is not None and check.state in (JobState.FAILED, JobState.CANCELLED) else None)

    @property
    def usable(self) -> list[PhotoView]:
        return [p for p in self.photos if p.verdict == PhotoVerdict.USABLE]

    @property
    def state(self) -> str:
        """checking, check failed, needs photos, checked (ready to train), training, ready (trained) or failed."""
        if self.lora is not None and self.lora.state in (LoraState.READY, LoraState.TRAINING, LoraState.FAILED):
            return {LoraState.READY: "ready", LoraState.TRAINING: "training", LoraState.FAILED: "failed"}[self.lora.state]
        if any(p.verdict == PhotoVerdict.PENDING for p in self.photos):
            # A check that ended and left photos unchecked failed or was cancelled: they can be checked again.
            return "check failed" if self.check_ended else "checking"
        return "checked" if len(self.usable) >= MIN_PHOTOS else "needs photos"

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "subject": self.subject, "profile": self.profile, "state": self.state,
                "usable_photos": len(self.usable), "photos": [p.to_dict() for p in self.photos],
                "lora_id": self.lora.id if self.lora else None, "check_job_id": self.check_job_id,
                "training_job_id": self.lora.job_id if self.lora else None,
                "lora_note": self.lora.state_note if self.lora else None, "check_error": self.check_error, "created_at": self.created_at.isoformat() + "Z"}


def _colours(image: Image.Image) -> int:
    thumbnail = image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)
    return len(thumbnail.getcolors(64 * 64))


def check_face_photos(files: list[tuple[str, bytes]], max_photos: int = MAX_PHOTOS,
                      max_bytes: int = 50_000_000) -> list[ImageVerdict]:
    """The checks that need no model, per photo: readable, a photo (not a drawing or screenshot), at least
    MIN_PHOTO_SIDE px, not a duplicate of another upload, within the limit of ``max_photos``."""
    images = [(name, data) for name, data in files if not name.lower().endswith(".txt")]
    verdicts = check_training_images(images[:max_photos], MIN_PHOTO_SIDE, max_bytes=max_bytes)
    for verdict in verdicts:
        if verdict.ok and _colours(verdict.upload.image) < MIN_PHOTO_COLOURS:
            verdict.ok, verdict.upload = False, None
            verdict.reason = "Not a photo: it has too few colours for one (a drawing, logo or screenshot?). Use a camera photo."
    verdicts += [ImageVerdict(name=name, ok=False, reason=f"Over the limit: at most {max_photos} photos per avatar, so this "
                              f"one (number {i}) was left out. Keep the {max_photos} best.")
                 for i, (name, _) in enumerate(images[max_photos:], start=max_photos + 1)]
    return verdicts


class AvatarLibrary:
    """Reads and changes one user's avatars; every query filters by owner."""

    def __init__(self, db: Database, files: FileStore, quota: Quota | None = None):
        self.db, self.files, self.quota = db, files, quota

    def _row(self, session: Session, owner_id: str, avatar_id: str) -> Avatar:
        row = session.get(Avatar, avatar_id)
        if row is None or row.owner_id != owner_id:
            raise LookupError(f"No avatar {avatar_id} (it may have been deleted).")
        return row

    def create(self, owner_id: str, name: str, subject: str, profile: str, verdicts: list[ImageVerdict]) -> AvatarView:
        """Store the photos that passed the upload checks (files first), then the avatar's rows; its faces
        are checked by a ``face_check`` job."""
        usable = [v for v in verdicts if v.ok]
        if len(usable) < MIN_PHOTOS:
            refused = len(verdicts) - len(usable)
            raise AvatarError(f"{len(usable)} usable photo(s){f' ({refused} refused)' if refused else ''}: a digital avatar "
                              f"needs at least {MIN_PHOTOS}. Add more photos of the person.{refused_summary(verdicts)}")
        pngs = [v.upload.png_bytes() for v in usable]
        if self.quota is not None:
            self.quota.check(owner_id, sum(map(len, pngs)))
        stored = [(v, self.files.put(png, "png")) for v, png in zip(usable, pngs)]
        with self.db.session() as session:
            row = Avatar(owner_id=owner_id, name=" ".join(name.split())[:MAX_NAME_CHARS] or "My avatar",
                         subject=" ".join(subject.split())[:80], profile=profile)
            row.photos = [AvatarPhoto(position=i, name=v.name[:255], file_hash=digest, width=v.upload.image.width,
                                      height=v.upload.image.height) for i, (v, digest) in enumerate(stored)]
            session.add(row)
            session.commit()
            return AvatarView.of(session, row)

    def list(self, owner_id: str) -> list[AvatarView]:
        with self.db.session() as session:
            rows = session.scalars(select(Avatar).where(Avatar.owner_id == owner_id).order_by(Avatar.created_at.desc()))
            return [AvatarView.of(session, row) for row in rows]

    def get(self, owner_id: str, avatar_id: str) -> AvatarView | None:
        with self.db.session() as session:
            row = session.get(Avatar, avatar_id)
            return AvatarView.of(session, row) if row is not None and row.owner_id == owner_id else None

    def photo(self, owner_id: str, avatar_id: str, photo_id: str, crop: bool = False):
        """The path of one of the avatar's photos (or its face crop)."""
        with self.db.session() as session:
            row = session.get(AvatarPhoto, photo_id)
            if row is None or row.avatar_id != avatar_id or row.avatar.owner_id != owner_id:
                raise LookupError(f"No photo {photo_id} in this avatar.")
            digest = row.crop_hash if crop else row.file_hash
            if digest is None:
                raise LookupError("This photo has no face crop (no single face was found in it).")
            return self.files.path(digest, "png")

    def delete(self, owner_id: str, avatar_id: str) -> None:
        """Remove the avatar with its photos, crops, embeddings, identity LoRA and training samples: rows
        first, then every file nothing else uses."""
        with self.db.session() as session:
            row = self._row(session, owner_id, avatar_id)
            lora = row.lora
            if lora is not None and lora.state in LoraState.BUSY:
                raise AvatarError("This avatar is still training: cancel its training job first.")
            files = [(p.file_hash, "png") for p in row.photos] + [(p.crop_hash, "png") for p in row.photos if p.crop_hash]
            session.delete(row)
            if lora is not None:
                files += [(lora.file_hash, "safetensors")] if lora.file_hash else []
                files += [(item["hash"], "png") for item in lora.dataset]
                samples = session.scalars(select(Asset).where(Asset.owner_id == owner_id, Asset.stage == "sample",
                                                              Asset.job_id == lora.job_id)).all() if lora.job_id else []
                files += [(a.file_hash, "png") for a in samples]
                for sample in samples:
                    session.delete(sample)
                session.delete(lora)
            session.commit()
            unused = set(repo.unused_files(session, [digest for digest, _ in files]))
        for digest, extension in files:
            if digest in unused:
                self.files.delete(digest, extension)

    def training_lora(self, owner_id: str, avatar_id: str, caption: str, base_model: str) -> str:
        """The avatar's identity LoRA row, made (or refreshed) with the usable face crops as its training
        set, ready for a ``train_avatar`` job; returns its id."""
        with self.db.session() as session:
            row = self._row(session, owner_id, avatar_id)
            view = AvatarView.of(session, row)
            if view.state in ("checking", "check failed"):
                raise AvatarError("The photos are still being checked: wait for the check to finish." if view.state == "checking"
                                  else "The photo check did not finish: check the photos again first.")
            if len(view.usable) < MIN_PHOTOS:
                raise AvatarError(f"Only {len(view.usable)} photo(s) passed the checks; training needs at least {MIN_PHOTOS}. "
                                  "Make a new avatar with more good photos.")
            if row.lora is not None and row.lora.state in LoraState.BUSY:
                raise AvatarError("This avatar is already training.")
            dataset = [{"hash": p.crop_hash, "name": p.name, "caption": caption, "width": 0, "height": 0} for p in view.usable]
            if row.lora is None:
                row.lora = TrainedModel(owner_id=owner_id, name=f"Avatar: {row.name}", kind="avatar", profile=row.profile,
                                        base_model=base_model, trigger=AVATAR_TRIGGER, state=LoraState.NEW)
            row.lora.dataset, row.lora.state, row.lora.state_note = dataset, LoraState.NEW, None
            session.commit()
            return row.lora.id

    # The worker's side.

    def pending_photos(self, avatar_id: str) -> list[tuple[str, str]]:
        """(photo id, file hash) of every photo of the avatar, to check."""
        with self.db.session() as session:
            row = session.get(Avatar, avatar_id)
            return [(p.id, p.file_hash) for p in row.photos] if row is not None else []

    def record_check(self, avatar_id: str, results: dict[str, dict], identity: list[float] | None) -> None:
        """Store each photo's verdict (its crop file already stored) and the avatar's identity."""
        with self.db.session() as session:
            row = session.get(Avatar, avatar_id)
            if row is None:
                return
            for photo in row.photos:
                result = results.get(photo.id)
                if result is not None:
                    for key, value in result.items():
                        setattr(photo, key, value)
            row.identity = identity
            session.commit()

    def identity(self, owner_id: str, avatar_id: str) -> list[float] | None:
        with self.db.session() as session:
            return self._row(session, owner_id, avatar_id).identity
