"""The Product synthesis tab: a product photo's cut-out, corrected with a brush, placed in generated scenes
on ad-format canvases, returned as layers (PNG, PSD, zip)."""

from __future__ import annotations

import gradio as gr

from storage import repo
from storage.models import JobState
from storage.quota import LimitExceeded
from tasks.client import InvalidRequest, JobView
from tasks.product_client import BRUSH_COLORS
from ui.img2img_tab import SEND_LABEL
from ui.jobs import REFUSALS, wait_for_job, warn_if_no_worker
from ui.materials_tab import MaterialPicker, build_material_picker, upload_material
from ui.services import Services, banner
from ui.templates_tab import TemplateTarget

# What each ad format is for; the sizes come from the client's form options.
FORMAT_USES = {"1:1": "feed", "4:5": "portrait feed", "9:16": "stories / reels", "16:9": "video / banner"}
LAYER_STAGES = ("background", "shadow", "product", "mask")
EXPORT_LINKS = {"zip": "Layers as PNG (zip)", "psd": "Photoshop file (psd)", "manifest": "Manifest (json)"}


def build_product_tab(services: Services, tab: gr.Tab, senders: list[tuple[gr.Button, gr.State]],
                      targets: dict[str, TemplateTarget]) -> MaterialPicker:
    """The tab inside ``tab``; it opens product templates (``targets``) and sends pictures to image-to-image."""
    options = services.options
    profile = options.profile
    formats = [(f"{name} {FORMAT_USES.get(name, '')} · {w}×{h}", name) for name, (w, h) in options.canvas_formats.items()]
    gr.Markdown(banner(options), visible=profile.is_noise, elem_classes=["noise-banner"])
    with gr.Row():
        with gr.Column(scale=4):
            gr.Markdown("### 1 · Product")
            picker = build_material_picker(services, "Product photo", elem_id="product-material")
            upload = gr.File(label="…or upload a product photo (a transparent PNG keeps its own cut-out)",
                             file_types=["image"], type="filepath", elem_id="product-upload")
            cut_button = gr.Button("Cut out the product", elem_id="product-cutout")
            editor = gr.ImageEditor(
                label="Mask check: the dimmed blue part is background. Paint green to add to the product, red to erase.",
                type="pil", image_mode="RGBA", sources=[], format="png", layers=False, transforms=[],
                brush=gr.Brush(colors=[BRUSH_COLORS["add"], BRUSH_COLORS["erase"]], default_color=BRUSH_COLORS["add"],
                               color_mode="fixed", default_size=12),
                eraser=gr.Eraser(default_size=12), height=420, elem_id="product-mask-editor",
            )
            save_mask_button = gr.Button("Save mask correction", elem_id="product-save-mask")
            cutout_view = gr.Image(label="Cut-out", type="pil", format="png", interactive=False, height=200)
            mask_status = gr.Markdown(elem_id="product-mask-status")
        with gr.Column(scale=4):
            gr.Markdown("### 2 · Scene")
            scenes = gr.Dropdown(options.scenes, value=[options.scenes[0][1]] if options.scenes else [], multiselect=True,
                                 label="Scene presets (several at once)", elem_id="product-scenes")
            scene_prompt = gr.Textbox(label="…or describe your own scene", lines=2,
                                      placeholder="a sunlit bathroom shelf with eucalyptus, soft morning light")
            gr.Markdown("### 3 · Canvas")
            canvas = gr.Radio(formats + [("Custom pixels", options.custom_format)],
                              value="1:1", label="Format", elem_id="product-format")
            with gr.Row(visible=False) as custom_row:
                width = gr.Number(value=1200, precision=0, label="Width (px)", elem_id="product-width")
                height = gr.Number(value=628, precision=0, label="Height (px)", elem_id="product-height")
            scene_placement = gr.Checkbox(value=True, label="Place the product as each scene suggests")
            with gr.Row():
                scale = gr.Slider(0.1, 0.9, value=0.5, step=0.01, label="Product height (share of canvas)", interactive=False)
                x = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="Horizontal position", interactive=False)
                ground = gr.Slider(0.3, 1.0, value=0.85, step=0.01, label="Ground line (from top)", interactive=False)
            gr.Markdown("### 4 · Generate")
            with gr.Row():
                variants = gr.Slider(1, 4, value=1, step=1, label="Variants per scene")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                steps = gr.Slider(1, options.max_steps, value=profile.steps, step=1, label="Steps")
                guidance = gr.Slider(0, 30, value=profile.guidance, step=0.5, label="Guidance")
            with gr.Row():
                shadow = gr.Checkbox(value=True, label="Contact shadow")
                controlnet = gr.Checkbox(value=False, label="Fit the scene's perspective to the product's edges (ControlNet)",
                                         interactive=options.has_controlnet,
                                         info=None if options.has_controlnet else f"The {profile.name} profile has no ControlNet.")
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="product-generate")
                cancel_button = gr.Button("Cancel", variant="stop")
            status = gr.Markdown(elem_id="product-status")
    with gr.Row():
        with gr.Column(scale=5):
            gallery = gr.Gallery(label="Pictures", format="png", columns=4, height=420, object_fit="contain",
                                 elem_id="product-gallery", buttons=["download", "fullscreen"])
        with gr.Column(scale=3):
            layers_view = gr.Gallery(label="Layers of the selected picture", format="png", columns=4, height=200,
                                     object_fit="contain", elem_id="product-layers")
            downloads = gr.Markdown("Select a picture to download its layers.", elem_id="product-downloads")
            with gr.Row():
                rerun_format = gr.Dropdown(formats, value="9:16",
                                           label="Re-run this scene in", scale=3)
                rerun_button = gr.Button("Re-run (new background only)", scale=2, elem_id="product-rerun")
            send = gr.Button(SEND_LABEL, elem_id="product-send")
    job_id = gr.State(None)
    picture_ids = gr.State([])
    selected = gr.State(None)
    senders.append((send, selected))

    preview_outputs = [editor, cutout_view, mask_status]
    # The mask editor is among ``preview_outputs``: a refusal there is a notice, not an error, because an error
    # would mark the editor as failed, and the next strokes would not reach the server either.
    unchanged = [gr.update() for _ in preview_outputs]

    def preview(owner: str, material_id: str | None) -> list:
        """Values for ``preview_outputs``: the owner's product photo with its mask over it, and its cut-out."""
        if not material_id:
            return [None, None, ""]
        try:
            preview = services.products.preview(owner, material_id)
        except InvalidRequest as exc:
            gr.Warning(str(exc))
            return unchanged
        return [{"background": preview.overlay, "layers": [], "composite": preview.overlay}, preview.cutout, preview.status]

    def show(material_id: str | None, request: gr.Request):
        return preview(services.owner(request), material_id)

    picker.dropdown.change(show, picker.dropdown, preview_outputs, api_visibility="private")
    # The library may have changed in another tab or browser since the page was loaded.
    tab.select(picker.reload, picker.dropdown, picker.dropdown, api_visibility="private")

    def add_upload(path, request: gr.Request):
        owner = services.owner(request)
        material = upload_material(services, owner, path)
        return None, picker.choices(owner, material.id)

    upload.upload(add_upload, upload, [upload, picker.dropdown], api_name="product_upload")

    def follow(owner: str, job: JobView, progress: gr.Progress) -> JobView:
        warn_if_no_worker(services)
        return wait_for_job(services, owner, job, progress)

    def submit(owner: str, kind: str, raw: dict) -> JobView:
        try:
            return services.client.submit(owner, kind, raw, origin="product")
        except REFUSALS as exc:
            raise gr.Error(str(exc)) from exc

    def cut(material_id: str | None, request: gr.Request, progress=gr.Progress()):
        if not material_id:
            gr.Warning("Pick a product photo first.")
            return unchanged
        owner = services.owner(request)
        try:
            job = services.client.submit(owner, "cutout", {"material_id": material_id}, origin="product")
        except REFUSALS as exc:
            gr.Warning(str(exc))
            return unchanged
        job = follow(owner, job, progress)
        if job.state == JobState.FAILED:
            gr.Warning(f"The cut-out failed: {job.error}")
            return unchanged
        return preview(owner, material_id)

    cut_button.click(cut, picker.dropdown, preview_outputs, api_name="product_cutout")

    def save_mask(material_id: str | None, value: dict | None, request: gr.Request):
        if not material_id:
            gr.Warning("Pick a product photo first.")
            return unchanged
        strokes = (value or {}).get("layers") or []
        if not strokes or strokes[0].getchannel("A").getbbox() is None:
            gr.Warning("Paint on the photo first: green adds to the product, red erases.")
            return unchanged
        owner = services.owner(request)
        try:
            services.products.correct_mask(owner, material_id, strokes[0])
        except (InvalidRequest, LimitExceeded) as exc:
            gr.Warning(str(exc))
            return unchanged
        return preview(owner, material_id)

    save_mask_button.click(save_mask, [picker.dropdown, editor], preview_outputs, api_visibility="private")

    canvas.change(lambda f: gr.Row(visible=f == options.custom_format), canvas, custom_row, api_visibility="private")
    scene_placement.change(lambda own: [gr.Slider(interactive=not own)] * 3, scene_placement, [scale, x, ground],
                           api_visibility="private")

    def pictures(owner: str, job: JobView) -> tuple[list, list[str]]:
        with services.db.session() as session:
            finals = [a for a in repo.job_assets(session, job.id, owner) if a.stage == "final"]
        items = [(str(services.asset_path(a)), f"{a.params['scene']['label']} · seed {a.params['seed']}") for a in finals]
        return items, [a.id for a in finals]

    def finish(owner: str, job: JobView, progress: gr.Progress):
        """Follow the owner's job to its end and show its pictures; a failure stays in the status line too."""
        job = follow(owner, job, progress)
        if job.state == JobState.CANCELLED:
            yield None, [], [], "Cancelled."
            return
        if job.state == JobState.FAILED:
            yield None, [], [], f"**Failed:** {job.error}"
            raise gr.Error(f"Product synthesis failed: {job.error}")
        items, ids = pictures(owner, job)
        yield None, items, ids, f"Done: {len(ids)} picture(s), {job.params['width']}×{job.params['height']} px."

    def run(material_id, scenes_v, scene_prompt_v, canvas_v, width_v, height_v, own_placement, scale_v, x_v, ground_v,
            variants_v, seed_v, steps_v, guidance_v, shadow_v, controlnet_v, request: gr.Request, progress=gr.Progress()):
        raw = dict(material_id=material_id, scenes=scenes_v or [], scene_prompt=scene_prompt_v, canvas_format=canvas_v,
                   width=width_v, height=height_v, variants=variants_v,
                   seed=None if seed_v is None or seed_v < 0 else seed_v, steps=steps_v, guidance=guidance_v,
                   shadow=shadow_v, controlnet=controlnet_v,
                   placement=None if own_placement else {"scale": scale_v, "x": x_v, "ground": ground_v})
        owner = services.owner(request)
        job = submit(owner, "product", raw)
        yield job.id, [], [], f"Queued: {len(job.params['outputs'])} picture(s), seed {job.params['seed']} · job `{job.id}`"
        yield from finish(owner, job, progress)

    form = [picker.dropdown, scenes, scene_prompt, canvas, width, height, scene_placement, scale, x, ground, variants,
            seed, steps, guidance, shadow, controlnet]
    results = [job_id, gallery, picture_ids, status]

    def fill(request: dict) -> dict:
        """A product template's settings; the product photo is the user's to pick."""
        return {scenes: request.get("scenes", []), scene_prompt: request.get("scene_prompt", ""),
                canvas: request.get("canvas_format", "1:1"), variants: request.get("variants", 1),
                steps: request.get("steps", profile.steps), guidance: request.get("guidance", profile.guidance)}

    targets["product"] = TemplateTarget("product", [scenes, scene_prompt, canvas, variants, steps, guidance], fill)
    run_button.click(run, form, results, api_name="product_generate", concurrency_limit=None)
    cancel_button.click(services.cancel, job_id, status, api_visibility="private")

    def select(ids: list[str], evt: gr.SelectData, request: gr.Request):
        asset_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        if asset_id is None:
            return None, [], ""
        with services.db.session() as session:
            children = {a.stage: a for a in repo.child_assets(session, asset_id, services.owner(request))}
        layers = [(str(services.asset_path(children[s])), s) for s in LAYER_STAGES if s in children]
        links = [f"[{label}](/api/v1/assets/{children[s].id}/file)" for s, label in EXPORT_LINKS.items() if s in children]
        return asset_id, layers, "Download: " + " · ".join(links)

    gallery.select(select, picture_ids, [selected, layers_view, downloads], api_visibility="private")

    def rerun(asset_id: str | None, format_v: str, request: gr.Request, progress=gr.Progress()):
        if not asset_id:
            raise gr.Error("Select a picture first.")
        owner = services.owner(request)
        try:
            job = services.products.rerun(owner, asset_id, format_v, origin="product")
        except REFUSALS as exc:
            raise gr.Error(str(exc)) from exc
        yield job.id, [], [], f"Re-running in {format_v} · job `{job.id}`"
        yield from finish(owner, job, progress)

    rerun_button.click(rerun, [selected, rerun_format], results, api_name="product_rerun", concurrency_limit=None)
    return picker
