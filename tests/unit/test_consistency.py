"""``python app.py check``: rows whose file is gone, orphan files, leftovers of interrupted writes, and --fix."""

import io
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta

import pytest
from PIL import Image

from settings import Settings
from storage import repo
from storage.consistency import check_storage
from storage.db import Database
from storage.files import FileStore
from storage.materials import MaterialLibrary
from storage.models import Asset, Job, UserTemplate
from tests.support import ROOT

HOUR = 3600


def png(colour=(200, 30, 30), size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def age(path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.fixture
def files(tmp_path):
    return FileStore(tmp_path / "files")


@pytest.fixture
def owner(db):
    with db.session() as session:
        return repo.ensure_user(session, "alice").id


def store_result(db, files, owner, data: bytes, job_id: str | None = None, index: int = 0) -> Asset:
    """What a worker does: the file, then its asset row (under a job row made when the job was submitted)."""
    digest = files.put(data, "png")
    with db.session() as session:
        if job_id is None:
            job_id = repo.create_job(session, owner, "generate", {}, "tiny", "create").id
        return repo.store_asset(session, owner_id=owner, job_id=job_id, stage="final", output_index=index,
                                file_hash=digest, mime="image/png", width=8, height=8)


def test_a_clean_store_reports_nothing(db, files, owner):
    store_result(db, files, owner, png())
    MaterialLibrary(db, files).upload(owner, png((10, 200, 10), (64, 64)), "bottle.png")
    # Previews are files of the store no row refers to, by design.
    (files.root / "previews" / "tiny").mkdir(parents=True)
    (files.root / "previews" / "tiny" / "watercolor.png").write_bytes(png())
    report = check_storage(db, files)
    assert report.problems == [] and report.other == []
    assert report.references == 2 and report.stored == 2
    assert "Everything is consistent." in report.text()


def test_a_missing_file_and_an_orphan_are_found(db, files, owner):
    lost = store_result(db, files, owner, png((1, 2, 3)))
    kept = store_result(db, files, owner, png((4, 5, 6)))
    files.delete(lost.file_hash, "png")
    orphan = files.put(png((7, 8, 9)), "png")
    report = check_storage(db, files)
    assert [(m.reference.table, m.reference.row_id, m.reference.digest) for m in report.missing] == \
        [("assets", lost.id, lost.file_hash)]
    assert report.missing[0].owner == "alice" and lost.job_id in report.missing[0].what
    assert [o.path for o in report.orphans] == [files.path(orphan, "png").relative_to(files.root)]
    assert len(report.problems) == 2 and kept.file_hash not in report.text()
    assert "2 problem(s) remain" in report.text()


def test_fix_deletes_old_orphans_and_temporary_files_but_keeps_fresh_ones(db, files, owner):
    store_result(db, files, owner, png())
    old, fresh = files.put(png((1, 1, 1)), "png"), files.put(png((2, 2, 2)), "png")
    age(files.path(old, "png"), 2 * HOUR)
    folder = files.path(old, "png").parent
    old_temp, fresh_temp = folder / ".incoming-abc123", folder / ".incoming-def456"
    old_temp.write_bytes(b"half a file")
    fresh_temp.write_bytes(b"being written")
    age(old_temp, 2 * HOUR)

    report = check_storage(db, files, fix=True)  # the default grace: one hour
    assert not files.exists(old, "png") and not old_temp.exists()
    assert files.exists(fresh, "png") and fresh_temp.exists()
    assert [(o.path.name, o.deleted) for o in report.orphans] == sorted([(f"{old}.png", True), (f"{fresh}.png", False)])
    assert [(t.path.name, t.deleted) for t in report.temporary] == [(".incoming-abc123", True), (".incoming-def456", False)]
    assert "kept: younger than the grace period" in report.text()
    assert len(report.problems) == 2  # the fresh ones remain, and are still reported

    report = check_storage(db, files, fix=True, grace=timedelta(0))
    assert report.problems == [] and not files.exists(fresh, "png") and not fresh_temp.exists()
    assert check_storage(db, files).problems == []


def test_an_orphan_used_again_is_fresh_again(db, files, owner):
    """A job storing content that an old orphan already holds touches it: --fix leaves it to the row coming."""
    data = png((3, 3, 3))
    digest = files.put(data, "png")
    age(files.path(digest, "png"), 2 * HOUR)
    assert files.put(data, "png") == digest  # the worker's put; its row is not committed yet
    report = check_storage(db, files, fix=True)
    assert files.exists(digest, "png") and [o.deleted for o in report.orphans] == [False]


def test_fix_deletes_an_asset_row_whose_file_is_gone_and_keeps_its_job(db, files, owner):
    lost = store_result(db, files, owner, png((1, 2, 3)))
    child = store_result(db, files, owner, png((4, 5, 6)), job_id=lost.job_id, index=1)
    with db.session() as session:
        session.get(Asset, child.id).parent_id = lost.id
        session.commit()
    files.delete(lost.file_hash, "png")
    report = check_storage(db, files, fix=True, grace=timedelta(0))
    assert [m.deleted for m in report.missing] == [True] and report.problems == []
    assert "row deleted" in report.text()
    with db.session() as session:
        assert session.get(Asset, lost.id) is None
        assert session.get(Job, lost.job_id) is not None
        assert session.get(Asset, child.id).parent_id is None
    assert check_storage(db, files).problems == []


def test_other_rows_whose_file_is_gone_are_reported_with_advice_not_deleted(db, files, owner):
    materials = MaterialLibrary(db, files)
    material = materials.upload(owner, png((10, 200, 10), (64, 64)), "bottle.png", name="bottle")
    asset = store_result(db, files, owner, png((9, 9, 9)))
    with db.session() as session:
        template = UserTemplate(owner_id=owner, name="hero", title="Hero", tab="create", prompt="a {product}",
                                preview_hash=asset.file_hash)
        session.add(template)
        session.commit()
    files.delete(material.file_hash, "png")
    with db.session() as session:
        repo.delete_asset(session, session.get(Asset, asset.id))
    files.delete(asset.file_hash, "png")  # the template's preview outlives its result, but here it went too

    report = check_storage(db, files, fix=True, grace=timedelta(0))
    found = {(m.reference.table, m.reference.row_id): m for m in report.missing}
    assert set(found) == {("materials", material.id), ("user_templates", template.id)}
    assert not any(m.deleted for m in report.missing) and len(report.problems) == 2
    text = report.text()
    assert "material 'bottle', user alice" in text and "uploads the photo again" in text
    assert "template 'hero'" in text and "saves it again from a result" in text
    assert materials.get(owner, material.id) is not None


def test_a_store_that_looks_unmounted_loses_no_rows(db, files, owner):
    assets = [store_result(db, files, owner, png((i, i, i))) for i in range(12)]
    for asset in assets:
        files.delete(asset.file_hash, "png")
    report = check_storage(db, files, fix=True, grace=timedelta(0))
    assert len(report.missing) == 12 and not any(m.deleted for m in report.missing)
    assert "no rows deleted" in report.text() and "not mounted" in report.text()


def test_the_wrong_database_deletes_no_files(tmp_path, files):
    digests = [files.put(png((i, i, i)), "png") for i in range(12)]
    for digest in digests:
        age(files.path(digest, "png"), 2 * HOUR)
    empty = Database(f"sqlite:///{tmp_path / 'other.sqlite'}")
    empty.migrate()
    report = check_storage(empty, files, fix=True)
    assert len(report.orphans) == 12 and all(files.exists(d, "png") for d in digests)
    assert "wrong database" in report.text()
    empty.dispose()


def test_training_folders_of_finished_jobs_are_leftovers(db, files, owner):
    with db.session() as session:
        running = repo.create_job(session, owner, "train_lora", {}, "tiny", "game")
        running.state = "running"
        done = repo.create_job(session, owner, "train_lora", {}, "tiny", "game")
        done.state = "failed"
        session.commit()
    for job in (running, done):
        (files.root / "work" / job.id / "step-10").mkdir(parents=True)
        (files.root / "work" / job.id / "step-10" / "lora.safetensors").write_bytes(b"x" * 10)
        for path in (files.root / "work" / job.id).rglob("*"):
            age(path, 2 * HOUR)
        age(files.root / "work" / job.id, 2 * HOUR)
    report = check_storage(db, files, fix=True)
    assert [str(w.path) for w in report.work] == [f"work/{done.id}"] and report.work[0].deleted
    assert (files.root / "work" / running.id).is_dir() and not (files.root / "work" / done.id).exists()


CRASHING_WORKER = textwrap.dedent("""
    import io, os, signal, sys
    from PIL import Image
    from storage import repo
    from storage.db import Database
    from storage.files import FileStore
    from storage.models import Asset

    db, files, job_id, owner = Database(sys.argv[1]), FileStore(sys.argv[2]), sys.argv[3], sys.argv[4]
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (12, 34, 56)).save(buffer, format="PNG")
    digest = files.put(buffer.getvalue(), "png")
    print(digest, flush=True)
    with db.session() as session:
        session.add(Asset(owner_id=owner, job_id=job_id, stage="final", output_index=0, file_hash=digest,
                          mime="image/png", width=8, height=8))
        session.flush()  # the row is written, not committed: then the process is killed
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("recovery", ["fix", "redo"])
def test_a_worker_killed_between_its_file_and_its_row(db, files, owner, recovery):
    with db.session() as session:
        job = repo.create_job(session, owner, "generate", {}, "tiny", "create")
    store_result(db, files, owner, png())  # an earlier job's result, which must be left as it is
    worker = subprocess.run([sys.executable, "-c", CRASHING_WORKER, db.url, str(files.root), job.id, owner],
                            capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=60)
    assert worker.returncode == -9, worker.stderr
    digest = worker.stdout.strip()

    report = check_storage(db, files)
    assert report.missing == [] and report.temporary == [] and report.work == []
    assert [o.path for o in report.orphans] == [files.path(digest, "png").relative_to(files.root)]
    assert len(report.problems) == 1
    with db.session() as session:
        assert session.get(Job, job.id).assets == []

    if recovery == "fix":
        fixed = check_storage(db, files, fix=True, grace=timedelta(0))
        assert [o.deleted for o in fixed.orphans] == [True] and not files.exists(digest, "png")
    else:  # the job done again stores the same content under the same name, and its row this time
        asset = store_result(db, files, owner, png((12, 34, 56)), job_id=job.id)
        assert asset.file_hash == digest
    assert check_storage(db, files).problems == []


def run_check(data_dir, *args):
    env = dict(os.environ, STUDIO_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    for name in ("STUDIO_DATABASE_URL", "STUDIO_FILES_DIR"):
        env.pop(name, None)
    return subprocess.run([sys.executable, str(ROOT / "app.py"), "check", *args], capture_output=True, text=True,
                          env=env, cwd=data_dir, timeout=120)


def test_the_check_command(tmp_path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    db = Database(settings.database)
    db.migrate()
    files = FileStore(settings.files)
    with db.session() as session:
        owner = repo.ensure_user(session).id
    lost = store_result(db, files, owner, png((1, 2, 3)))
    store_result(db, files, owner, png((4, 5, 6)))
    files.delete(lost.file_hash, "png")
    orphan = files.put(png((7, 8, 9)), "png")
    db.dispose()

    result = run_check(data)
    assert result.returncode == 1, result.stderr
    assert f"assets {lost.id}" in result.stdout and f"{orphan}.png" in result.stdout
    assert "2 problem(s) remain (`python app.py check --fix` repairs what it safely can)." in result.stdout

    result = run_check(data, "--fix")  # the orphan is younger than the default hour
    assert result.returncode == 1 and "row deleted" in result.stdout and "kept: younger than the grace period" in result.stdout
    assert "1 problem(s) remain." in result.stdout

    result = run_check(data, "--fix", "--grace-minutes", "0")
    assert result.returncode == 0 and "Fixed; nothing else is wrong." in result.stdout, result.stdout
    result = run_check(data)
    assert result.returncode == 0 and "Everything is consistent." in result.stdout, result.stdout
