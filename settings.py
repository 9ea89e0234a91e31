"""The studio's settings: environment variables ``STUDIO_*`` and an optional ``.env``, read here only."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


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
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]
