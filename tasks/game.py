"""The game-asset task: generate with the asset type's composition (seamless for textures), then cut each
picture out as a trimmed transparent sprite and pack the sprites into a sheet when asked.

Idempotent like generate: the same seeds on a second run, and rows stored once per (job, stage, index).
"""

from __future__ import annotations

from engine.cascade import run_cascade
from engine.game.request import GameAssetParams
from engine.game.sprites import cut_sprite, sprite_sheet
from storage import repo
from storage.pngmeta import png_with_params
from tasks.celery_app import GAME_ASSET, app
from tasks.generate import JobReporter, execute, job_loras, job_profile, store_images
from tasks.worker import WorkerContext


def store_sheet(context: WorkerContext, job, params: GameAssetParams, sheet, frames: list[dict], sprite_ids: list[str]) -> None:
    """The sprite sheet as the job's last final image, with each frame's rectangle and sprite asset."""
    sheet_params = dict(params.to_dict(), kind="sprite_sheet", frames=[dict(f, asset_id=a) for f, a in zip(frames, sprite_ids)])
    digest = context.files.put(png_with_params(sheet, sheet_params), "png")
    with context.db.session() as session:
        repo.store_asset(
            session, owner_id=job.owner_id, job_id=job.id, kind="sprite_sheet", origin=job.origin, stage="final",
            output_index=params.count, file_hash=digest, mime="image/png", width=sheet.width, height=sheet.height,
            prompt=params.subject, params=sheet_params,
        )


def run_game_asset_job(context: WorkerContext, job) -> str:
    params = GameAssetParams.from_dict(job.params)
    profile = job_profile(context, params.profile)
    reporter = JobReporter(context, job.id)
    result = run_cascade(params, profile, context.cache, reporter.progress, reporter.should_cancel,
                         loras=job_loras(context, params))
    if not params.transparent:
        reporter.write(1.0, "saving images")
        store_images(context, job, params, {"final": result.images})
        return "done"
    reporter.write(1.0, "removing backgrounds")
    session = context.cache.segmenter(profile)
    sprites = [cut_sprite(image, session) for image in result.images]
    reporter.write(1.0, "saving sprites")
    # The generated pictures are kept beside the sprites (stage "generated"), for a cut that needs redoing.
    sprite_ids = store_images(context, job, params, {"final": [s.image for s in sprites], "generated": result.images})
    notes = [f"variation {i + 1}: {s.note}" for i, s in enumerate(sprites) if s.note]
    if params.sprite_sheet:
        sheet, frames = sprite_sheet([s.image for s in sprites], params.sheet_columns or None, align=params.sheet_align)
        store_sheet(context, job, params, sheet, frames, sprite_ids)
    return "; ".join(notes) if notes else "done"


@app.task(name=GAME_ASSET, bind=True)
def game_asset(self, job_id: str) -> None:
    execute(self, job_id, run_game_asset_job)
