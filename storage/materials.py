"""The material library: a user's uploads kept for reuse, and the product masks made from them.

Files are written before their rows; every read filters by owner.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.images import UploadedImage, clean_file_name, read_image_upload
from storage.models import Material, utcnow
from storage.quota import Quota

MATERIAL_KINDS = ("product", "logo", "reference", "face")  # face: photos of a person for identity portraits
MASK_SOURCES = ("alpha", "segmenter", "brush")
MAX_NAME_CHARS = 120
MAX_TAGS, MAX_TAG_CHARS = 20, 40


class MaterialError(ValueError):
    """A material request a user must correct; the message says how."""


@dataclass
class MaterialView:
    id: str
    name: str
    kind: str
    tags: list[str]
    width: int
    height: int
    has_alpha: bool
    notes: list[str]
    file_hash: str
    mask_hash: str | None
    mask_source: str | None
    mask_note: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: Material) -> "MaterialView":
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @property
    def label(self) -> str:
        tags = f" · {', '.join(self.tags)}" if self.tags else ""
        return f"{self.name} ({self.kind}, {self.width}×{self.height}){tags}"


def clean_tags(tags) -> list[str]:
    """Tags from a list or a comma-separated string: trimmed, lower case, each once."""
    if isinstance(tags, str):
        tags = tags.replace("，", ",").split(",")
    cleaned = list(dict.fromkeys(t.strip().lower() for t in tags or [] if str(t).strip()))
    if len(cleaned) > MAX_TAGS:
        raise MaterialError(f"{len(cleaned)} tags; a material takes at most {MAX_TAGS}.")
    long = [t for t in cleaned if len(t) > MAX_TAG_CHARS]
    if long:
        raise MaterialError(f"The tag {long[0]!r} is longer than {MAX_TAG_CHARS} characters.")
    return cleaned


def _name(name: str | None, fallback: str) -> str:
    name = " ".join(str(name or "").split()) or fallback
    if len(name) > MAX_NAME_CHARS:
        raise MaterialError(f"The name has {len(name)} characters; the limit is {MAX_NAME_CHARS}.")
    return name


def _kind(kind: str | None) -> str:
    kind = kind or "product"
    if kind not in MATERIAL_KINDS:
        raise MaterialError(f"Unknown material kind {kind!r}. Choose one of {', '.join(MATERIAL_KINDS)}.")
    return kind


class MaterialLibrary:
    """Upload, list, rename, tag, delete materials, and keep each product's mask."""

    def __init__(self, db: Database, files: FileStore, max_upload_bytes: int = 50_000_000, quota: Quota | None = None):
        self.db, self.files, self.max_upload_bytes, self.quota = db, files, max_upload_bytes, quota

    def _row(self, session: Session, owner_id: str, material_id: str) -> Material:
        row = session.scalar(select(Material).where(Material.id == material_id, Material.owner_id == owner_id))
        if row is None:
            raise LookupError(f"No material {material_id}.")
        return row

    def upload(self, owner_id: str, data: bytes, filename: str = "", name: str | None = None, kind: str | None = None,
               tags=None) -> MaterialView:
        """Check and normalise the image (raises ImageUploadError), store it as PNG, then add its row."""
        kind, tags = _kind(kind), clean_tags(tags)
        # A name taken from the file's (its last part, no extension) is shortened rather than refused.
        stem = clean_file_name(filename).rsplit(".", 1)[0].strip()[:MAX_NAME_CHARS]
        name = _name(name, stem or "Untitled")
        if self.quota is not None:
            self.quota.check_upload(owner_id, len(data))
        upload: UploadedImage = read_image_upload(data, max_bytes=self.max_upload_bytes)
        png = upload.png_bytes()
        if self.quota is not None:
            self.quota.check(owner_id, len(png))
        digest = self.files.put(png, "png")
        with self.db.session() as session:
            row = Material(owner_id=owner_id, name=name, kind=kind, tags=tags, file_hash=digest,
                           width=upload.image.width, height=upload.image.height, has_alpha=upload.has_alpha,
                           notes=list(upload.notes))
            session.add(row)
            session.commit()
            return MaterialView.of(row)

    def list(self, owner_id: str, kind: str | None = None, tag: str | None = None, search: str | None = None,
             limit: int = 200) -> list[MaterialView]:
        query = select(Material).where(Material.owner_id == owner_id)
        if kind:
            query = query.where(Material.kind == kind)
        with self.db.session() as session:
            rows = session.scalars(query.order_by(Material.created_at.desc()))
            views = [MaterialView.of(r) for r in rows]
        if tag:
            views = [v for v in views if tag.strip().lower() in v.tags]
        for word in (search or "").lower().split():
            views = [v for v in views if word in v.name.lower() or any(word in t for t in v.tags)]
        return views[:limit]

    def tags(self, owner_id: str) -> list[str]:
        return sorted({t for v in self.list(owner_id) for t in v.tags})

    def get(self, owner_id: str, material_id: str) -> MaterialView | None:
        with self.db.session() as session:
            try:
                return MaterialView.of(self._row(session, owner_id, material_id))
            except LookupError:
                return None

    def update(self, owner_id: str, material_id: str, name: str | None = None, kind: str | None = None,
               tags=None) -> MaterialView:
        with self.db.session() as session:
            row = self._row(session, owner_id, material_id)
            if name is not None:
                row.name = _name(name, row.name)
            if kind is not None:
                row.kind = _kind(kind)
            if tags is not None:
                row.tags = clean_tags(tags)
            row.updated_at = utcnow()
            session.commit()
            return MaterialView.of(row)

    def delete(self, owner_id: str, material_id: str) -> None:
        """Remove the row, then each of its files no other material or asset uses."""
        with self.db.session() as session:
            row = self._row(session, owner_id, material_id)
            digests = [d for d in (row.file_hash, row.mask_hash) if d]
            session.delete(row)
            session.commit()
            for digest in repo.unused_files(session, digests):
                self.files.delete(digest, "png")

    def image(self, material: MaterialView) -> Image.Image:
        return self.open_png(material.file_hash)

    def mask(self, material: MaterialView) -> Image.Image | None:
        return self.open_png(material.mask_hash).convert("L") if material.mask_hash else None

    def open_png(self, digest: str) -> Image.Image:
        with Image.open(self.files.path(digest, "png")) as image:
            image.load()
            return image.copy()

    def save_mask(self, owner_id: str, material_id: str, mask: Image.Image, source: str, note: str | None = None) -> MaterialView:
        """Store a product mask (255 on the product) for the material, file first."""
        if source not in MASK_SOURCES:
            raise MaterialError(f"Unknown mask source {source!r}.")
        material = self.get(owner_id, material_id)
        if material is None:
            raise LookupError(f"No material {material_id}.")
        if mask.size != (material.width, material.height):
            raise MaterialError(f"The mask is {mask.width}×{mask.height} pixels; the photo is "
                                f"{material.width}×{material.height}. Paint the mask over the photo itself.")
        buffer = io.BytesIO()
        mask.convert("L").save(buffer, format="PNG")
        digest = self.files.put(buffer.getvalue(), "png")
        with self.db.session() as session:
            row = self._row(session, owner_id, material_id)
            row.mask_hash, row.mask_source, row.mask_note, row.updated_at = digest, source, note, utcnow()
            session.commit()
            return MaterialView.of(row)
