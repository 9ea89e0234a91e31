"""What the tabs and routes need, built once per web process and passed in (no hidden globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import gradio as gr

from storage import repo
from storage.avatars import AvatarLibrary
from storage.db import Database
from storage.files import MIME_EXTENSIONS, FileStore
from storage.loras import LoraLibrary
from storage.materials import MaterialLibrary
from storage.models import Asset
from storage.previews import StylePreviews
from storage.quota import Limits, Quota
from storage.users import UserStore
from tasks.client import FormOptions, StudioClient
from tasks.identity_client import IdentityClient
from tasks.lora_client import LoraClient
from tasks.product_client import ProductClient
from tasks.template_client import TemplateClient


class NotSignedIn(PermissionError):
    """A handler was called with no signed-in user while sign-in is required."""


@dataclass
class Services:
    db: Database
    files: FileStore
    client: StudioClient
    local_user_id: str | None = None  # with sign-in off, the one local user every request belongs to
    limits: Limits = field(default_factory=Limits)
    max_lora_bytes: int = 1 << 30

    def owner(self, request: gr.Request | None) -> str:
        """The id of the user a Gradio event comes from (``ui.auth`` makes it ``request.username``)."""
        user = getattr(request, "username", None)
        if user:
            return user
        if self.local_user_id:
            return self.local_user_id
        raise NotSignedIn("Your session has ended: sign in again (reload the page).")

    @cached_property
    def users(self) -> UserStore:
        return UserStore(self.db)

    @property
    def quota(self) -> Quota:
        return Quota(self.db, self.files, self.limits)

    @property
    def options(self) -> FormOptions:
        return self.client.options

    @property
    def materials(self) -> MaterialLibrary:
        return MaterialLibrary(self.db, self.files, self.limits.max_upload_bytes, self.quota)

    @property
    def products(self) -> ProductClient:
        return ProductClient(self.materials, self.client)

    @property
    def loras(self) -> LoraClient:
        return LoraClient(LoraLibrary(self.db, self.files, self.max_lora_bytes, self.quota), self.client)

    @property
    def identity(self) -> IdentityClient:
        return IdentityClient(self.client, AvatarLibrary(self.db, self.files, self.quota), self.materials)

    @cached_property
    def templates(self) -> TemplateClient:
        """Built on first use and kept: it reads the studio's template catalogue once."""
        return TemplateClient(self.db, self.files, self.client.profile)

    @property
    def previews(self) -> StylePreviews:
        return StylePreviews(self.files.root / "previews")

    @property
    def avatar_previews(self) -> StylePreviews:
        """Previews of the avatar styles (``python app.py styles previews --avatars``)."""
        return StylePreviews(self.files.root / "previews" / "avatars")

    @property
    def template_previews(self) -> StylePreviews:
        """Previews of the studio's templates (``python app.py styles previews --templates``)."""
        return StylePreviews(self.files.root / "previews" / "templates")

    def asset_path(self, asset: Asset) -> Path:
        return self.files.path(asset.file_hash, MIME_EXTENSIONS[asset.mime])

    def cancel(self, job_id: str | None, request: gr.Request) -> str:
        """A Cancel button's handler: ask the running job to stop; the status line to show."""
        if not job_id:
            return "Nothing is running."
        self.client.cancel(self.owner(request), job_id)
        return "Cancelling…"

    def may_read_file(self, owner_id: str, digest: str) -> bool:
        with self.db.session() as session:
            return repo.may_read_file(session, owner_id, digest)

    def delete_asset(self, asset: Asset) -> None:
        """Remove the row, then the file if no other asset shares it."""
        with self.db.session() as session:
            orphan = repo.delete_asset(session, session.merge(asset))
        if orphan:
            self.files.delete(orphan, MIME_EXTENSIONS[asset.mime])


def banner(options: FormOptions) -> str:
    """The notice every tab shows while the tiny offline profile is active."""
    if not options.profile.is_noise:
        return ""
    return (
        "**Offline demo models: images are random noise.** The `tiny` profile has random weights so the studio "
        "runs anywhere. For real images start with a real profile on a machine that can download or already "
        "has its weights, e.g. `python app.py --profile sd15` (CPU) or `--profile sdxl` (GPU); "
        "`python app.py models list` shows what each needs."
    )
