"""Identity portraits and the photo studio through the queue with a real worker process: PhotoMaker
portraits ranked by face similarity, mixing two people, attribute edits, an avatar per style, and a
digital avatar from checked photos to a trained LoRA rendered into photo templates, then deleted."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import select

from storage.avatars import AvatarLibrary
from storage.files import FileStore
from storage.materials import MaterialLibrary
from storage.models import Asset, AvatarPhoto
from tasks.client import InvalidRequest
from tasks.identity_client import IdentityClient
from tests.support_faces import PERSON_A, PERSON_B, face_photo, person_photos

pytestmark = pytest.mark.integration

FAST = {"steps": 2, "seed": 11}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def identity_client(studio) -> IdentityClient:
    files = FileStore(studio.settings.files)
    return IdentityClient(studio.client, AvatarLibrary(studio.db, files), MaterialLibrary(studio.db, files))


def job_assets(studio, job_id: str) -> list[Asset]:
    with studio.db.session() as session:
        return list(session.scalars(select(Asset).where(Asset.job_id == job_id).order_by(Asset.output_index)))


def finished(studio, job) -> object:
    done = studio.wait_job(job.id, 180)
    assert done.state == "succeeded", done.error
    return done


@pytest.fixture(scope="module")
def faces_of_a(shared_studio) -> list[str]:
    return identity_client(shared_studio).upload_faces(
        shared_studio.owner, [(f"a{i}.png", png(p)) for i, p in enumerate(person_photos(PERSON_A, 2, seed=1))])


@pytest.fixture(scope="module")
def portrait_job(shared_studio, faces_of_a):
    studio = shared_studio
    job = identity_client(studio).portrait(studio.owner, dict(FAST, prompt="a woman reading in a garden", photos=faces_of_a,
                                                              stylization="sketch", count=2, best_of=2))
    return finished(studio, job)


def test_a_portrait_keeps_the_candidates_most_like_the_person(shared_studio, portrait_job):
    assets = job_assets(shared_studio, portrait_job.id)
    finals = [a for a in assets if a.stage == "final"]
    candidates = [a for a in assets if a.stage == "candidate"]
    assert len(finals) == 2 and len(candidates) == 2
    for asset in assets:
        assert asset.params["kind"] == "identity" and "similarity" in asset.params
        assert "pencil sketch" in asset.params["full_prompt"] and "a woman reading" in asset.params["full_prompt"]
        assert (asset.width, asset.height) == (64, 64)
    # Best first: each kept picture at least as like the person as every candidate left out.
    ranked = [a.params["similarity"] for a in finals + candidates]
    known = [s for s in ranked if s is not None]
    assert known == sorted(known, reverse=True) and ranked[:len(known)] == known
    # Each picture redraws alone from its own seed.
    assert len({a.params["seed"] for a in assets}) == 4
    portraits = identity_client(shared_studio).portraits(shared_studio.owner, portrait_job.id)
    assert [p.asset_id for p in portraits] == [a.id for a in finals]
    assert all(("face similarity" in p.caption) or ("no face found" in p.caption) for p in portraits)


def test_an_attribute_edit_holds_the_identity_and_the_seed(shared_studio, portrait_job):
    studio = shared_studio
    before = next(a for a in job_assets(studio, portrait_job.id) if a.stage == "final")
    catalogue = identity_client(studio).catalogue
    option = next(iter(catalogue.attributes["hair_colour"].options.values()))
    job = identity_client(studio).edit(studio.owner, before.id, {"hair_colour": option.name})
    assert job.params["items"][0]["generation"]["seed"] == before.params["seed"]
    assert job.params["photo_hashes"] == before.params["photos"] or job.params["photos"] == before.params["photos"]
    finished(studio, job)
    after = next(a for a in job_assets(studio, job.id) if a.stage == "final")
    assert after.parent_id == before.id and after.params["edit_of"] == before.id
    assert option.words in after.params["full_prompt"] and after.params["edits"] == {"hair_colour": option.name}
    assert after.params["seed"] == before.params["seed"]
    assert after.params["full_negative_prompt"] == before.params["full_negative_prompt"]  # the style's negative once


def test_two_people_mixed_and_a_photo_without_a_face(shared_studio, faces_of_a):
    studio = shared_studio
    client = identity_client(studio)
    faces_of_b = client.upload_faces(studio.owner, [("b.png", png(person_photos(PERSON_B, 1, seed=2)[0]))])
    mixed = client.portrait(studio.owner, dict(FAST, prompt="a man on a beach", photos=faces_of_a, mix_photos=faces_of_b,
                                               mix=0.5, best_of=1))
    finished(studio, mixed)
    assert job_assets(studio, mixed.id)[0].params["mix"] == 0.5

    empty = client.upload_faces(studio.owner, [("empty.png", png(face_photo([], seed=3)))])
    job = client.portrait(studio.owner, dict(FAST, prompt="a man", photos=faces_of_a + empty, best_of=1))
    failed = studio.wait_job(job.id, 120)
    assert failed.state == "failed" and "No face was found in photo 3" in failed.error


def test_requests_a_user_must_correct(shared_studio, faces_of_a):
    client = identity_client(shared_studio)
    with pytest.raises(InvalidRequest, match="class word"):
        client.portrait(shared_studio.owner, dict(FAST, prompt="a castle at dusk", photos=faces_of_a))
    with pytest.raises(InvalidRequest, match="Upload 1 to 4 photos"):
        client.portrait(shared_studio.owner, dict(FAST, prompt="a girl"))
    with pytest.raises(InvalidRequest, match="no identity adapter"):
        shared_studio.client_for("broken").submit(shared_studio.owner, "identity", {"prompt": "a girl", "photos": faces_of_a})


def test_an_avatar_per_style_from_one_upload(shared_studio, faces_of_a):
    studio = shared_studio
    styles = list(identity_client(studio).catalogue.avatar_styles)[:3]
    job = identity_client(studio).avatar_batch(studio.owner, dict(FAST, subject="a woman", photos=faces_of_a[:1],
                                                                  styles=styles, best_of=1))
    assert [item["name"] for item in job.params["items"]] == styles
    finished(studio, job)
    finals = [a for a in job_assets(studio, job.id) if a.stage == "final"]
    assert sorted(a.params["preset"] for a in finals) == sorted(styles)
    assert all("woman" in a.params["full_prompt"] for a in finals)


def studio_uploads() -> list[tuple[str, bytes]]:
    """Six good photos of one person, then one of each problem."""
    good = [(f"me-{i}.png", png(p)) for i, p in enumerate(person_photos(PERSON_A, 6, seed=4))]
    logo = Image.new("RGB", (400, 400), "white")
    logo.paste((200, 30, 30), (100, 100, 300, 300))
    return good + [
        ("someone-else.png", png(person_photos(PERSON_B, 1, seed=5)[0])),
        ("blurred.png", png(face_photo([(120, 200, 220, PERSON_A)], seed=6, blur=4))),
        ("group.png", png(face_photo([(20, 40, 180, PERSON_A), (260, 380, 180, PERSON_A)], seed=7))),
        ("far-away.png", png(face_photo([(200, 300, 40, PERSON_A)], seed=8))),
        ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64),
        ("logo.png", png(logo)),
        ("again.png", good[0][1]),
    ]


def test_the_photo_studio_from_photos_to_templates_and_deletion(shared_studio):
    studio = shared_studio
    client = identity_client(studio)
    avatar, check_job, verdicts = client.create_avatar(studio.owner, "Me", "a woman", studio_uploads())
    reasons = {v.name: v.reason for v in verdicts}
    assert reasons["broken.png"].startswith("Unreadable")
    assert reasons["logo.png"].startswith("Not a photo")
    assert reasons["again.png"].startswith("Duplicate of me-0.png")
    assert len(avatar.photos) == 10  # the others were refused at upload and not stored

    finished(studio, check_job)
    checked = {p.name: p for p in client.avatars.get(studio.owner, avatar.id).photos}
    assert "different person" in checked["someone-else.png"].problems[0]
    assert "blurred" in checked["blurred.png"].problems[0]
    assert "2 faces found" in checked["group.png"].problems[0]
    assert "too small" in checked["far-away.png"].problems[0]
    assert {name for name, p in checked.items() if p.verdict == "usable"} == {f"me-{i}.png" for i in range(6)}
    assert all(p.crop_hash for p in checked.values() if p.verdict == "usable")
    assert all(p.similarity > 0.9 for p in checked.values() if p.verdict == "usable")

    train_job = client.train_avatar(studio.owner, avatar.id, {"steps": 20, "sample_every": 10, "checkpoint_every": 10})
    finished(studio, train_job)
    trained = client.avatars.get(studio.owner, avatar.id)
    assert trained.state == "ready" and trained.lora.kind == "avatar"
    assert all(item["caption"] == "a photo of sks woman" for item in trained.lora.dataset)

    drawn = [name for name, t in client.catalogue.photo_templates.items() if t.composition]
    templates = [drawn[0], next(name for name in client.catalogue.photo_templates if name not in drawn)]
    render = client.render_templates(studio.owner, avatar.id, dict(FAST, templates=templates, best_of=1))
    item = render.params["items"][0]["generation"]
    assert "sks woman" in item["prompt"] and item["loras"][0]["file_hash"] == trained.lora.file_hash
    finished(studio, render)
    finals = [a for a in job_assets(studio, render.id) if a.stage == "final"]
    assert sorted(a.params["preset"] for a in finals) == sorted(templates)
    assert all(a.params["avatar_id"] == avatar.id and "similarity" in a.params for a in finals)

    # No face data in the logs: no embedding value of any photo appears in the worker's output.
    with studio.db.session() as session:
        embeddings = [e for e in session.scalars(select(AvatarPhoto.embedding).where(AvatarPhoto.avatar_id == avatar.id)) if e]
    log = studio.worker.output()
    assert embeddings and not any(repr(value)[:10] in log for embedding in embeddings for value in embedding[:16])
    assert client.avatars.get("another-user", avatar.id) is None

    files = FileStore(studio.settings.files)
    owned = [(p.file_hash, "png") for p in checked.values()] + [(p.crop_hash, "png") for p in checked.values() if p.crop_hash]
    owned += [(trained.lora.file_hash, "safetensors")]
    assert all(files.exists(*f) for f in owned)
    client.avatars.delete(studio.owner, avatar.id)
    assert client.avatars.get(studio.owner, avatar.id) is None
    assert [f for f in owned if files.exists(*f)] == []
    # The portraits made from it are the user's results and stay.
    assert all(files.exists(a.file_hash, "png") for a in finals)


def test_more_photos_than_the_limit_each_get_a_message(shared_studio):
    photos = [(f"p{i}.png", png(p)) for i, p in enumerate(person_photos(PERSON_A, 25, seed=9))]
    verdicts = identity_client(shared_studio).check_photos(photos)
    assert len(verdicts) == 25
    assert all(v.ok for v in verdicts[:20])
    assert all(not v.ok and "at most 20 photos" in v.reason for v in verdicts[20:])


def test_a_check_that_fails_can_be_run_again(shared_studio):
    studio = shared_studio
    client = identity_client(studio)
    photos = [(f"me-{i}.png", png(p)) for i, p in enumerate(person_photos(PERSON_A, 5, seed=12))]
    avatar, job, _ = client.create_avatar(studio.owner, "Retry", "a man", photos)
    finished(studio, job)
    assert client.avatars.get(studio.owner, avatar.id).state == "checked"

    files = FileStore(studio.settings.files)
    lost = avatar.photos[2].file_hash
    kept = files.path(lost, "png").read_bytes()
    files.delete(lost, "png")
    failed = studio.wait_job(client.check_again(studio.owner, avatar.id).id, 60)
    assert failed.state == "failed"
    broken = client.avatars.get(studio.owner, avatar.id)
    assert broken.state == "check failed" and "deleted from the file store" in broken.check_error
    with pytest.raises(InvalidRequest, match="check the photos again"):
        client.train_avatar(studio.owner, avatar.id)

    assert files.put(kept, "png") == lost
    finished(studio, client.check_again(studio.owner, avatar.id))
    assert client.avatars.get(studio.owner, avatar.id).state == "checked"
