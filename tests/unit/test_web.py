"""The web side on its own: no torch in its process, and the API's answer when the broker is down."""

import subprocess
import sys

from fastapi.testclient import TestClient

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from storage.files import FileStore
from tasks.celery_app import create_celery
from tasks.client import StudioClient
from tests.support import ROOT, free_port
from ui.services import Services
from ui.web import create_app


def test_the_web_process_never_imports_torch():
    code = (
        "import sys; from ui.web import create_app; import app, tasks.client, storage.db; "
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_unreachable_broker_answers_503_and_creates_no_job(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    profile, styles = load_profiles()["tiny"], load_styles()
    client = StudioClient(db, create_celery(settings), profile, styles)
    services = Services(db=db, files=FileStore(settings.files), client=client, local_user_id=owner)
    with TestClient(create_app(services)) as client:
        response = client.post("/api/v1/jobs", json={"kind": "generate", "params": {"prompt": "a fox"}})
        assert response.status_code == 503
        assert "job queue is unreachable, so the job was not created" in response.json()["detail"]
        assert client.get("/api/v1/health").json()["queue_depth"] == 0
        assert client.post("/api/v1/jobs", json={"kind": "generate", "params": {"prompt": ""}}).status_code == 422
    db.dispose()
