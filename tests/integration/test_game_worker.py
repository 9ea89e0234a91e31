"""Game assets through the queue with a real worker process: style-LoRA training (checkpoints, a resume after
the worker is killed, cancelling), transparent sprites and sprite sheets, and the check of uploaded LoRAs."""

from __future__ import annotations

import signal
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import select, update

from storage.files import FileStore
from storage.loras import LoraLibrary
from storage.models import Asset, Job
from tasks.lora_client import LoraClient
from tests.support import training_pngs, wait_for

pytestmark = pytest.mark.integration

# Small and fast on the tiny profile: about 25 ms a step.
TRAINING = {"rank": 8, "learning_rate": 5e-3, "batch_size": 1, "seed": 7}



def lora_client(studio) -> LoraClient:
    return LoraClient(LoraLibrary(studio.db, FileStore(studio.settings.files)), studio.client)


def start_training(studio, name: str = "Blocks", **settings):
    """A new LoRA from the six pictures and its queued train job."""
    lora, job, verdicts = lora_client(studio).start_training(studio.owner, training_pngs(), name, trigger="blockstyle",
                                                             settings=dict(TRAINING, **settings))
    assert all(v.ok for v in verdicts)
    assert lora.state == "training" and lora.job_id == job.id
    return lora, job


def lora_of(studio, lora_id: str):
    return lora_client(studio).library.get(studio.owner, lora_id)


def workdir(studio, job_id: str):
    return studio.settings.files / "work" / job_id


def stored(studio, extension: str) -> list:
    return sorted(studio.settings.files.rglob(f"*.{extension}"))


def job_assets(studio, job_id: str) -> list[Asset]:
    with studio.db.session() as session:
        return list(session.scalars(select(Asset).where(Asset.job_id == job_id)))


def asset_image(studio, asset: Asset) -> Image.Image:
    with Image.open(FileStore(studio.settings.files).path(asset.file_hash, "png")) as image:
        image.load()
        copy = image.copy()
    copy.format = image.format
    return copy


def training_step(studio, job_id: str, steps: int) -> int:
    job = studio.job(job_id)
    return round(job.progress * steps) if job.stage.startswith("training") else 0


# --- training ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(shared_studio):
    """A finished 40-step training with samples every 20 steps: (LoRA, job)."""
    studio = shared_studio
    lora, job = start_training(studio, steps=40, sample_every=20, checkpoint_every=20)
    done = studio.wait_job(job.id, 120)
    assert done.state == "succeeded", done.error
    return lora_of(studio, lora.id), done


def test_training_stores_the_weights_curve_and_samples(shared_studio, trained):
    studio = shared_studio
    lora, job = trained
    assert lora.state == "ready" and lora.kind == "style" and lora.usable
    assert job.stage.startswith("trained: 40 steps")
    assert lora.settings["steps"] == 40 and lora.settings["checkpoint_every"] == 20
    losses = lora.metrics["losses"]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert lora.metrics["step"] == lora.metrics["total"] == 40
    assert lora.metrics["resumed_from"] is None

    samples = sorted(lora.metrics["samples"], key=lambda s: s["step"])
    assert [s["step"] for s in samples] == [20, 40]
    by_id = {a.id: a for a in job_assets(studio, job.id)}
    assert set(by_id) == {s["asset_id"] for s in samples}
    for sample in samples:
        asset = by_id[sample["asset_id"]]
        assert (asset.origin, asset.stage, asset.output_index) == ("train", "sample", sample["step"])
        assert asset.params["lora_id"] == lora.id and asset.params["kind"] == "training_sample"
        assert asset_image(studio, asset).size == (asset.width, asset.height)
    assert job.asset_ids == []  # samples are not the job's results

    path = FileStore(studio.settings.files).path(lora.file_hash, "safetensors")
    assert path.is_file() and path.stat().st_size == lora.file_size
    tensors = load_safetensors(path.read_bytes())
    assert tensors and all("lora" in key for key in tensors)
    assert not workdir(studio, job.id).exists()


