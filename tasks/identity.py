"""Identity tasks: portraits that keep a person's face (PhotoMaker, an avatar per style, an avatar in photo
templates), and the face checks of the photo studio's uploads.

Each identity result is stored with its face similarity to the person; with ``best_of`` above 1 the
candidates most like them are kept as the results and the others stored as stage "candidate". Stored rows
are keyed by (job, stage, index), so a redelivered job stores nothing twice. Face data is never logged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image

from engine.cascade import ControlCondition, StageProgress, run_cascade
from engine.faces import (
    FaceAnalyzer,
    aligned_crop,
    best_matches,
    check_photo,
    check_same_person,
    mean_identity,
    mix_identities,
)
from engine.identity import IdentityCondition
from engine.identity_request import IdentityItem, IdentityRequest
from engine.lora_request import training_resolution
from engine.params import image_seed
from engine.portraits import DEFAULT_TEMPLATES_DIR
from storage import repo
from storage.models import PhotoVerdict
from storage.pngmeta import png_with_params
from tasks.celery_app import FACE_CHECK, IDENTITY, app
from tasks.generate import JobError, JobReporter, execute, job_loras, job_profile
from tasks.worker import WorkerContext


def _open(context: WorkerContext, digest: str) -> Image.Image:
    path = context.files.path(digest, "png")
    if not path.is_file():
        raise JobError("A face photo of this job was deleted from the file store.")
    with Image.open(path) as image:
        return image.convert("RGB")


def photos_identity(context: WorkerContext, analyzer: FaceAnalyzer, digests: list[str], whose: str) -> np.ndarray:
    """One identity from 1-4 photos; a photo without a face fails the job with its number."""
    embeddings = []
    for number, digest in enumerate(digests, start=1):
        faces = analyzer.faces(_open(context, digest))
        if not faces:
            raise JobError(f"No face was found in {whose}photo {number}: use a photo where the face is clearly visible.")
        embeddings.append(faces[0].embedding)  # the largest face, where a photo has several
    return mean_identity(embeddings)


def request_identity(context: WorkerContext, job, request: IdentityRequest, analyzer: FaceAnalyzer) -> np.ndarray:
    if request.avatar_id:
        try:
            stored = context.avatars.identity(job.owner_id, request.avatar_id)
        except LookupError:
            stored = None
        if stored is None:
            raise JobError("The avatar was deleted, or none of its photos passed the checks.")
        return np.asarray(stored, dtype=np.float32)
    identity = photos_identity(context, analyzer, request.photo_hashes, "")
    if request.mix_hashes and request.mix > 0:
        identity = mix_identities(identity, photos_identity(context, analyzer, request.mix_hashes, "the second person's "), request.mix)
    return identity


def _composition(item: IdentityItem, size: tuple[int, int]) -> list[ControlCondition]:
    if not item.composition:
        return []
    # The drawings are white lines on black already: the edge map a canny ControlNet reads.
    with Image.open(DEFAULT_TEMPLATES_DIR / "compositions" / item.composition) as drawing:
        return [ControlCondition(drawing.convert("RGB").resize(size, Image.LANCZOS), item.composition_scale)]


def store_portraits(context: WorkerContext, job, request: IdentityRequest, item_index: int, item: IdentityItem,
                    images: list[Image.Image], ranked: list[tuple[int, float | None]]) -> None:
    """The candidates most like the person as the item's final images (best first), the others as stage
    "candidate"; each with the seed that redraws it and its face similarity (None: no face found)."""
    params = item.params
    for rank, (index, similarity) in enumerate(ranked):
        stage = "final" if rank < params.count else "candidate"
        image_params = dict(params.to_dict(), seed=image_seed(params.seed, index), count=1, batch_seed=params.seed,
                            kind=request.kind, preset=item.name, preset_label=item.label, similarity=similarity,
                            scale=request.scale, best_of=request.best_of, photos=request.photos,
                            mix_photos=request.mix_photos, mix=request.mix, avatar_id=request.avatar_id,
                            edits=request.edits, edit_of=request.edit_of, stage=stage)
        digest = context.files.put(png_with_params(images[index], image_params), "png")
        with context.db.session() as session:
            repo.store_asset(
                session, owner_id=job.owner_id, job_id=job.id, kind="image", origin=job.origin, stage=stage,
                output_index=item_index * len(images) + rank, file_hash=digest, mime="image/png",
                width=images[index].width, height=images[index].height, prompt=params.prompt, params=image_params,
                score=similarity, parent_id=request.edit_of if stage == "final" else None,
            )


def run_identity_job(context: WorkerContext, job) -> str:
    request = IdentityRequest.from_dict(job.params)
    profile = job_profile(context, request.profile)
    reporter = JobReporter(context, job.id)
    reporter.write(0.0, "reading the faces")
    analyzer = context.cache.faces(profile)
    identity = request_identity(context, job, request, analyzer)
    condition = IdentityCondition(identity, request.scale)
    total = len(request.items)
    notes = []
    for number, item in enumerate(request.items):
        params = item.params
        stage = f"{item.label} ({number + 1}/{total})" if total > 1 else item.label

        def progress(p: StageProgress, number=number, stage=stage) -> None:
            reporter.report((number + p.fraction * 0.95) / total, f"{stage}: {p.stage} step {p.step}/{p.total_steps}")

        candidates = replace(params, count=params.count * request.best_of)
        result = run_cascade(candidates, profile, context.cache, progress, reporter.should_cancel, loras=job_loras(context, params),
                             identity=condition, control=_composition(item, (params.width, params.height)))
        reporter.write((number + 0.97) / total, f"{stage}: comparing faces")
        faces = [next(iter(analyzer.faces(image)), None) for image in result.images]
        ranked = best_matches([face.embedding if face else None for face in faces], identity, len(result.images))
        store_portraits(context, job, request, number, item, result.images, ranked)
        if all(similarity is None for _, similarity in ranked):
            notes.append(item.label)
    if notes:
        return f"done; no face was found in the result for {', '.join(notes)}"
    return "done"


def run_face_check_job(context: WorkerContext, job) -> str:
    """Check each face photo of an avatar: one face, large and sharp enough, the same person as the
    others; store each usable face's crop and embedding and the avatar's identity."""
    avatar_id = job.params["avatar_id"]
    profile = job_profile(context, job.params["profile"])
    analyzer = context.cache.faces(profile)
    reporter = JobReporter(context, job.id)
    photos = context.avatars.pending_photos(avatar_id)
    if not photos:
        raise JobError("The avatar was deleted.")
    images, checks = {}, []
    for index, (photo_id, digest) in enumerate(photos):
        reporter.write(index / len(photos), f"checking photo {index + 1}/{len(photos)}")
        images[index] = _open(context, digest)
        checks.append(check_photo(index, images[index], analyzer.faces(images[index])))
    identity = check_same_person(checks)
    side = training_resolution(profile)
    results = {}
    for check in checks:
        face = check.face
        crop_hash = None
        if face is not None and check.usable:
            buffer = aligned_crop(images[check.index], face, side, context=2.0)
            crop_hash = context.files.put(png_with_params(buffer, {"kind": "face_crop"}), "png")
        results[photos[check.index][0]] = {
            "verdict": PhotoVerdict.USABLE if check.usable else PhotoVerdict.REJECTED, "problems": check.problems,
            "crop_hash": crop_hash, "embedding": face.embedding.tolist() if face is not None else None,
            "face_box": [round(v, 1) for v in face.box] if face is not None else None,
            "sharpness": check.sharpness, "similarity": check.similarity,
        }
    context.avatars.record_check(avatar_id, results, identity.tolist() if identity is not None else None)
    usable = sum(check.usable for check in checks)
    return f"{usable} of {len(checks)} photos usable"


@app.task(name=IDENTITY, bind=True)
def identity_task(self, job_id: str) -> None:
    execute(self, job_id, run_identity_job)


@app.task(name=FACE_CHECK, bind=True)
def face_check(self, job_id: str) -> None:
    execute(self, job_id, run_face_check_job)
