"""Product-synthesis tasks: cut out a material's product, and render it into scenes as layered pictures.

Both are safe to run twice: a cut-out rewrites the same mask, and a product job stores each picture's
files and rows once per (job, output index, layer) and skips pictures it has already finished.
"""

from __future__ import annotations

from dataclasses import asdict

from engine.cascade import Cancelled
from engine.product.layers import LayeredPicture, export_files
from engine.product.mask import MaskError, check_mask
from engine.product.request import ProductRequest, generation_size
from engine.product.segment import product_mask
from engine.product.synthesis import RenderSettings, render_product_picture
from storage import repo
from storage.files import MIME_EXTENSIONS
from storage.pngmeta import png_with_params
from tasks.celery_app import CUTOUT, PRODUCT, app
from tasks.generate import JobError, JobReporter, execute, job_profile
from tasks.worker import WorkerContext

# Everything stored beside each composite, as (asset stage, asset kind, mime).
EXPORTS = {
    "background": ("layer", "image/png"),
    "shadow": ("layer", "image/png"),
    "product": ("layer", "image/png"),
    "mask": ("layer", "image/png"),
    "manifest": ("manifest", "application/json"),
    "psd": ("psd", "image/vnd.adobe.photoshop"),
    "zip": ("zip", "application/zip"),
}


def run_cutout_job(context: WorkerContext, job) -> str:
    """Find the product in a material photo and store its cleaned mask on the material."""
    material = context.materials.get(job.owner_id, job.params["material_id"])
    if material is None:
        raise JobError("The photo was deleted from the material library.")
    reporter = JobReporter(context, job.id)
    reporter.write(0.1, "removing the background")
    profile = job_profile(context, job.profile)
    mask, source = product_mask(context.materials.image(material), lambda: context.cache.segmenter(profile))
    try:
        note = check_mask(mask)
    except MaskError as exc:
        raise JobError(str(exc)) from exc
    context.materials.save_mask(job.owner_id, material.id, mask, source, note)
    return "cut out" if note is None else "cut out (whole frame)"


def _picture_params(request: ProductRequest, job, output: dict, picture: LayeredPicture) -> dict:
    """What the composite records: enough to re-render it, alone or on another canvas."""
    scene = request.scene(output["scene"])
    return {
        "kind": "product", "material_id": request.material_id, "material_name": request.material_name,
        "material_hash": request.material_hash, "mask_hash": request.mask_hash,
        "scene": scene.to_dict(), "canvas_format": request.canvas_format, "width": request.width,
        "height": request.height, "seed": output["seed"], "variant": output["variant"], "steps": request.steps,
        "guidance": request.guidance, "placement": picture.info["placement"], "placement_override": request.placement,
        "controlnet": request.controlnet, "control_scale": request.control_scale, "shadow": request.shadow,
        "profile": request.profile, "rerun_of": request.rerun_of, "prompt": picture.info["prompt"],
        "negative_prompt": picture.info["negative_prompt"], "product_box": asdict(picture.box),
        "job_id": job.id, "output_index": output["index"],
    }


def store_picture(context: WorkerContext, job, request: ProductRequest, output: dict, picture: LayeredPicture) -> str:
    """Write every file, then the composite's row, then its layers' and exports' rows under it."""
    params = _picture_params(request, job, output, picture)
    picture.info.update(material={"id": request.material_id, "name": request.material_name},
                        canvas_format=request.canvas_format, profile=request.profile, job_id=job.id,
                        output_index=output["index"])
    contents = export_files(picture)
    digests = {name: context.files.put(data, MIME_EXTENSIONS[EXPORTS[name][1]]) for name, data in contents.items()}
    composite_hash = context.files.put(png_with_params(picture.composite, params), "png")
    width, height = picture.canvas
    common = dict(owner_id=job.owner_id, job_id=job.id, origin=job.origin, output_index=output["index"],
                  width=width, height=height, prompt=params["prompt"])
    with context.db.session() as session:
        composite = repo.store_asset(session, kind="image", stage="final", file_hash=composite_hash, mime="image/png",
                                     params=params, **common)
        for name, digest in digests.items():
            kind, mime = EXPORTS[name]
            repo.store_asset(session, kind=kind, stage=name, file_hash=digest, mime=mime, parent_id=composite.id,
                             params={"layer": name, "output_index": output["index"]}, **common)
        return composite.id


def _finished_outputs(context: WorkerContext, job) -> set[int]:
    """Output indexes whose composite and every export are stored (a redelivered job skips them)."""
    with context.db.session() as session:
        assets = repo.job_assets(session, job.id, job.owner_id)
    stages: dict[int, set[str]] = {}
    for asset in assets:
        stages.setdefault(asset.output_index, set()).add(asset.stage)
    needed = {"final", *EXPORTS} - {"shadow"}
    return {index for index, found in stages.items() if needed <= found}


def run_product_job(context: WorkerContext, job) -> str:
    request = ProductRequest.from_dict(job.params)
    profile = job_profile(context, request.profile)
    try:
        photo = context.materials.open_png(request.material_hash)
        mask = context.materials.open_png(request.mask_hash).convert("L")
    except FileNotFoundError as exc:
        raise JobError("The product photo or its mask was deleted from the material library.") from exc
    try:
        check_mask(mask)
    except MaskError as exc:
        raise JobError(str(exc)) from exc
    reporter = JobReporter(context, job.id)
    reporter.write(0.0, "loading the inpainting model")
    pipe = context.cache.inpainting(profile, controlnet=request.controlnet)
    canvas = (request.width, request.height)
    size = generation_size(canvas, profile)
    done = _finished_outputs(context, job)
    total = len(request.outputs)
    for position, output in enumerate(request.outputs):
        if output["index"] in done:
            continue
        scene = request.scene(output["scene"])
        label = f"{scene.label}, variant {output['variant'] + 1}/{request.variants} ({position + 1}/{total})"

        def on_step(step: int, steps: int, position=position, label=label) -> None:
            reporter.report((position + step / steps) / total, f"{label}: step {step}/{steps}", force=step == steps)
            if reporter.should_cancel():
                raise Cancelled(f"cancelled at {label}")

        settings = RenderSettings(canvas=canvas, generation_size=size, seed=output["seed"], steps=request.steps,
                                  guidance=request.guidance, sampler=profile.sampler, shadow=request.shadow,
                                  control_scale=request.control_scale if request.controlnet else None)
        picture = render_product_picture(photo, mask, scene, request.placement_for(scene), settings, pipe, on_step)
        reporter.write((position + 1) / total, f"{label}: saving layers")
        store_picture(context, job, request, output, picture)
    return "done"


@app.task(name=CUTOUT, bind=True)
def cutout(self, job_id: str) -> None:
    execute(self, job_id, run_cutout_job)


@app.task(name=PRODUCT, bind=True)
def product(self, job_id: str) -> None:
    execute(self, job_id, run_product_job)