def test_killed_worker_resumes_training_from_its_last_checkpoint(own_studio):
    studio = own_studio
    steps = 240
    studio.start_worker("worker-1.log")
    lora, job = start_training(studio, steps=steps, sample_every=0, checkpoint_every=20)
    wait_for(lambda: training_step(studio, job.id, steps) >= 45, 90, 0.05, "training to pass step 40")
    studio.worker.kill(signal.SIGKILL)
    studio.worker.process.wait(10)
    killed_at = training_step(studio, job.id, steps)
    assert killed_at < steps and studio.job(job.id).state == "running"
    assert (workdir(studio, job.id) / "latest").is_file()
    assert lora_of(studio, lora.id).state == "training"

    studio.start_worker("worker-2.log")
    stages = []

    def finished():
        current = studio.job(job.id)
        stages.append(current.stage)
        return current.finished and current

    done = wait_for(finished, 120, 0.05, "the resumed training")
    assert done.state == "succeeded", done.error
    assert done.attempts == 2
    resumed = [s for s in stages if "resumed at step" in s]
    assert resumed, stages
    at = int(resumed[0].split("resumed at step ")[1].rstrip(")"))
    assert at >= 20 and at % 20 == 0 and at <= killed_at
    # Every step reported after the restart comes after the checkpoint: it did not start again from step 1.
    # (The first stages seen may be the killed run's last, until the new worker claims the job.)
    claimed = next(i for i, s in enumerate(stages) if not s.startswith("training: step"))
    reported = [s for s in stages[claimed:] if s.startswith("training: step")]
    assert all(s.endswith(f"(resumed at step {at})") for s in reported), reported
    assert min(int(s.split("step ")[1].split("/")[0]) for s in reported) > at

    lora = lora_of(studio, lora.id)
    assert lora.state == "ready"
    assert len(lora.metrics["losses"]) == steps and lora.metrics["resumed_from"] == at
    assert len(lora_client(studio).library.list(studio.owner)) == 1
    assert [p.name for p in stored(studio, "safetensors")] == [f"{lora.file_hash}.safetensors"]
    assert not workdir(studio, job.id).exists()


def test_cancel_training_mid_run_and_before_it_starts(shared_studio):
    studio = shared_studio
    steps = 2000
    running, job = start_training(studio, "Cancelled mid-run", steps=steps, sample_every=0, checkpoint_every=10)
    wait_for(lambda: training_step(studio, job.id, steps) >= 25, 60, 0.05, "training to pass a checkpoint")
    assert workdir(studio, job.id).is_dir()

    # Another training waits behind it; cancelled while queued, it never runs.
    queued, queued_job = start_training(studio, "Cancelled while queued", steps=40)
    assert studio.client.cancel(studio.owner, queued_job.id).state == "cancelled"
    waiting = lora_of(studio, queued.id)
    assert waiting.state == "failed" and waiting.state_note == "Cancelled before it started."

    studio.client.cancel(studio.owner, job.id)
    done = studio.wait_job(job.id, 30)
    assert done.state == "cancelled" and done.progress < 1
    stopped = lora_of(studio, running.id)
    assert stopped.state == "failed" and "cancelled at step" in stopped.state_note
    assert stopped.file_hash is None and not stopped.usable
    assert not workdir(studio, job.id).exists()

    assert studio.job(queued_job.id).attempts == 0
    assert lora_of(studio, queued.id).state == "failed"


def test_training_cancelled_while_its_worker_was_down_is_not_left_training(own_studio):
    studio = own_studio
    studio.start_worker("worker-1.log")
    lora, job = start_training(studio, steps=400, sample_every=0, checkpoint_every=20)
    wait_for(lambda: training_step(studio, job.id, 400) >= 1, 90, 0.05, "training to start")
    studio.worker.kill(signal.SIGKILL)
    studio.worker.process.wait(10)
    assert studio.client.cancel(studio.owner, job.id).state == "running"  # asked; no one is there to stop it
    studio.start_worker("worker-2.log")
    done = studio.wait_job(job.id, 60)
    assert done.state == "cancelled" and done.attempts == 1
    stopped = lora_of(studio, lora.id)
    assert stopped.state == "failed" and "Cancelled" in stopped.state_note
    lora_client(studio).library.delete(studio.owner, lora.id)  # not stuck "training"
    assert lora_of(studio, lora.id) is None


# --- sprites and sheets -----------------------------------------------------------------------------------


