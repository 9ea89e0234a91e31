"""Per-user limits, and the storage quota measured on the files a user's rows refer to."""

from __future__ import annotations

from dataclasses import dataclass

from storage import repo
from storage.db import Database
from storage.files import FileStore

MB = 1_000_000


class LimitExceeded(ValueError):
    """A request over one of the user's limits; the message says which and what to do, ``status`` the HTTP
    status a REST client gets."""

    def __init__(self, message: str, status: int = 429):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_queued_jobs: int = 20  # waiting or running at once
    max_images_per_job: int = 16
    max_upload_bytes: int = 25 * MB
    quota_bytes: int = 5000 * MB


def picture_limit(quota: "Quota | None") -> int:
    """The largest picture a user may upload: their limit, or the default one where no quota is kept."""
    return (quota.limits if quota is not None else Limits()).max_upload_bytes


@dataclass
class Quota:
    db: Database
    files: FileStore
    limits: Limits

    def used(self, owner_id: str) -> int:
        """Bytes of the files the user's results, materials, LoRAs, avatars and templates refer to (each once)."""
        with self.db.session() as session:
            digests = repo.owner_digests(session, owner_id)
        return sum(self.files.size(digest) for digest in digests)

    def check(self, owner_id: str, adding: int = 0) -> None:
        """Raise LimitExceeded when the user's files (plus ``adding`` bytes) would not fit their quota."""
        used, quota = self.used(owner_id), self.limits.quota_bytes
        if used + adding > quota:
            raise LimitExceeded(
                f"Your storage is full: {used / MB:.1f} MB of your {quota / MB:.0f} MB are used"
                + (f" and this needs {adding / MB:.1f} MB more" if adding else "")
                + ". Delete results, materials or LoRAs you no longer need (My assets, Material library), then try again.",
                status=507)

    def check_upload(self, owner_id: str, size: int) -> None:
        """An upload of ``size`` bytes: within the upload limit and the user's quota."""
        if size > self.limits.max_upload_bytes:
            raise LimitExceeded(f"The file is {size / MB:.1f} MB; uploads are limited to "
                                f"{self.limits.max_upload_bytes / MB:.0f} MB each.", status=413)
        self.check(owner_id, size)
