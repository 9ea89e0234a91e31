"""The database against the file store: rows whose file is gone, stored files no row refers to, and what
interrupted writes left behind (``python app.py check``).

A worker writes a file first and its row second, so a crash between the two leaves an orphan file, never a
row without its file; the file's sha256 name means the job, done again, stores the same file and its row.
Orphans and temporary files are deleted only once older than a grace period: a file written a moment ago
may be waiting for its row. A row whose file is gone is a real loss: an asset's row is deleted (it cannot
be shown, its job stays), the others are reported with what their owner can do.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import make_url

from storage import repo
from storage.db import Database
from storage.files import FileStore
from storage.models import Asset, Avatar, AvatarPhoto, Job, JobState, Material, TrainedModel, User, UserTemplate

DEFAULT_GRACE = timedelta(hours=1)
# Folders of the store that hold no content-addressed files.
PREVIEWS, WORK = "previews", "work"
TEMP_PREFIX = ".incoming-"
_HEX2 = re.compile(r"[0-9a-f]{2}")
_STORED_NAME = re.compile(r"([0-9a-f]{64})\.([A-Za-z0-9]+)")
# Past this many (and over half of them), missing or unused files mean a store that is not mounted or the
# wrong database, not lost files: --fix then deletes nothing of that kind.
SUSPICIOUS_COUNT = 10

# What the owner of a row whose file is gone can do, by (table, column).
ADVICE = {
    ("assets", "file_hash"): "its picture cannot be shown; `python app.py check --fix` deletes the row (its job stays: "
                             "run it again to make the picture anew)",
    ("materials", "file_hash"): "the owner deletes the material in the Material library and uploads the photo again",
    ("materials", "mask_hash"): "the owner cuts out the product again, or paints and saves a new mask",
    ("trained_models", "file_hash"): "the LoRA's weights are gone: the owner deletes it and trains it again (or uploads "
                                     "the file again)",
    ("trained_models", "dataset"): "one of the LoRA's training images is gone: trained weights still work, but to train it "
                                   "again the owner deletes it and makes it again from the images",
    ("avatar_photos", "file_hash"): "the owner deletes the avatar and makes it again from the photos",
    ("avatar_photos", "crop_hash"): "the owner deletes the avatar and makes it again (the face crops are cut when the "
                                    "photos are checked)",
    ("user_templates", "preview_hash"): "the owner deletes the template and saves it again from a result",
}


@dataclass
class MissingFile:
    """A row that refers to a file the store does not hold."""

    reference: repo.FileReference
    owner: str = "?"
    what: str = ""
    deleted: bool = False  # the row was deleted (assets only)

    @property
    def advice(self) -> str:
        return ADVICE.get((self.reference.table, self.reference.column), "")

    def line(self) -> str:
        ref = self.reference
        head = f"{ref.table} {ref.row_id} ({self.what}, user {self.owner}): {ref.column} {ref.digest[:12]}… is missing"
        return f"{head}; row deleted" if self.deleted else f"{head}\n      → {self.advice}"


@dataclass
class StrayFile:
    """A file (or training folder) in the store that nothing needs: an orphan, a temporary file, a work folder."""

    path: Path  # relative to the store's root
    size: int
    age_s: float
    note: str = ""
    deleted: bool = False

    def line(self) -> str:
        age = f"{self.age_s / 3600:.1f} h" if self.age_s >= 3600 else f"{self.age_s / 60:.0f} min"
        state = "deleted" if self.deleted else self.note
        return f"{self.path}  ({_size(self.size)}, {age} old){'; ' + state if state else ''}"


@dataclass
class ConsistencyReport:
    files_root: Path
    database: str
    references: int = 0  # row-to-file references
    stored: int = 0  # content-addressed files in the store
    missing: list[MissingFile] = field(default_factory=list)
    orphans: list[StrayFile] = field(default_factory=list)
    temporary: list[StrayFile] = field(default_factory=list)
    work: list[StrayFile] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)  # not the store's kind of name: reported, never touched
    notes: list[str] = field(default_factory=list)
    fixed: bool = False

    @property
    def problems(self) -> list:
        """What is still wrong after this run (anything deleted is no longer a problem)."""
        return [p for p in (*self.missing, *self.orphans, *self.temporary, *self.work) if not p.deleted]

    def text(self) -> str:
        lines = [f"Storage check: database {self.database}, files {self.files_root}",
                 f"  {self.references} row reference(s) to files, {self.stored} stored file(s)"]
        sections = [
            ("Rows whose file is missing", self.missing),
            ("Orphan files (no row refers to them)", self.orphans),
            ("Leftover temporary files (an interrupted write)", self.temporary),
            ("Leftover training folders (their job is over)", self.work),
        ]
        for title, items in sections:
            if items:
                lines += ["", f"{title}: {len(items)}"] + [f"  {item.line()}" for item in items]
        if self.other:
            lines += ["", f"Other files, not the store's (left alone): {len(self.other)}"] + [f"  {p}" for p in self.other]
        if self.notes:
            lines += [""] + [f"Note: {note}" for note in self.notes]
        remaining = len(self.problems)
        lines.append("")
        if not remaining:
            lines.append("Fixed; nothing else is wrong." if self.fixed and self._found else "Everything is consistent.")
        else:
            hint = "" if self.fixed else " (`python app.py check --fix` repairs what it safely can)"
            lines.append(f"{remaining} problem(s) remain{hint}.")
        return "\n".join(lines)

    @property
    def _found(self) -> bool:
        return bool(self.missing or self.orphans or self.temporary or self.work)


def check_storage(db: Database, files: FileStore, fix: bool = False, grace: timedelta = DEFAULT_GRACE) -> ConsistencyReport:
    """Compare every row's file with the store; with ``fix``, delete orphan files, temporary files and training
    folders older than ``grace``, and asset rows whose file is gone."""
    root = files.root
    report = ConsistencyReport(root, make_url(db.url).render_as_string(hide_password=True), fixed=fix)
    # The store first, the rows second: a row is committed only after its file is written, so every row
    # read below has its file on disk by now (re-checked one by one before anything is called missing).
    stored, candidates = _scan(root, report)
    report.stored = len({digest for digest, _ in stored})
    with db.session() as session:
        references = repo.file_references(session)
        unfinished = set(session.scalars(select(Job.id).where(Job.state.not_in(JobState.FINISHED))))
    report.references = len(references)
    on_disk = {digest for digest, _ in stored}
    report.missing = [MissingFile(ref) for ref in references if ref.digest not in on_disk and not _exists(files, ref.digest)]
    used = {ref.digest for ref in references}
    report.orphans = [stray for (digest, _), stray in stored.items() if digest not in used]
    report.temporary = candidates["temporary"]
    report.work = [stray for stray in candidates["work"] if stray.path.name not in unfinished]
    _describe(db, report.missing)
    if fix:
        _fix(db, files, report, grace.total_seconds(), {ref.digest for ref in references})
    else:
        for stray in (*report.orphans, *report.temporary, *report.work):
            if stray.age_s < grace.total_seconds():
                stray.note = "younger than the grace period: it may belong to a job storing its row now"
    return report


def _scan(root: Path, report: ConsistencyReport) -> tuple[dict[tuple[str, str], StrayFile], dict[str, list[StrayFile]]]:
    """Every content-addressed file (by digest and extension), and the temporary files and training folders."""
    now = time.time()
    stored: dict[tuple[str, str], StrayFile] = {}
    found: dict[str, list[StrayFile]] = {"temporary": [], "work": []}
    for top in _entries(root):
        if top.name == PREVIEWS and top.is_dir():
            continue
        if top.name == WORK and top.is_dir():
            for folder in _entries(top):
                size, newest = _tree_stat(folder)
                if newest is not None:
                    found["work"].append(StrayFile(folder.relative_to(root), size, now - newest))
            continue
        if not (top.is_dir() and _HEX2.fullmatch(top.name)):
            report.other.append(top.relative_to(root))
            continue
        for middle in _entries(top):
            if not (middle.is_dir() and _HEX2.fullmatch(middle.name)):
                report.other.append(middle.relative_to(root))
                continue
            for entry in _entries(middle):
                stat = _stat(entry)
                if stat is None:
                    continue  # removed while we looked
                match = _STORED_NAME.fullmatch(entry.name)
                stray = StrayFile(entry.relative_to(root), stat.st_size, now - stat.st_mtime)
                if match and match[1][:2] == top.name and match[1][2:4] == middle.name and entry.is_file():
                    stored[(match[1], match[2])] = stray
                elif entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                    found["temporary"].append(stray)
                else:
                    report.other.append(stray.path)
    return stored, found


def _fix(db: Database, files: FileStore, report: ConsistencyReport, grace_s: float, referenced: set[str]) -> None:
    root = files.root
    missing_assets = [m for m in report.missing if m.reference.table == "assets"]
    if missing_assets and _suspicious(len({m.reference.digest for m in report.missing}), len(referenced)):
        report.notes.append(
            f"no rows deleted: {len({m.reference.digest for m in report.missing})} of the {len(referenced)} files the "
            f"rows refer to are missing, which looks like a file store that is not mounted or not this database's "
            f"(files: {root}).")
    elif missing_assets:
        with db.session() as session:
            for item in missing_assets:
                asset = session.get(Asset, item.reference.row_id)
                if asset is None:
                    item.deleted = True  # deleted meanwhile
                elif not _exists(files, asset.file_hash):
                    repo.delete_asset(session, asset)
                    item.deleted = True
    old_orphans = [o for o in report.orphans if o.age_s >= grace_s]
    if _suspicious(len(report.orphans), report.stored):
        report.notes.append(
            f"no orphan files deleted: {len(report.orphans)} of the {report.stored} stored files look unused, which looks "
            f"like the wrong database ({report.database}) for this file store ({root}).")
        old_orphans = []
    # Asked again right before deleting: a row for one of them may have been committed since the first look.
    with db.session() as session:
        still_unused: set[str] = set()
        digests = sorted({_digest(o.path) for o in old_orphans})
        for start in range(0, len(digests), 500):
            still_unused.update(repo.unused_files(session, digests[start:start + 500]))
    for orphan in old_orphans:
        if _digest(orphan.path) in still_unused:
            orphan.deleted = _unlink_if_old(root / orphan.path, grace_s)
    for temp in report.temporary:
        if temp.age_s >= grace_s:
            temp.deleted = _unlink_if_old(root / temp.path, grace_s)
    for folder in report.work:
        if folder.age_s >= grace_s:
            shutil.rmtree(root / folder.path, ignore_errors=True)
            folder.deleted = not (root / folder.path).exists()
    for stray in (*report.orphans, *report.temporary, *report.work):
        if not stray.deleted and stray.age_s < grace_s:
            stray.note = "kept: younger than the grace period (a job may be storing its row now)"


def _describe(db: Database, missing: list[MissingFile]) -> None:
    """Each missing file's row in words (what it is, whose it is), for the report."""
    if not missing:
        return
    by_table: dict[str, list[MissingFile]] = {}
    for item in missing:
        by_table.setdefault(item.reference.table, []).append(item)
    queries = {
        "assets": lambda ids: select(Asset.id, User.name, Asset.job_id, Asset.stage, Asset.output_index)
        .join(User, User.id == Asset.owner_id).where(Asset.id.in_(ids)),
        "materials": lambda ids: select(Material.id, User.name, Material.name)
        .join(User, User.id == Material.owner_id).where(Material.id.in_(ids)),
        "trained_models": lambda ids: select(TrainedModel.id, User.name, TrainedModel.name)
        .join(User, User.id == TrainedModel.owner_id).where(TrainedModel.id.in_(ids)),
        "avatar_photos": lambda ids: select(AvatarPhoto.id, User.name, Avatar.name, AvatarPhoto.name)
        .join(Avatar, Avatar.id == AvatarPhoto.avatar_id).join(User, User.id == Avatar.owner_id).where(AvatarPhoto.id.in_(ids)),
        "user_templates": lambda ids: select(UserTemplate.id, User.name, UserTemplate.name)
        .join(User, User.id == UserTemplate.owner_id).where(UserTemplate.id.in_(ids)),
    }
    words = {
        "assets": lambda job, stage, index: f"result {stage} #{index} of job {job}" if job else f"{stage} result",
        "materials": lambda name: f"material {name!r}",
        "trained_models": lambda name: f"LoRA {name!r}",
        "avatar_photos": lambda avatar, photo: f"photo {photo!r} of avatar {avatar!r}",
        "user_templates": lambda name: f"template {name!r}",
    }
    with db.session() as session:
        for table, items in by_table.items():
            if table not in queries:
                continue
            rows = {row[0]: row[1:] for row in session.execute(queries[table]({i.reference.row_id for i in items}))}
            for item in items:
                if item.reference.row_id in rows:
                    owner, *details = rows[item.reference.row_id]
                    item.owner, item.what = owner, words[table](*details)


def _suspicious(part: int, whole: int) -> bool:
    return part > SUSPICIOUS_COUNT and part * 2 > whole


def _exists(files: FileStore, digest: str) -> bool:
    """Whether the store holds this content, under any extension."""
    try:
        folder = files.path(digest, "x").parent
    except ValueError:
        return False
    return any(folder.glob(f"{digest}.*"))


def _digest(relative: Path) -> str:
    return relative.name.split(".", 1)[0]


def _unlink_if_old(path: Path, grace_s: float) -> bool:
    """Delete a file unless it was touched within the grace period since it was first seen (a job storing
    the same content again makes it fresh)."""
    stat = _stat(path)
    if stat is None:
        return True
    if time.time() - stat.st_mtime < grace_s:
        return False
    path.unlink(missing_ok=True)
    return True


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _stat(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def _tree_stat(folder: Path) -> tuple[int, float | None]:
    """A folder's total size and newest modification time (its own included)."""
    stat = _stat(folder)
    if stat is None:
        return 0, None
    size, newest = 0, stat.st_mtime
    for path in folder.rglob("*"):
        if (entry := _stat(path)) is not None:
            newest = max(newest, entry.st_mtime)
            size += entry.st_size if path.is_file() else 0
    return size, newest


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"