def test_transparent_sprites_and_a_sheet_stored_once_even_when_redelivered(shared_studio):
    studio = shared_studio
    params = {"prompt": "a fox ranger with a bow", "asset_type": "character", "transparent": True,
              "sprite_sheet": True, "count": 3, "steps": 2, "width": 64, "height": 96, "seed": 321}
    job = studio.client.submit(studio.owner, "game_asset", params, origin="game")
    done = studio.wait_job(job.id, 90)
    assert done.state == "succeeded", done.error
    assert len(done.asset_ids) == 4

    assets = job_assets(studio, job.id)
    finals = sorted((a for a in assets if a.stage == "final"), key=lambda a: a.output_index)
    generated = sorted((a for a in assets if a.stage == "generated"), key=lambda a: a.output_index)
    assert [a.id for a in finals] == done.asset_ids
    *sprites, sheet = finals
    assert [a.kind for a in sprites] == ["image"] * 3 and sheet.kind == "sprite_sheet"
    assert [a.output_index for a in generated] == [0, 1, 2]
    assert all(a.origin == "game" for a in assets)
    assert [a.params["seed"] for a in sprites] == [321, 322, 323]
    for asset in (*sprites, sheet):
        assert asset.mime == "image/png"
        image = asset_image(studio, asset)
        assert image.format == "PNG" and image.mode == "RGBA" and image.size == (asset.width, asset.height)
    for asset in generated:
        assert asset_image(studio, asset).size == (64, 96)

    frames = sheet.params["frames"]
    assert [f["asset_id"] for f in frames] == [a.id for a in sprites]
    assert sheet.params["kind"] == "sprite_sheet" and sheet.params["sprite_sheet"] is True
    sheet_alpha = np.asarray(asset_image(studio, sheet).getchannel("A"))
    assert sheet_alpha.min() == 0  # the cells around the sprites are clear

    # A redelivery of the finished job's message stores nothing new.
    before = Counter((a.stage, a.output_index) for a in assets)
    assert set(before.values()) == {1}
    with studio.db.session() as session:
        session.execute(update(Job).where(Job.id == job.id).values(state="queued", finished_at=None))
        session.commit()
    studio.client.celery.send_task("studio.game_asset", args=[job.id], queue="gpu")
    again = wait_for(lambda: (j := studio.job(job.id)).attempts == 2 and j.finished and j, 90, 0.1, "the redelivery")
    assert again.state == "succeeded", again.error
    assert again.asset_ids == done.asset_ids
    after = job_assets(studio, job.id)
    assert {a.id for a in after} == {a.id for a in assets}
    assert Counter((a.stage, a.output_index) for a in after) == before


# --- uploaded LoRAs ---------------------------------------------------------------------------------------


def check_upload(studio, data: bytes, filename: str):
    lora, job = lora_client(studio).upload(studio.owner, data, filename)
    assert lora.state == "checking" and lora.kind == "uploaded"
    return lora_of(studio, lora.id), studio.wait_job(job.id, 60)


def test_uploaded_lora_is_checked_against_the_base_model(shared_studio, trained):
    studio = shared_studio
    trained_lora, _ = trained
    data = FileStore(studio.settings.files).path(trained_lora.file_hash, "safetensors").read_bytes()

    # The trained file, uploaded again: it fits.
    lora, job = check_upload(studio, data, "blocks.safetensors")
    assert job.state == "succeeded", job.error
    lora = lora_of(studio, lora.id)
    assert lora.state == "ready" and lora.usable
    assert "LoRA matrices fit the unet" in lora.state_note

    # The same weights aimed at layers the base model does not have.
    renamed = {key.replace("attn1.to_q", "attn9.to_nowhere"): value for key, value in load_safetensors(data).items()}
    assert renamed.keys() != load_safetensors(data).keys()
    lora, job = check_upload(studio, save_safetensors(renamed), "renamed.safetensors")
    assert job.state == "failed"
    lora = lora_of(studio, lora.id)
    assert lora.state == "rejected" and not lora.usable
    assert lora.state_note == job.error
    # It says how many of the file's matrices found no layer to adapt.
    moved = sum(1 for key in renamed if "attn9.to_nowhere" in key)
    assert moved and f"Only {len(renamed) - moved} of the file's {len(renamed)} LoRA matrices match layers" in job.error


def test_a_check_that_cannot_run_fails_the_upload(shared_studio, trained):
    studio = shared_studio
    trained_lora, _ = trained
    data = FileStore(studio.settings.files).path(trained_lora.file_hash, "safetensors").read_bytes()
    # Uploaded to a profile whose base model is missing: the check job cannot load it.
    client = LoraClient(LoraLibrary(studio.db, FileStore(studio.settings.files)), studio.client_for("broken"))
    lora, job = client.upload(studio.owner, data, "blocks.safetensors")
    done = studio.wait_job(job.id, 60)
    assert done.state == "failed" and "Could not load the base model" in done.error
    lora = lora_of(studio, lora.id)
    assert lora.state == "failed" and lora.state_note == done.error  # not stuck "checking"
    client.library.delete(studio.owner, lora.id)
