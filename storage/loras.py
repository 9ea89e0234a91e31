"""A user's LoRAs: style LoRAs trained here from their images, and LoRA files they upload.

Uploads are accepted only as safetensors (a pickle can run code when loaded), within a size limit, and
stay "checking" until a worker has matched their keys against the base model. Training images are checked
here (unreadable, too small, duplicates) before a training job is made.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.images import ImageUploadError, UploadedImage, read_image_upload
from storage.models import LoraState, TrainedModel, utcnow
from storage.quota import Quota

LORA_KINDS = ("style", "uploaded")
MAX_NAME_CHARS = 120
MAX_CAPTION_CHARS = 300
# Near-duplicates: difference hashes at most this many bits apart (of 64) are the same picture.
DUPLICATE_BITS = 4
# Each type safetensors stores, with its size in bytes.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
                      "I8": 1, "U8": 1, "BOOL": 1}
NOT_SAFETENSORS = ("Only .safetensors LoRA files are accepted: this file is {what}, which can run code when it is "
                   "loaded. Convert it to safetensors first (for example with the safetensors library's "
                   "'convert' script) and upload that.")


class LoraError(ValueError):
    """A LoRA upload or training set that cannot be used; the message says why."""


@dataclass
class LoraView:
    id: str
    name: str
    kind: str
    profile: str
    base_model: str
    trigger: str
    state: str
    state_note: str | None
    file_hash: str | None
    file_size: int | None
    job_id: str | None
    dataset: list[dict]
    settings: dict
    metrics: dict
    default_weight: float
    created_at: datetime

    @classmethod
    def of(cls, row: TrainedModel) -> "LoraView":
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @property
    def usable(self) -> bool:
        return self.state in LoraState.USABLE and self.file_hash is not None

    @property
    def label(self) -> str:
        trigger = f" · trigger “{self.trigger}”" if self.trigger else ""
        return f"{self.name} ({'trained' if self.kind == 'style' else 'uploaded'}{trigger})"


@dataclass
class ImageVerdict:
    """One training image as checked: usable or not, and why."""

    name: str
    ok: bool
    reason: str = ""
    caption: str = ""
    width: int = 0
    height: int = 0
    notes: tuple[str, ...] = ()
    upload: UploadedImage | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "reason": self.reason, "caption": self.caption,
                "width": self.width, "height": self.height, "notes": list(self.notes)}


def refused_summary(verdicts: list[ImageVerdict], limit: int = 3) -> str:
    """Which uploads were refused and why, for the message that refuses a whole set: " Refused: a.png (why); ..."."""
    refused = [v for v in verdicts if not v.ok]
    if not refused:
        return ""
    shown = "; ".join(f"{_short(v.name)} ({v.reason.rstrip('.')})" for v in refused[:limit])
    return f" Refused: {shown}{f'; and {len(refused) - limit} more' if len(refused) > limit else ''}."


def _short(name: str, limit: int = 60) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _difference_hash(image: Image.Image) -> int:
    """64 bits: whether each pixel of a 9×8 grey thumbnail is brighter than its right neighbour."""
    grey = image.convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    pixels = list(grey.getdata())
    bits = 0
    for row in range(8):
        for column in range(8):
            bits = (bits << 1) | (pixels[row * 9 + column] > pixels[row * 9 + column + 1])
    return bits


def _stem(filename: str) -> str:
    return filename.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]


def check_training_images(files: list[tuple[str, bytes]], min_side: int, captions: dict[str, str] | None = None,
                          max_bytes: int = 50_000_000) -> list[ImageVerdict]:
    """Check each uploaded image for training. ``files`` are (file name, bytes); a ``.txt`` file is the
    caption of the image with the same name (as kohya-style datasets ship them), ``captions`` maps an
    image's file name or stem to its caption and wins over a ``.txt``."""
    sidecars = {_stem(name): data.decode("utf-8", "replace").strip() for name, data in files if name.lower().endswith(".txt")}
    captions = {_stem(k): str(v).strip() for k, v in (captions or {}).items()}
    verdicts: list[ImageVerdict] = []
    seen: list[tuple[int, str]] = []
    for name, data in files:
        if name.lower().endswith(".txt"):
            continue
        caption = (captions.get(_stem(name)) or sidecars.get(_stem(name)) or "")[:MAX_CAPTION_CHARS]
        verdict = ImageVerdict(name=name, ok=False, caption=caption)
        verdicts.append(verdict)
        try:
            upload = read_image_upload(data, min_side=1, max_bytes=max_bytes)
        except ImageUploadError as exc:
            verdict.reason = f"Unreadable: {exc}"
            continue
        verdict.width, verdict.height, verdict.notes = *upload.source_size, upload.notes
        if min(upload.source_size) < min_side:
            verdict.reason = (f"Too small: {upload.source_size[0]}×{upload.source_size[1]} px; training needs at least "
                              f"{min_side} px on the short side.")
            continue
        fingerprint = _difference_hash(upload.image)
        twin = next((other for bits, other in seen if bin(bits ^ fingerprint).count("1") <= DUPLICATE_BITS), None)
        if twin is not None:
            verdict.reason = f"Duplicate of {twin}: the same picture twice teaches nothing new."
            continue
        seen.append((fingerprint, name))
        verdict.ok, verdict.upload = True, upload
    return verdicts


