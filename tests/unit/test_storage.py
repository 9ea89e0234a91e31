import io
import os

import pytest
from PIL import Image

from storage import repo
from storage.files import FileStore
from storage.models import JobState
from storage.pngmeta import png_with_params, read_params


@pytest.fixture
def owner(db):
    with db.session() as session:
        return repo.ensure_user(session).id


def test_file_store_is_content_addressed(tmp_path):
    store = FileStore(tmp_path)
    digest = store.put(b"hello", "png")
    assert store.put(b"hello", "png") == digest
    assert store.path(digest, "png").read_bytes() == b"hello"
    assert store.path(digest, "png").relative_to(tmp_path).parts[:2] == (digest[:2], digest[2:4])
    with pytest.raises(ValueError):
        store.path("../../etc/passwd", "png")


def test_a_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    store = FileStore(tmp_path)

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(b"image bytes", "png")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_png_carries_its_parameters():
    params = {"prompt": "a fox", "full_prompt": "photo of a fox", "seed": 9, "steps": 4, "width": 64, "height": 64,
              "sampler": "euler", "guidance": 5.0, "profile": "tiny", "stages": ["base"], "full_negative_prompt": "blur"}
    data = png_with_params(Image.new("RGB", (64, 64), "red"), params)
    assert read_params(data) == params
    text = Image.open(io.BytesIO(data)).text["parameters"]
    assert text.startswith("photo of a fox\nNegative prompt: blur\nSteps: 4, Sampler: euler, CFG scale: 5.0, Seed: 9")


def test_migration_is_idempotent(db):
    db.migrate()
    with db.session() as session:
        assert repo.ensure_user(session).id == repo.ensure_user(session).id


def new_job(db, owner, **params):
    with db.session() as session:
        return repo.create_job(session, owner, "generate", params, "tiny", "create")


def add_asset(db, owner, job, index=0, prompt="a fox", stage="final", digest="a" * 64):
    with db.session() as session:
        return repo.store_asset(session, owner_id=owner, job_id=job.id, stage=stage, output_index=index,
                                file_hash=digest, width=64, height=64, prompt=prompt, params={"seed": index},
                                origin=job.origin)


def test_a_redelivered_job_stores_each_image_once(db, owner):
    job = new_job(db, owner)
    first = add_asset(db, owner, job)
    assert add_asset(db, owner, job).id == first.id
    with db.session() as session:
        assert len(repo.list_assets(session, owner, repo.AssetFilter())) == 1


def test_claim_cancel_and_finish(db, owner):
    job = new_job(db, owner)
    with db.session() as session:
        assert repo.claim_job(session, job.id, "w1").state == JobState.RUNNING
        assert repo.claim_job(session, job.id, "w1").attempts == 2  # a redelivery
        assert repo.record_progress(session, job.id, 0.5, "Base: step 2/4") is False
        repo.request_cancel(session, repo.get_job(session, job.id))
        assert repo.record_progress(session, job.id, 0.6, "Base: step 3/4") is True
        repo.finish_job(session, job.id, JobState.CANCELLED, "cancelled")
        assert repo.claim_job(session, job.id, "w1") is None
    queued = new_job(db, owner)
    with db.session() as session:
        assert repo.request_cancel(session, repo.get_job(session, queued.id)).state == JobState.CANCELLED
        assert repo.claim_job(session, queued.id, "w1") is None


def test_listing_filters_and_owner_isolation(db, owner):
    with db.session() as session:
        other = repo.ensure_user(session, "someone-else").id
    job = new_job(db, owner)
    fox = add_asset(db, owner, job, 0, "a red fox in snow")
    add_asset(db, owner, job, 1, "a blue whale")
    add_asset(db, owner, job, 2, "stage image", stage="base")
    with db.session() as session:
        repo.set_favourite(session, repo.get_asset(session, fox.id, owner), True)
        list_ = lambda **kw: [a.prompt for a in repo.list_assets(session, owner, repo.AssetFilter(**kw))]  # noqa: E731
        assert list_() == ["a blue whale", "a red fox in snow"]  # newest first
        assert list_(search="FOX snow") == ["a red fox in snow"]
        assert list_(favourites_only=True) == ["a red fox in snow"]
        assert list_(origin="api") == []
        assert len(list_(include_stages=True)) == 3
        assert repo.list_assets(session, other, repo.AssetFilter()) == []
        assert repo.get_asset(session, fox.id, other) is None
        assert repo.get_job(session, job.id, other) is None


def test_delete_reports_a_file_only_when_no_other_asset_uses_it(db, owner):
    job = new_job(db, owner)
    a = add_asset(db, owner, job, 0, digest="b" * 64)
    b = add_asset(db, owner, job, 1, digest="b" * 64)
    with db.session() as session:
        assert repo.delete_asset(session, repo.get_asset(session, a.id, owner)) is None
        assert repo.delete_asset(session, repo.get_asset(session, b.id, owner)) == "b" * 64
