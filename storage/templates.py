"""Users' own templates: entries saved from their results, private or shared with every user of the studio.

The entry is checked by the caller (tasks/template_client.py, against the catalogues); this module stores it,
keeps names unique per owner, and decides who sees and who changes what: everyone sees their own and the
shared ones, only the owner shares, unshares or deletes. Another user's template is "not found" to them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.models import User, UserTemplate

# The entry's keys, as in templates/industry_templates.json.
ENTRY_KEYS = ("name", "title", "title_zh", "description", "description_zh", "tab", "tags", "prompt",
              "negative_prompt", "fields", "settings")
PREVIEW_EXTENSION = "png"
MAX_NAME_CHARS = 80


@dataclass(frozen=True)
class UserTemplateView:
    """A saved template as the asking user sees it."""

    id: str
    owner_id: str
    owner: str  # the owner's user name
    entry: dict  # the JSON entry of an industry template
    shared: bool
    preview_hash: str
    source_asset_id: str | None
    created_at: datetime
    mine: bool  # whether the asking user owns it

    @classmethod
    def of(cls, row: UserTemplate, owner: str, asking_id: str) -> UserTemplateView:
        return cls(id=row.id, owner_id=row.owner_id, owner=owner, entry={key: getattr(row, key) for key in ENTRY_KEYS},
                   shared=row.shared, preview_hash=row.preview_hash, source_asset_id=row.source_asset_id,
                   created_at=row.created_at, mine=row.owner_id == asking_id)


def _free_name(session: Session, owner_id: str, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... whichever the owner has not used yet."""
    taken = set(session.scalars(select(UserTemplate.name).where(UserTemplate.owner_id == owner_id)))
    for number in itertools.count(1):
        suffix = f"-{number}" if number > 1 else ""
        candidate = name[:MAX_NAME_CHARS - len(suffix)].rstrip("-") + suffix
        if candidate not in taken:
            return candidate


class TemplateLibrary:
    """Save, list, share and delete users' templates; every change is the owner's alone."""

    def __init__(self, db: Database, files: FileStore):
        self.db, self.files = db, files

    def _owned(self, session: Session, owner_id: str, template_id: str) -> UserTemplate:
        row = session.get(UserTemplate, template_id)
        if row is None or row.owner_id != owner_id:
            raise LookupError(f"No template {template_id} among yours.")
        return row

    def _view(self, session: Session, row: UserTemplate, asking_id: str) -> UserTemplateView:
        return UserTemplateView.of(row, session.get(User, row.owner_id).name, asking_id)

    def save(self, owner_id: str, entry: dict, preview_hash: str, shared: bool = False,
             source_asset_id: str | None = None) -> UserTemplateView:
        """Store a checked entry with its preview (a PNG already in the file store); its name becomes
        ``name-2``, ``name-3``... when the owner has it already."""
        values = {key: entry[key] for key in ENTRY_KEYS}
        with self.db.session() as session:
            for attempt in (1, 2):
                row = UserTemplate(**dict(values, name=_free_name(session, owner_id, values["name"])),
                                   owner_id=owner_id, shared=shared, preview_hash=preview_hash,
                                   source_asset_id=source_asset_id)
                session.add(row)
                try:
                    session.commit()
                    return self._view(session, row, owner_id)
                except IntegrityError:
                    # Another save took the same free name first: the next one is free now.
                    session.rollback()
                    if attempt == 2:
                        raise

    def visible(self, owner_id: str) -> list[UserTemplateView]:
        """The user's own templates, then those others shared; newest first in each."""
        query = (select(UserTemplate, User.name).join(User, User.id == UserTemplate.owner_id)
                 .where(or_(UserTemplate.owner_id == owner_id, UserTemplate.shared.is_(True)))
                 .order_by((UserTemplate.owner_id != owner_id).asc(), UserTemplate.created_at.desc()))
        with self.db.session() as session:
            return [UserTemplateView.of(row, owner, owner_id) for row, owner in session.execute(query)]

    def get(self, owner_id: str, template_id: str) -> UserTemplateView | None:
        """The template if it is the user's own or shared; None for another user's private one."""
        with self.db.session() as session:
            row = session.get(UserTemplate, template_id)
            if row is None or not (row.owner_id == owner_id or row.shared):
                return None
            return self._view(session, row, owner_id)

    def set_shared(self, owner_id: str, template_id: str, shared: bool) -> UserTemplateView:
        with self.db.session() as session:
            row = self._owned(session, owner_id, template_id)
            row.shared = shared
            session.commit()
            return self._view(session, row, owner_id)

    def delete(self, owner_id: str, template_id: str) -> None:
        """Remove the row, then its preview file if nothing else (a result, a material, another template)
        uses it."""
        with self.db.session() as session:
            row = self._owned(session, owner_id, template_id)
            digest = row.preview_hash
            session.delete(row)
            session.commit()
            for unused in repo.unused_files(session, [digest]):
                self.files.delete(unused, PREVIEW_EXTENSION)