def safetensors_keys(data: bytes) -> dict[str, dict]:
    """The tensors a safetensors file declares (name -> {dtype, shape, data_offsets}), checked against the
    file's length; LoraError for anything else, pickles first."""
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise LoraError(NOT_SAFETENSORS.format(what="a Python pickle (.ckpt/.pt/.bin)"))
    if data[:4] == b"PK\x03\x04":
        raise LoraError(NOT_SAFETENSORS.format(what="a PyTorch checkpoint (a zip of pickles)"))
    if len(data) < 8:
        raise LoraError("The file is too short to be a safetensors file.")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > min(len(data) - 8, 100_000_000):
        raise LoraError("This is not a safetensors file (its header length does not fit the file).")
    try:
        header = json.loads(data[8:8 + header_size])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraError("This is not a safetensors file (its header is not JSON).") from None
    if not isinstance(header, dict):
        raise LoraError("This is not a safetensors file (its header is not a table of tensors).")
    header.pop("__metadata__", None)
    body = len(data) - 8 - header_size
    for name, info in header.items():
        if not isinstance(info, dict) or not isinstance(info.get("dtype"), str) or info["dtype"] not in SAFETENSORS_DTYPES:
            raise LoraError(f"The tensor {name!r} has no valid type; the file is damaged.")
        offsets = info.get("data_offsets")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= body):
            raise LoraError(f"The tensor {name!r} points outside the file; the file is damaged or cut off.")
        shape = info.get("shape")
        if not (isinstance(shape, list) and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
            raise LoraError(f"The tensor {name!r} has no valid shape; the file is damaged.")
        if math.prod(shape) * SAFETENSORS_DTYPES[info["dtype"]] != offsets[1] - offsets[0]:
            raise LoraError(f"The tensor {name!r} is declared {'×'.join(map(str, shape)) or 'a scalar'} "
                            f"{info['dtype']} but holds {offsets[1] - offsets[0]} bytes; the file is damaged.")
    return header


def attach_job(session: Session, lora_id: str, job_id: str, state: str, settings: dict | None = None) -> None:
    """Point a LoRA at the job that trains or checks it (in the job's own transaction)."""
    row = session.get(TrainedModel, lora_id)
    row.job_id, row.state, row.state_note, row.updated_at = job_id, state, None, utcnow()
    if settings is not None:
        row.settings, row.metrics = settings, {}


class LoraLibrary:
    """Reads and changes one user's LoRAs; every query filters by owner."""

    def __init__(self, db: Database, files: FileStore, max_upload_bytes: int = 1 << 30, quota: Quota | None = None):
        self.db, self.files, self.max_upload_bytes, self.quota = db, files, max_upload_bytes, quota

    def _row(self, session: Session, owner_id: str, lora_id: str) -> TrainedModel:
        row = session.get(TrainedModel, lora_id)
        if row is None or row.owner_id != owner_id:
            raise LookupError(f"No LoRA {lora_id} (it may have been deleted).")
        return row

    @staticmethod
    def _name(name: str | None, fallback: str) -> str:
        name = " ".join(str(name or "").split())[:MAX_NAME_CHARS]
        return name or fallback

    def create_for_training(self, owner_id: str, name: str, trigger: str, profile: str, base_model: str,
                            verdicts: list[ImageVerdict], min_images: int, max_images: int) -> LoraView:
        """Store the usable images (files first), then the LoRA's row, in state "new"."""
        usable = [v for v in verdicts if v.ok]
        if len(usable) < min_images:
            refused = len(verdicts) - len(usable)
            raise LoraError(f"{len(usable)} usable image(s){f' ({refused} refused)' if refused else ''}: training needs "
                            f"at least {min_images}. Add more pictures in the style.{refused_summary(verdicts)}")
        if len(usable) > max_images:
            raise LoraError(f"{len(usable)} images were given; the limit is {max_images}. Keep the most typical ones.")
        pngs = [v.upload.png_bytes() for v in usable]
        if self.quota is not None:
            self.quota.check(owner_id, sum(map(len, pngs)))
        dataset = [{"hash": self.files.put(png, "png"), "name": v.name, "caption": v.caption,
                    "width": v.upload.image.width, "height": v.upload.image.height} for v, png in zip(usable, pngs)]
        with self.db.session() as session:
            row = TrainedModel(owner_id=owner_id, name=self._name(name, "My style"), kind="style", profile=profile,
                               base_model=base_model, trigger=" ".join(trigger.split())[:80], dataset=dataset,
                               state=LoraState.NEW)
            session.add(row)
            session.commit()
            return LoraView.of(row)

    def upload(self, owner_id: str, data: bytes, filename: str, name: str | None, profile: str, base_model: str,
               weight: float = 1.0) -> LoraView:
        """Check the file is a safetensors LoRA within the size limit, store it, and add its row in state
        "checking" (a worker matches it against the base model before it can be used)."""
        if not data:
            raise LoraError("The file is empty.")
        if len(data) > self.max_upload_bytes:
            raise LoraError(f"The file is {len(data) / 1e6:.0f} MB; LoRA uploads are limited to "
                            f"{self.max_upload_bytes / 1e6:.0f} MB.")
        if filename and not filename.lower().endswith(".safetensors"):
            raise LoraError(NOT_SAFETENSORS.format(what=f"named {filename.rsplit('/', 1)[-1]!r}")
                            if filename.lower().endswith((".ckpt", ".pt", ".pth", ".bin")) else
                            "Only .safetensors LoRA files are accepted.")
        keys = safetensors_keys(data)
        if not any("lora" in key.lower() for key in keys):
            raise LoraError(f"The file holds {len(keys)} tensor(s) but no LoRA weights: is it a whole model rather than a LoRA?")
        if self.quota is not None:
            self.quota.check(owner_id, len(data))
        digest = self.files.put(data, "safetensors")
        with self.db.session() as session:
            row = TrainedModel(owner_id=owner_id, name=self._name(name, _stem(filename) or "Uploaded LoRA"), kind="uploaded",
                               profile=profile, base_model=base_model, state=LoraState.CHECKING, file_hash=digest,
                               file_size=len(data), default_weight=weight)
            session.add(row)
            session.commit()
            return LoraView.of(row)

    def list(self, owner_id: str, profile: str | None = None, usable_only: bool = False) -> list[LoraView]:
        """The owner's style and uploaded LoRAs (an avatar's identity LoRA is managed with its avatar)."""
        with self.db.session() as session:
            query = (select(TrainedModel).where(TrainedModel.owner_id == owner_id, TrainedModel.kind.in_(LORA_KINDS))
                     .order_by(TrainedModel.created_at.desc()))
            if profile:
                query = query.where(TrainedModel.profile == profile)
            if usable_only:
                query = query.where(TrainedModel.state.in_(LoraState.USABLE), TrainedModel.file_hash.is_not(None))
            return [LoraView.of(row) for row in session.scalars(query)]

    def get(self, owner_id: str, lora_id: str) -> LoraView | None:
        with self.db.session() as session:
            row = session.get(TrainedModel, lora_id)
            return LoraView.of(row) if row is not None and row.owner_id == owner_id else None

    def update(self, owner_id: str, lora_id: str, name: str | None = None, default_weight: float | None = None) -> LoraView:
        with self.db.session() as session:
            row = self._row(session, owner_id, lora_id)
            if name is not None:
                row.name = self._name(name, row.name)
            if default_weight is not None:
                if not -2 <= float(default_weight) <= 2:
                    raise LoraError("A LoRA weight is between -2 and 2.")
                row.default_weight = float(default_weight)
            row.updated_at = utcnow()
            session.commit()
            return LoraView.of(row)

    def delete(self, owner_id: str, lora_id: str) -> None:
        """Remove the row, then its weights and training images where nothing else uses them."""
        with self.db.session() as session:
            row = self._row(session, owner_id, lora_id)
            if row.kind not in LORA_KINDS:
                raise LoraError("This is a digital avatar's identity LoRA: delete the avatar in the photo studio instead.")
            if row.state in LoraState.BUSY:
                raise LoraError(f"This LoRA is still {row.state}: cancel its job first.")
            files = [(row.file_hash, "safetensors")] if row.file_hash else []
            files += [(item["hash"], "png") for item in row.dataset]
            session.delete(row)
            session.commit()
            unused = set(repo.unused_files(session, [digest for digest, _ in files]))
        for digest, extension in files:
            if digest in unused:
                self.files.delete(digest, extension)

    def file_path(self, lora: LoraView):
        return self.files.path(lora.file_hash, "safetensors")

    def training_image(self, digest: str) -> Image.Image:
        with Image.open(self.files.path(digest, "png")) as image:
            image.load()
            return image.copy()

    # The worker's side: progress and outcome of a train or check job.

    def record_metrics(self, lora_id: str, metrics: dict) -> None:
        with self.db.session() as session:
            row = session.get(TrainedModel, lora_id)
            if row is not None:
                row.metrics, row.updated_at = metrics, utcnow()
                session.commit()

    def finish(self, lora_id: str, state: str, note: str | None = None, weights: bytes | None = None) -> None:
        """Record how training or checking ended; trained weights are stored before the row points at them."""
        digest = self.files.put(weights, "safetensors") if weights is not None else None
        with self.db.session() as session:
            row = session.get(TrainedModel, lora_id)
            if row is None:
                return
            if digest is not None:
                row.file_hash, row.file_size = digest, len(weights)
            row.state, row.state_note, row.updated_at = state, note, utcnow()
            session.commit()

