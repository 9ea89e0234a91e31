"""Per-user limits as a user meets them: jobs at once, pictures per job, upload size, storage quota; and the
fair-share priority each job is sent with."""

import io

import pytest
from PIL import Image

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.avatars import AvatarLibrary
from storage.files import FileStore
from storage.loras import LoraLibrary
from storage.materials import MaterialLibrary
from storage.models import Job
from storage.quota import MB, LimitExceeded, Limits, Quota
from tasks.celery_app import LOWEST_PRIORITY
from tasks.client import OverLimit, StudioClient, images_requested
from tasks.identity_client import IdentityClient
from tasks.lora_client import LoraClient

JOB = {"prompt": "a kite", "width": 64, "height": 64, "steps": 2}


class SentTasks:
    """Stands in for Celery: keeps what would have been sent."""

    def __init__(self):
        self.sent = []
        self.conf = type("Conf", (), {"broker_url": "memory://"})()

    def send_task(self, name, **options):
        self.sent.append(options)


@pytest.fixture
def studio(db, tmp_path):
    files = FileStore(Settings(data_dir=tmp_path).files)
    with db.session() as session:
        alice, bob = repo.ensure_user(session, "alice").id, repo.ensure_user(session, "bob").id
    quota = Quota(db, files, Limits(max_queued_jobs=3, max_images_per_job=4, max_upload_bytes=MB // 2, quota_bytes=MB))
    celery = SentTasks()
    client = StudioClient(db, celery, load_profiles()["tiny"], load_styles(), quota=quota)
    return client, celery, MaterialLibrary(db, files, quota.limits.max_upload_bytes, quota), alice, bob


def jobs_of(client, owner):
    with client.db.session() as session:
        return session.query(Job).filter(Job.owner_id == owner).count()


def png(size=(64, 64), noise=False) -> bytes:
    image = Image.effect_noise(size, 80).convert("RGB") if noise else Image.new("RGB", size, (200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_jobs_at_once_are_limited_per_user_and_freed_by_cancelling(studio):
    client, _, _, alice, bob = studio
    jobs = [client.submit(alice, "generate", JOB) for _ in range(3)]
    with pytest.raises(OverLimit, match="You have 3 jobs waiting or running, the most you can have at once") as refused:
        client.submit(alice, "generate", JOB)
    assert refused.value.status == 429 and jobs_of(client, alice) == 3  # no row for the refused job
    client.submit(bob, "generate", JOB)  # alice's backlog is hers alone
    client.cancel(alice, jobs[0].id)
    client.submit(alice, "generate", JOB)


def test_pictures_per_job_are_limited(studio):
    client, _, _, alice, _ = studio
    with pytest.raises(OverLimit, match="would make 5 pictures; one job makes at most 4") as refused:
        client.submit(alice, "generate", dict(JOB, count=5))
    assert refused.value.status == 422 and jobs_of(client, alice) == 0
    client.submit(alice, "generate", dict(JOB, count=4))


def test_pictures_are_counted_for_every_kind():
    assert images_requested({"count": 3}) == 3
    assert images_requested({"scenes": [{}, {}, {}], "variants": 2}) == 6
    assert images_requested({"items": [{"count": 1}, {"count": 2}]}) == 3
    assert images_requested({"lora_id": "x"}) == 0  # a check or a training makes none


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(studio):
    _, _, materials, alice, _ = studio
    with pytest.raises(LimitExceeded, match=r"The file is 0\.6 MB; uploads are limited to 0 MB each|uploads are limited") as refused:
        materials.upload(alice, b"\0" * 600_000, "big.png")
    assert refused.value.status == 413 and materials.list(alice) == []


def test_a_full_storage_quota_refuses_uploads_and_jobs_until_something_is_deleted(studio):
    client, _, materials, alice, bob = studio
    kept = []
    with pytest.raises(LimitExceeded, match="Your storage is full") as refused:
        for _ in range(10):  # noise PNGs of about 0.2 MB: the fifth or sixth does not fit in 1 MB
            kept.append(materials.upload(alice, png((256, 256), noise=True), "noise.png"))
    assert refused.value.status == 507 and 3 <= len(kept) < 10
    stored = sorted(p.name for p in materials.files.root.rglob("*.png"))
    assert len(stored) == len(kept)  # the refused upload left no file
    client.submit(alice, "generate", JOB)  # under the quota still: a job may take it over
    used = client.quota.used(alice)
    client.quota = Quota(client.db, materials.files, Limits(quota_bytes=used - 1))  # and now it has
    with pytest.raises(OverLimit, match="Your storage is full") as refused:
        client.submit(alice, "generate", JOB)
    assert refused.value.status == 507
    client.submit(bob, "generate", JOB)  # bob's storage is his own
    materials.delete(alice, kept[0].id)
    client.submit(alice, "generate", JOB)


def test_each_job_is_sent_with_its_owner_s_backlog_as_priority(db, tmp_path):
    with db.session() as session:
        alice, bob = repo.ensure_user(session, "alice").id, repo.ensure_user(session, "bob").id
    celery = SentTasks()
    client = StudioClient(db, celery, load_profiles()["tiny"], load_styles())
    for _ in range(12):
        client.submit(alice, "generate", JOB)
    client.submit(bob, "generate", JOB)
    client.submit(alice, "generate", JOB)
    priorities = [options["priority"] for options in celery.sent]
    # alice's k-th waiting job goes behind everyone's earlier ones; bob's first goes first.
    assert priorities[:12] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9] and LOWEST_PRIORITY == 9
    assert priorities[12] == 0 and priorities[13] == 9


def test_training_pictures_and_avatar_photos_keep_to_the_upload_limit(studio):
    client, _, materials, _, _ = studio
    quota = materials.quota
    big = png((512, 512), noise=True)  # about 0.8 MB, over the 0.5 MB limit
    assert len(big) > quota.limits.max_upload_bytes
    loras = LoraClient(LoraLibrary(client.db, materials.files, quota=quota), client)
    identity = IdentityClient(client, AvatarLibrary(client.db, materials.files, quota), materials)
    for verdicts in (loras.check_images([("big.png", big)]), identity.check_photos([("big.png", big)])):
        assert [v.ok for v in verdicts] == [False] and "MB" in verdicts[0].reason
