"""The REST API under /api/v1, driven over HTTP against the running studio (tiny profile, real worker)."""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from PIL import Image

from storage.pngmeta import read_params
from tests.support import http_json, wait_for

pytestmark = pytest.mark.e2e

FOX_SEED = 4242
FOX_STEPS = 3
FOX_SIZE = (96, 64)  # not square, so a swapped width/height shows


def api(studio, path: str) -> str:
    return f"{studio.url}/api/v1{path}"


def submit(studio, params: dict, kind: str = "generate") -> tuple[int, dict]:
    return http_json("POST", api(studio, "/jobs"), {"kind": kind, "params": params})


def get_bytes(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), exc.read()


def run_job(studio, params: dict, timeout: float = 90) -> dict:
    status, job = submit(studio, params)
    assert status == 202, job
    done = studio.wait_job(job["id"], timeout=timeout)
    assert done["state"] == "succeeded", f"job ended {done['state']}: {done['error']}"
    return done


def search_ids(studio, words: str) -> list[str]:
    status, assets = http_json("GET", api(studio, "/assets?" + urllib.parse.urlencode({"search": words})))
    assert status == 200, assets
    return [a["id"] for a in assets]


@pytest.fixture(scope="module")
def fox(studio):
    """One count=2 job with a word no other test uses, submitted once: (word, submit answer, finished job)."""
    word = f"fox{uuid.uuid4().hex[:8]}"
    params = {"prompt": f"a red {word} in fresh snow", "seed": FOX_SEED, "steps": FOX_STEPS, "count": 2,
              "width": FOX_SIZE[0], "height": FOX_SIZE[1]}
    status, submitted = submit(studio, params)
    assert status == 202, submitted
    finished = studio.wait_job(submitted["id"], timeout=90)
    return word, params, submitted, finished


def test_submit_answers_202_and_the_job_succeeds_with_its_images(fox):
    _, _, submitted, finished = fox
    assert submitted["state"] == "queued"
    assert submitted["kind"] == "generate" and submitted["asset_ids"] == []
    assert finished["id"] == submitted["id"]
    assert finished["state"] == "succeeded", finished["error"]
    assert finished["error"] is None
    assert finished["progress"] == 1.0
    assert len(finished["asset_ids"]) == 2
    assert len(set(finished["asset_ids"])) == 2


def test_asset_rows_carry_size_and_parameters(studio, fox):
    _, params, _, finished = fox
    for asset_id in finished["asset_ids"]:
        status, asset = http_json("GET", api(studio, f"/assets/{asset_id}"))
        assert status == 200, asset
        assert (asset["width"], asset["height"]) == FOX_SIZE
        assert asset["prompt"] == params["prompt"]
        assert asset["params"]["prompt"] == params["prompt"]
        assert asset["params"]["steps"] == FOX_STEPS
        assert asset["params"]["seed"] in (FOX_SEED, FOX_SEED + 1)
        assert asset["job_id"] == finished["id"]
        assert asset["origin"] == "api" and asset["kind"] == "image"
        assert asset["file_url"] == f"/api/v1/assets/{asset_id}/file"


def test_asset_file_is_a_png_of_that_size_with_its_parameters_embedded(studio, fox):
    _, params, _, finished = fox
    for asset_id in finished["asset_ids"]:
        _, asset = http_json("GET", api(studio, f"/assets/{asset_id}"))
        status, content_type, data = get_bytes(f"{studio.url}{asset['file_url']}")
        assert status == 200
        assert content_type == "image/png"
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == "PNG"
            assert image.size == FOX_SIZE
        embedded = read_params(data)
        assert embedded["prompt"] == params["prompt"]
        assert embedded["steps"] == FOX_STEPS
        assert embedded["seed"] == asset["params"]["seed"]
        assert (embedded["width"], embedded["height"]) == FOX_SIZE


def test_each_image_of_a_batch_gets_its_own_seed(studio, fox):
    _, _, _, finished = fox
    seeds, pixels = [], []
    for asset_id in finished["asset_ids"]:
        _, asset = http_json("GET", api(studio, f"/assets/{asset_id}"))
        seeds.append(asset["params"]["seed"])
        _, _, data = get_bytes(f"{studio.url}{asset['file_url']}")
        with Image.open(io.BytesIO(data)) as image:
            pixels.append(image.convert("RGB").tobytes())
    assert sorted(seeds) == [FOX_SEED, FOX_SEED + 1]
    assert pixels[0] != pixels[1], "two seeds made the same image"


