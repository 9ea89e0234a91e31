"""Game assets through the REST API, driven over HTTP against the running studio (tiny profile, real worker):
the style catalogue and asset types, checking training images, training a style LoRA, using it in generate and
game-asset jobs, uploading, downloading and deleting LoRAs."""

from __future__ import annotations

import io
import json
import pickle
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.models import LoraState, TrainedModel
from tests.support import training_pngs

pytestmark = pytest.mark.e2e

ASSET_TYPES = {"character", "prop", "icon", "environment", "texture"}
TRAIN_STEPS = 40
SETTINGS = {"rank": 8, "steps": TRAIN_STEPS, "learning_rate": 5e-3, "batch_size": 1, "sample_every": 20, "seed": 5}
SEED = 2024



def image_parts(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", (name, data, "image/png")) for name, data in files]


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def detail(response: httpx.Response) -> str:
    return str(response.json().get("detail"))


@pytest.fixture(scope="module")
def http(studio):
    with httpx.Client(base_url=f"{studio.url}/api/v1", timeout=30) as client:
        yield client


def run_job(studio, http, kind: str, params: dict, timeout: float = 90) -> dict:
    response = http.post("/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 202, response.text
    done = studio.wait_job(response.json()["id"], timeout=timeout)
    assert done["state"] == "succeeded", f"job ended {done['state']}: {done['error']}"
    return done


def final_assets(http, job: dict) -> list[dict]:
    assets = []
    for asset_id in job["asset_ids"]:
        response = http.get(f"/assets/{asset_id}")
        assert response.status_code == 200, response.text
        assets.append(response.json())
    return assets


def pixels(http, asset: dict) -> np.ndarray:
    response = http.get(asset["file_url"].removeprefix("/api/v1"))
    assert response.status_code == 200
    with Image.open(io.BytesIO(response.content)) as image:
        return np.asarray(image.convert("RGBA"))


def upload_lora(http, data: bytes, filename: str, **form) -> httpx.Response:
    return http.post("/loras", files={"file": (filename, data, "application/octet-stream")}, data=form)


@pytest.fixture(scope="module")
def studio_db(studio):
    """The studio's own database, for what the API does not show: file hashes, another user's rows."""
    db = Database(f"sqlite:///{studio.log_path.parent / 'studio.sqlite'}")
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def files(studio) -> FileStore:
    return FileStore(studio.log_path.parent / "files")


def file_hash(db: Database, lora_id: str) -> str:
    with db.session() as session:
        return session.get(TrainedModel, lora_id).file_hash


@pytest.fixture(scope="module")
def trained(studio, http):
    """Six pictures trained into a style LoRA through /loras/train, finished: the LoRA as GET returns it."""
    name = unique("Blocks ")
    response = http.post("/loras/train", files=image_parts(training_pngs(6)),
                         data={"name": name, "trigger": "blockstyle", "captions": json.dumps({"style-0.png": "a red square"}),
                               "settings": json.dumps(SETTINGS)})
    assert response.status_code == 202, response.text
    body = response.json()
    lora, job = body["lora"], body["job"]
    assert lora["name"] == name and lora["state"] == "training" and lora["kind"] == "style"
    assert lora["job_id"] == job["id"] and job["kind"] == "train_lora"
    assert [v["ok"] for v in body["images"]] == [True] * 6
    assert lora["images"][0]["caption"] == "a red square"
    done = studio.wait_job(job["id"], timeout=180)
    assert done["state"] == "succeeded", done["error"]
    response = http.get(f"/loras/{lora['id']}")
    assert response.status_code == 200
    return response.json()


# --- catalogue --------------------------------------------------------------------------------------------


def test_styles_with_suggested_sizes_and_the_asset_types(http):
    response = http.get("/styles")
    assert response.status_code == 200
    styles = response.json()
    assert len(styles) >= 60
    assert len({s["name"] for s in styles}) == len(styles)
    for style in styles:
        suggested = style["suggested"]
        assert {"width", "height", "steps", "guidance"} <= set(suggested)
        assert 32 <= suggested["width"] <= 256 and 32 <= suggested["height"] <= 256  # the tiny profile's limits
        assert suggested["width"] % 8 == 0 and suggested["height"] % 8 == 0
    one = styles[0]
    by_category = http.get("/styles", params={"category": one["category"]}).json()
    assert by_category and {s["category"] for s in by_category} == {one["category"]}

    response = http.get("/asset-types")
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()}
    assert set(types) == ASSET_TYPES
    assert types["character"]["transparent"] and not types["environment"]["transparent"]
    assert types["texture"]["tileable"] and "{prompt}" in types["prop"]["prompt"]


# --- training images --------------------------------------------------------------------------------------


def test_check_images_flags_a_duplicate_and_an_unreadable_file(http):
    files = training_pngs(5) + [("copy.png", training_pngs(1)[0][1]), ("broken.png", b"this is not a picture")]
    response = http.post("/loras/check-images", files=image_parts(files))
    assert response.status_code == 200, response.text
    verdicts = {v["name"]: v for v in response.json()}
    assert list(verdicts) == [name for name, _ in files]
    assert all(verdicts[f"style-{i}.png"]["ok"] for i in range(5))
    assert verdicts["style-0.png"]["width"] == verdicts["style-0.png"]["height"] == 96
    assert not verdicts["copy.png"]["ok"] and "Duplicate of style-0.png" in verdicts["copy.png"]["reason"]
    assert not verdicts["broken.png"]["ok"] and verdicts["broken.png"]["reason"].startswith("Unreadable")


def test_training_needs_five_usable_images(http):
    before = len(http.get("/loras").json())
    files = training_pngs(4) + [("broken.png", b"not a picture")]
    response = http.post("/loras/train", files=image_parts(files), data={"name": unique("Too few "),
                                                                          "settings": json.dumps(SETTINGS)})
    assert response.status_code == 422
    assert "at least 5" in detail(response) and "4 usable" in detail(response)
    assert len(http.get("/loras").json()) == before

    response = http.post("/loras/train", files=image_parts(training_pngs(6)), data={"settings": json.dumps({"rank": 3})})
    assert response.status_code == 422 and "Rank 3" in detail(response)


# --- a trained LoRA ---------------------------------------------------------------------------------------


def test_trained_lora_is_listed_with_its_curve_samples_and_file(http, trained):
    lora = trained
    assert lora["state"] == "ready" and lora["profile"] == "tiny" and lora["trigger"] == "blockstyle"
    assert len(lora["losses"]) == TRAIN_STEPS
    assert sorted(s["step"] for s in lora["samples"]) == [20, 40]
    for sample in lora["samples"]:
        asset = http.get(f"/assets/{sample['asset_id']}").json()
        assert asset["origin"] == "train" and asset["stage"] == "sample"
    assert lora["settings"]["rank"] == 8 and lora["settings"]["steps"] == TRAIN_STEPS
    assert lora["id"] in [item["id"] for item in http.get("/loras", params={"usable": "true"}).json()]

    response = http.get(lora["file_url"].removeprefix("/api/v1"))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.safetensors"
    assert len(response.content) == lora["file_size"]
    tensors = load_safetensors(response.content)
    assert tensors and all("lora" in key for key in tensors)
    assert {a.dtype.name for a in tensors.values()} <= {"float16", "float32"}


def test_generate_and_game_jobs_apply_the_lora_and_record_it(studio, http, studio_db, trained):
    lora = trained
    generated = run_job(studio, http, "generate", {"prompt": "blockstyle, a castle", "steps": 2, "width": 64, "height": 64,
                                                   "seed": SEED, "loras": [{"lora_id": lora["id"], "weight": 0.8}]})
    game = run_job(studio, http, "game_asset", {"prompt": "blockstyle knight", "asset_type": "prop", "transparent": True,
                                                "count": 1, "steps": 2, "width": 64, "height": 64, "seed": SEED,
                                                "loras": [{"lora_id": lora["id"], "weight": 1.0}]})
    for job, weight in ((generated, 0.8), (game, 1.0)):
        (pinned,) = job["params"]["loras"]
        assert pinned["lora_id"] == lora["id"] and pinned["name"] == lora["name"] and pinned["weight"] == weight
        assets = final_assets(http, job)
        assert len(assets) == 1
        recorded = assets[0]["params"]["loras"]
        assert recorded == [pinned]
        assert pinned["file_hash"] == file_hash(studio_db, lora["id"])
    assert final_assets(http, game)[0]["params"]["transparent"] is True


def test_lora_at_weight_zero_changes_nothing_and_at_one_changes_the_picture(studio, http, trained):
    params = {"prompt": "blockstyle, a tower", "steps": 3, "width": 64, "height": 64, "seed": SEED}
    plain, zero, one = (
        pixels(http, final_assets(http, run_job(studio, http, "generate", dict(params, **extra)))[0])
        for extra in ({}, {"loras": [{"lora_id": trained["id"], "weight": 0}]},
                      {"loras": [{"lora_id": trained["id"], "weight": 1}]})
    )
    assert plain.shape == zero.shape == one.shape == (64, 64, 4)
    assert np.array_equal(plain, zero)
    assert not np.array_equal(plain, one)


def test_jobs_refuse_a_lora_that_is_not_yours(http, studio_db, trained):
    response = http.post("/jobs", json={"kind": "generate", "params": {"prompt": "x", "loras": [{"lora_id": uuid.uuid4().hex}]}})
    assert response.status_code == 422 and "No LoRA" in detail(response)

    # A ready LoRA of another user of the same studio, with the same weights.
    with studio_db.session() as session:
        other = repo.ensure_user(session, unique("someone-else-"))
        row = TrainedModel(owner_id=other.id, name="Theirs", kind="uploaded", profile="tiny", base_model="tiny",
                           state=LoraState.READY, file_hash=file_hash(studio_db, trained["id"]),
                           file_size=trained["file_size"])
        session.add(row)
        session.commit()
        theirs = row.id
    for kind, params in (("generate", {"prompt": "x"}), ("game_asset", {"prompt": "x", "asset_type": "icon"})):
        response = http.post("/jobs", json={"kind": kind, "params": dict(params, loras=[{"lora_id": theirs, "weight": 1}])})
        assert response.status_code == 422, response.text
        assert f"No LoRA {theirs}" in detail(response)
    assert http.get(f"/loras/{theirs}").status_code == 404
    assert http.get(f"/loras/{theirs}/file").status_code == 404
    assert theirs not in [item["id"] for item in http.get("/loras").json()]


# --- uploads ----------------------------------------------------------------------------------------------


def test_uploads_must_be_safetensors(http):
    pickled = pickle.dumps({"lora_unet.weight": [0.0] * 4}, protocol=4)
    for filename in ("style.ckpt", "style.safetensors"):
        response = upload_lora(http, pickled, filename)
        assert response.status_code == 422, response.text
        assert "safetensors" in detail(response)
    response = upload_lora(http, b"PK\x03\x04" + bytes(64), "style.pt")
    assert response.status_code == 422 and "safetensors" in detail(response)


def test_upload_check_rename_download_and_delete(studio, http, studio_db, files, trained):
    data = http.get(trained["file_url"].removeprefix("/api/v1")).content
    # The same weights in another file (its own metadata), so deleting it removes a file no one else uses.
    copy = save_safetensors(load_safetensors(data), metadata={"copied_from": trained["id"]})
    response = upload_lora(http, copy, "blocks-copy.safetensors", weight="0.7")
    assert response.status_code == 202, response.text
    lora, job = response.json()["lora"], response.json()["job"]
    assert lora["kind"] == "uploaded" and lora["state"] == "checking" and lora["name"] == "blocks-copy"
    assert lora["default_weight"] == 0.7 and job["kind"] == "lora_check"
    done = studio.wait_job(job["id"], timeout=60)
    assert done["state"] == "succeeded", done["error"]
    lora = http.get(f"/loras/{lora['id']}").json()
    assert lora["state"] == "ready" and "fit" in lora["state_note"]

    response = http.patch(f"/loras/{lora['id']}", json={"name": "Copied blocks", "default_weight": 0.5})
    assert response.status_code == 200 and response.json()["name"] == "Copied blocks"
    assert response.json()["default_weight"] == 0.5
    assert http.patch(f"/loras/{lora['id']}", json={"default_weight": 5}).status_code == 422

    response = http.get(f"/loras/{lora['id']}/file")
    assert response.status_code == 200 and response.content == copy
    assert "Copied-blocks.safetensors" in response.headers["content-disposition"]
    stored = files.path(file_hash(studio_db, lora["id"]), "safetensors")
    assert stored.is_file()

    assert http.delete(f"/loras/{lora['id']}").status_code == 204
    assert http.get(f"/loras/{lora['id']}/file").status_code == 404
    assert http.get(f"/loras/{lora['id']}").status_code == 404
    assert http.delete(f"/loras/{lora['id']}").status_code == 404
    assert not stored.exists()
    assert http.get(f"/loras/{trained['id']}/file").status_code == 200  # the other LoRA keeps its own file
