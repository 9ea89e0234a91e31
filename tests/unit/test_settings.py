from pathlib import Path

from settings import Settings


def test_embedded_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in ("STUDIO_DATA_DIR", "STUDIO_DATABASE_URL", "STUDIO_BROKER_URL", "STUDIO_PROFILE", "STUDIO_MODELS_DIR"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    data = (tmp_path / "data").resolve()
    assert settings.database == f"sqlite:///{data / 'studio.sqlite'}"
    assert settings.broker == f"sqla+sqlite:///{data / 'broker.sqlite'}"
    assert settings.files == data / "files" and settings.models == data / "models"
    assert (settings.host, settings.port, settings.profile) == ("127.0.0.1", 7860, "auto")
    assert settings.queues == ["gpu", "train", "cpu"]


def test_environment_and_dotenv_override(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("STUDIO_PORT=9000\nSTUDIO_BROKER_URL=redis://broker:6379/0\n")
    monkeypatch.setenv("STUDIO_DATABASE_URL", "postgresql://studio@db/studio")
    monkeypatch.setenv("STUDIO_WORKER_QUEUES", "gpu, cpu")
    settings = Settings()
    assert settings.port == 9000
    assert settings.broker == "redis://broker:6379/0"
    assert settings.database == "postgresql://studio@db/studio"
    assert settings.queues == ["gpu", "cpu"]
    assert Settings(data_dir=Path("/srv/studio")).files == Path("/srv/studio/files")
