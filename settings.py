"""The studio's settings: environment variables ``STUDIO_*`` and an optional ``.env``, read here only."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STUDIO_", env_file=".env", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 7860
    data_dir: Path = Path("data")
    database_url: str | None = None  # default: SQLite in data_dir
    broker_url: str | None = None  # default: SQLite broker in data_dir (kombu's sqlalchemy transport)
    broker_poll_interval: float = 0.05  # seconds between polls of the embedded broker (idle: ~6% of a core)
    files_dir: Path | None = None
    models_dir: Path | None = None
    profile: str = "auto"
    profiles_file: Path | None = None
    device: str = "auto"
    cpu_offload: bool = False
    embedded_worker: bool = True
    worker_queues: str = "gpu,train,cpu"
    worker_name: str = "studio-embedded@%h"
    worker_heartbeat_s: float = 5.0
    max_lora_mb: int = 1024  # largest LoRA file accepted for upload
    # Sign-in: "auto" asks for it whenever the studio listens beyond this machine (host not loopback).
    auth: Literal["auto", "on", "off"] = "auto"
    secret_key: str | None = None  # signs session cookies; default: one generated into data_dir/secret_key
    session_hours: float = 24 * 14
    # Per-user limits.
    max_queued_jobs: int = 20  # a user's jobs waiting or running at once
    max_images_per_job: int = 16
    max_upload_mb: int = 25  # largest picture accepted for upload
    quota_mb: int = 5000  # the files a user's results, materials, LoRAs and avatars may take
    worker_timeout_s: float = 30.0  # a worker silent this long is dead: its running jobs go to another

    @cached_property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'studio.sqlite').resolve()}"

    @cached_property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.sqlite').resolve()}"

    @cached_property
    def files(self) -> Path:
        return (self.files_dir or self.data_dir / "files").resolve()

    @cached_property
    def models(self) -> Path:
        return (self.models_dir or self.data_dir / "models").resolve()

    @property
    def auth_required(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and self.host not in LOOPBACK_HOSTS)

    def session_secret(self) -> str:
        """The key that signs session cookies: STUDIO_SECRET_KEY, or one made once and kept in the data folder
        (several web processes behind one address must share STUDIO_SECRET_KEY)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(secrets.token_urlsafe(48))
            partial.chmod(0o600)
            try:
                os.link(partial, path)  # the first process to make one wins; the others read it
            except FileExistsError:
                pass
            partial.unlink()
        return path.read_text().strip()

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]