def test_search_finds_the_prompt_word_and_not_another(studio, fox):
    word, _, _, finished = fox
    assert set(search_ids(studio, word)) == set(finished["asset_ids"])
    assert set(search_ids(studio, word.upper())) == set(finished["asset_ids"])
    assert set(search_ids(studio, f"snow {word}")) == set(finished["asset_ids"])
    assert search_ids(studio, f"zebra{uuid.uuid4().hex[:8]}") == []
    assert search_ids(studio, f"{word} zebra") == []


def test_latent_x2_stage_doubles_the_size(studio):
    word = f"owl{uuid.uuid4().hex[:8]}"
    job = run_job(studio, {"prompt": f"an {word}", "seed": 7, "steps": 2, "width": 128, "height": 64,
                           "stages": ["latent_x2"]}, timeout=120)
    assert len(job["asset_ids"]) == 1
    _, asset = http_json("GET", api(studio, f"/assets/{job['asset_ids'][0]}"))
    assert (asset["width"], asset["height"]) == (256, 128)
    assert asset["params"]["stages"] == ["base", "latent_x2"]
    assert (asset["params"]["width"], asset["params"]["height"]) == (128, 64)  # the base size that reproduces it
    _, _, data = get_bytes(f"{studio.url}{asset['file_url']}")
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (256, 128)


def test_latent_x2_on_a_size_it_cannot_take_is_refused_up_front(studio):
    status, body = submit(studio, {"prompt": "a 4:3 owl", "seed": 7, "steps": 1, "width": 64, "height": 48,
                                   "stages": ["latent_x2"]})
    assert status == 422
    assert "multiples of 32 px; 64×48 is not. Try 64×64" in body["detail"]


def test_kept_stage_images_are_stored_beside_the_final_one(studio):
    word = f"heron{uuid.uuid4().hex[:8]}"
    job = run_job(studio, {"prompt": f"a {word}", "seed": 3, "steps": 2, "width": 64, "height": 64,
                           "stages": ["refiner", "latent_x2"], "keep_stage_images": True}, timeout=120)
    assert len(job["asset_ids"]) == 1  # the job's result is the final image
    query = urllib.parse.urlencode({"search": word, "include_stages": "true"})
    _, assets = http_json("GET", api(studio, f"/assets?{query}"))
    sizes = {a["stage"]: (a["width"], a["height"]) for a in assets}
    assert sizes == {"base": (64, 64), "refiner": (64, 64), "latent_x2": (128, 128), "final": (128, 128)}
    assert search_ids(studio, word) == job["asset_ids"]  # the library lists finals unless asked


@pytest.mark.parametrize(
    ("kind", "params", "reason"),
    [
        ("generate", {"prompt": ""}, "prompt is empty"),
        ("generate", {"prompt": "   "}, "prompt is empty"),
        ("generate", {"prompt": "x" * 2001}, "limit is 2000"),
        ("generate", {"prompt": "a fox", "width": 100}, "not a multiple of 8"),
        ("generate", {"prompt": "a fox", "width": 512}, "outside the tiny profile's range 32-256"),
        ("generate", {"prompt": "a fox", "count": 9}, "choose 1 to 8"),
        ("generate", {"prompt": "a fox", "sampler": "warp_drive"}, "Unknown sampler 'warp_drive'"),
        ("paint", {"prompt": "a fox"}, "Unknown job kind 'paint'"),
        ("generate", {"prompt": "a fox", "stages": ["x16"]}, "no stage x16"),
    ],
    ids=["empty-prompt", "blank-prompt", "long-prompt", "width-not-8", "width-too-big", "count-9",
         "unknown-sampler", "unknown-kind", "unknown-stage"],
)
def test_bad_input_is_refused_with_a_readable_reason(studio, kind, params, reason):
    status, body = submit(studio, params, kind=kind)
    assert status == 422, body
    assert isinstance(body["detail"], str), body
    assert reason in body["detail"]


def test_a_2000_character_prompt_is_accepted(studio):
    status, body = submit(studio, {"prompt": "y" * 2000, "steps": 1, "width": 32, "height": 32})
    assert status == 202, body
    assert studio.wait_job(body["id"], timeout=60)["state"] == "succeeded"


