"""Cut-out and product jobs through the queue with a real worker process, and a redelivered product job
that must not store its pictures twice."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from storage import repo
from storage.files import MIME_EXTENSIONS, FileStore
from storage.materials import MaterialLibrary
from storage.models import Asset, Job
from tests.support import wait_for

pytestmark = pytest.mark.integration

CANVAS = (64, 96)
CHILD_STAGES = {"background", "shadow", "product", "mask", "manifest", "psd", "zip"}


def bottle_png() -> bytes:
    """A blue bottle with a red cap on light grey, 160×200."""
    pixels = np.full((200, 160, 3), 240, dtype=np.uint8)
    pixels[60:180, 48:112] = (40, 80, 200)
    pixels[30:60, 67:93] = (200, 40, 40)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def job_assets(studio, job_id: str) -> list[Asset]:
    with studio.db.session() as session:
        return list(session.scalars(select(Asset).where(Asset.job_id == job_id)))


def test_cutout_then_product_job_and_a_redelivery_stores_nothing_twice(shared_studio):
    studio = shared_studio
    files = FileStore(studio.settings.files)
    library = MaterialLibrary(studio.db, files)
    material = library.upload(studio.owner, bottle_png(), "bottle.png", tags="bottle")

    cutout = studio.client.submit(studio.owner, "cutout", {"material_id": material.id}, origin="api")
    done = studio.wait_job(cutout.id, 60)
    assert done.state == "succeeded", done.error
    material = library.get(studio.owner, material.id)
    assert material.mask_source == "segmenter" and material.mask_hash

    params = {"material_id": material.id, "scenes": ["studio_seamless"], "variants": 2, "canvas_format": "custom",
              "width": CANVAS[0], "height": CANVAS[1], "steps": 2, "seed": 900}
    product = studio.client.submit(studio.owner, "product", params, origin="api")
    assert product.params["mask_hash"] == material.mask_hash
    done = studio.wait_job(product.id, 90)
    assert done.state == "succeeded", done.error
    assert done.attempts == 1
    assert len(done.asset_ids) == 2

    assets = job_assets(studio, product.id)
    finals = sorted((a for a in assets if a.stage == "final"), key=lambda a: a.output_index)
    assert [a.id for a in finals] == done.asset_ids
    assert [a.output_index for a in finals] == [0, 1]
    assert [a.params["seed"] for a in finals] == [900, 901]
    for composite in finals:
        assert (composite.width, composite.height) == CANVAS and composite.parent_id is None
        with studio.db.session() as session:
            children = repo.child_assets(session, composite.id, studio.owner)
        assert sorted(c.stage for c in children) == sorted(CHILD_STAGES)
        assert all(c.job_id == product.id and c.output_index == composite.output_index for c in children)
        for asset in (composite, *children):
            assert files.path(asset.file_hash, MIME_EXTENSIONS[asset.mime]).is_file(), asset.stage
    assert len(assets) == 2 * (1 + len(CHILD_STAGES))
    before = Counter((a.stage, a.output_index) for a in assets)
    assert set(before.values()) == {1}

    # A redelivery of the finished job's message: the row back to queued, the task sent again.
    with studio.db.session() as session:
        session.execute(update(Job).where(Job.id == product.id).values(state="queued", finished_at=None))
        session.commit()
    studio.client.celery.send_task("studio.product", args=[product.id], queue="gpu")

    def delivered_again():
        job = studio.job(product.id)
        return job.attempts == 2 and job.finished and job

    again = wait_for(delivered_again, 60, 0.1, "the redelivered job")
    assert again.state == "succeeded", again.error
    assert again.asset_ids == done.asset_ids
    after = job_assets(studio, product.id)
    assert len(after) == len(assets)
    assert {a.id for a in after} == {a.id for a in assets}
    assert Counter((a.stage, a.output_index) for a in after) == before
