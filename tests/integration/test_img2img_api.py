"""Image-to-image through the REST routes, run by a real worker process (tiny profile): a material or one of
your results as the source, the keeps' maps stored beside the pictures, and bad requests refused up front."""

from __future__ import annotations

import io

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select

from storage import repo
from storage.files import FileStore
from storage.models import Job
from tests.support import figure_drawing, wait_for
from ui.api import router
from ui.auth import Authenticator
from ui.services import Services

pytestmark = pytest.mark.integration

SIZE = (64, 48)
FAST = {"steps": 2, "width": SIZE[0], "height": SIZE[1]}
KEEPS = [{"kind": "pose", "weight": 1.0}, {"kind": "edges", "weight": 0.5}, {"kind": "depth", "weight": 0.7}]


def drawing_png() -> bytes:
    buffer = io.BytesIO()
    figure_drawing().save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def api(shared_studio):
    """A REST client per user (the studio's owner, and bob): the routes as the web process mounts them,
    over the studio's database and file store, submitting to its real worker."""
    studio = shared_studio
    with studio.db.session() as session:
        bob = repo.ensure_user(session, "bob").id

    def client_for(owner: str) -> TestClient:
        app = FastAPI()
        services = Services(db=studio.db, files=FileStore(studio.settings.files), client=studio.client,
                            local_user_id=owner)
        app.state.services = services
        app.state.auth = Authenticator(services.users, "test-secret", required=False, local_user_id=owner)
        app.include_router(router)
        return TestClient(app)

    with client_for(studio.owner) as mine, client_for(bob) as bobs:
        yield mine, bobs


def upload(client: TestClient, name: str = "drawing") -> dict:
    response = client.post("/api/v1/materials", files={"file": (f"{name}.png", drawing_png(), "image/png")},
                           data={"name": name, "kind": "reference"})
    assert response.status_code == 201, response.text
    return response.json()


def run(client: TestClient, kind: str, params: dict, timeout: float = 120) -> dict:
    response = client.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def finished():
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(finished, timeout, 0.1, f"job {job_id}")
    assert job["state"] == "succeeded", f"job ended {job['state']}: {job['error']}"
    return job


def job_assets(client: TestClient, job_id: str) -> list[dict]:
    """Every asset of the job, the keeps' maps and other stages included."""
    response = client.get("/api/v1/assets", params={"include_stages": "true", "limit": 500})
    assert response.status_code == 200, response.text
    return [a for a in response.json() if a["job_id"] == job_id]


def job_count(studio) -> int:
    with studio.db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_a_material_with_three_keeps_makes_pictures_and_stores_each_map(shared_studio, api):
    mine, _ = api
    material = upload(mine)
    job = run(mine, "img2img", dict(FAST, source_material_id=material["id"], prompt="a knight in armour",
                                    keeps=KEEPS, strength=0.55, count=2, seed=21))
    assert job["kind"] == "img2img" and len(job["asset_ids"]) == 2

    finals = [mine.get(f"/api/v1/assets/{asset_id}").json() for asset_id in job["asset_ids"]]
    for index, asset in enumerate(finals):
        assert asset["stage"] == "final" and asset["job_id"] == job["id"]
        assert (asset["width"], asset["height"]) == SIZE
        assert asset["params"]["controls"] == KEEPS  # request order, each with its own weight
        assert asset["params"]["init_material_id"] == material["id"]
        assert asset["params"]["init_asset_id"] is None and asset["parent_id"] is None
        assert asset["params"]["strength"] == 0.55
        assert asset["params"]["seed"] == 21 + index
        file = mine.get(asset["file_url"])
        assert file.status_code == 200
        with Image.open(io.BytesIO(file.content)) as image:
            assert image.size == SIZE

    assets = job_assets(mine, job["id"])
    by_stage: dict[str, list[dict]] = {}
    for asset in assets:
        by_stage.setdefault(asset["stage"], []).append(asset)
    assert sorted(by_stage) == ["depth", "edges", "final", "pose"]
    assert sorted(a["id"] for a in by_stage["final"]) == sorted(job["asset_ids"])
    for keep in ("pose", "edges", "depth"):
        [drawn] = by_stage[keep]
        assert (drawn["width"], drawn["height"]) == SIZE
        assert mine.get(drawn["file_url"]).status_code == 200
    # The maps are no results of their own: the plain listing shows only the final pictures.
    plain = [a["id"] for a in mine.get("/api/v1/assets", params={"limit": 500}).json() if a["job_id"] == job["id"]]
    assert sorted(plain) == sorted(job["asset_ids"])


def test_one_of_your_results_restyled_by_a_style_alone(shared_studio, api):
    mine, _ = api
    source = run(mine, "generate", dict(FAST, prompt="a lighthouse on a cliff", seed=5))
    [source_id] = source["asset_ids"]
    job = run(mine, "img2img", dict(FAST, source_asset_id=source_id, style="watercolor", seed=6))
    [asset_id] = job["asset_ids"]
    asset = mine.get(f"/api/v1/assets/{asset_id}").json()
    assert asset["parent_id"] == source_id
    assert asset["params"]["init_asset_id"] == source_id and asset["params"]["init_material_id"] is None
    assert asset["params"]["style"] == "watercolor" and asset["prompt"] == ""
    assert asset["params"]["strength"] == 0.6 and asset["params"]["controls"] == []
    assert (asset["width"], asset["height"]) == SIZE


def test_bad_requests_are_refused_with_a_reason_and_create_no_job(shared_studio, api):
    mine, bobs = api
    material = upload(mine)
    theirs_material = upload(bobs, "bobs-drawing")
    theirs_asset = run(bobs, "generate", dict(FAST, prompt="bob's boat", seed=9))["asset_ids"][0]
    mine_asset = run(mine, "generate", dict(FAST, prompt="my own boat", seed=9))["asset_ids"][0]
    good = dict(FAST, prompt="a knight in armour")
    cases = [
        (dict(good, source_asset_id=mine_asset, source_material_id=material["id"]), "Choose one source picture"),
        (dict(good), "Choose one source picture"),
        (dict(good, source_material_id=material["id"], keeps=[{"kind": "outline"}]), "Unknown keep 'outline'"),
        (dict(good, source_material_id=theirs_material["id"]),
         f"No material {theirs_material['id']} in your library"),
        (dict(good, source_material_id="no-such-material"), "No material no-such-material in your library"),
        (dict(good, source_asset_id=theirs_asset), f"No picture {theirs_asset} among your results"),
        (dict(good, source_material_id=material["id"], keeps=[{"kind": "depth", "weight": 3}]),
         "The weight of Depth"),
    ]
    before = job_count(shared_studio)
    for params, reason in cases:
        response = mine.post("/api/v1/jobs", json={"kind": "img2img", "params": params})
        assert 400 <= response.status_code < 500, (params, response.status_code, response.text)
        assert reason in response.json()["detail"], (params, response.json())
    assert job_count(shared_studio) == before
    # The same sources are fine for their owner.
    assert bobs.get(f"/api/v1/materials/{theirs_material['id']}").status_code == 200
    assert mine.get(f"/api/v1/materials/{theirs_material['id']}").status_code == 404
    assert mine.get(f"/api/v1/assets/{theirs_asset}").status_code == 404