def test_unknown_job_id_is_404(studio):
    missing = uuid.uuid4().hex
    for method in ("GET", "DELETE"):
        status, body = http_json(method, api(studio, f"/jobs/{missing}"))
        assert status == 404, (method, body)
        assert missing in body["detail"]
    status, _ = http_json("GET", api(studio, f"/assets/{missing}"))
    assert status == 404


def test_cancel_stops_a_long_job_and_a_queued_one(studio):
    word = f"heron{uuid.uuid4().hex[:8]}"
    long_params = {"prompt": f"a long {word}", "steps": 150, "width": 256, "height": 256, "count": 4}
    status, running = submit(studio, long_params)
    assert status == 202, running
    status, queued = submit(studio, dict(long_params, prompt=f"a queued {word}"))
    assert status == 202, queued
    try:
        wait_for(lambda: http_json("GET", api(studio, f"/jobs/{running['id']}"))[1]["state"] == "running",
                 timeout=60, what="the long job to start")

        # A queued job is cancelled at once.
        status, body = http_json("DELETE", api(studio, f"/jobs/{queued['id']}"))
        assert status == 200 and body["state"] == "cancelled", body

        # A running one stops at its next step, long before its ~minutes of work are done.
        started = time.monotonic()
        status, body = http_json("DELETE", api(studio, f"/jobs/{running['id']}"))
        assert status == 200 and body["state"] in ("running", "cancelled"), body
        finished = studio.wait_job(running["id"], timeout=45)
        assert finished["state"] == "cancelled", finished
        assert time.monotonic() - started < 45
        assert finished["asset_ids"] == []
        assert search_ids(studio, word) == []
    finally:
        for job in (running, queued):
            http_json("DELETE", api(studio, f"/jobs/{job['id']}"))

    # The worker is free again and the cancelled queued job is skipped.
    assert run_job(studio, {"prompt": f"after {word}", "steps": 1, "width": 32, "height": 32}, timeout=60)
    assert studio.wait_job(queued["id"], timeout=10)["state"] == "cancelled"


def test_progress_advances_while_a_job_runs(studio):
    status, job = submit(studio, {"prompt": "a slow progress bar", "steps": 150, "width": 128, "height": 128})
    assert status == 202, job
    try:
        wait_for(lambda: http_json("GET", api(studio, f"/jobs/{job['id']}"))[1]["state"] == "running",
                 timeout=60, what="the job to start")
        seen = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            _, view = http_json("GET", api(studio, f"/jobs/{job['id']}"))
            seen.append((view["progress"], view["stage"]))
            if 0 < view["progress"] < 1:
                break
            time.sleep(0.2)
    finally:
        http_json("DELETE", api(studio, f"/jobs/{job['id']}"))
        studio.wait_job(job["id"], timeout=45)
    assert any(0 < progress < 1 and "step 0/" not in stage for progress, stage in seen), \
        f"progress never moved while the job ran: {seen[-1]}"


def test_health_lists_the_worker_and_the_tiny_profile(studio):
    status, health = http_json("GET", api(studio, "/health"))
    assert status == 200
    assert health["profile"] == "tiny"
    assert health["images_are_noise"] is True
    assert len(health["workers"]) >= 1
    worker = health["workers"][0]
    assert worker["profile"] == "tiny"
    assert "gpu" in worker["queues"]
    assert worker["hostname"].startswith("studio-embedded@")


def test_openapi_lists_the_routes_and_docs_answer(studio):
    status, spec = http_json("GET", api(studio, "/openapi.json"))
    assert status == 200
    paths = spec["paths"]
    expected = {
        "/api/v1/jobs": {"post"},
        "/api/v1/jobs/{job_id}": {"get", "delete"},
        "/api/v1/assets": {"get"},
        "/api/v1/assets/{asset_id}": {"get", "patch", "delete"},
        "/api/v1/assets/{asset_id}/file": {"get"},
        "/api/v1/health": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, f"{path} missing from {sorted(paths)}"
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    status, content_type, html = get_bytes(api(studio, "/docs"))
    assert status == 200
    assert content_type.startswith("text/html")
    assert b"/api/v1/openapi.json" in html
