"""The Image-to-image tab: restyle or translate a picture, keeping its pose, structure or depth (ControlNets
with their preprocessors) or only its composition, with Create's seed, steps and size controls.

The source is one of the user's results (sent here from any result gallery) or a material (picked, or
uploaded here into the material library).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from storage import repo
from ui.asset_panel import selected_asset, wire_selection
from ui.jobs import follow_job
from ui.materials_tab import MaterialPicker, build_material_picker, upload_material
from ui.services import Services, banner
from ui.templates_tab import TemplateTarget

SEND_LABEL = "Send to image-to-image"


@dataclass
class Img2ImgTab:
    """The tab's form, kept so templates and result galleries can fill it."""

    services: Services
    tab_id: str
    source: gr.State  # {"asset_id": ...} or {"material_id": ...}
    source_view: gr.Image
    source_info: gr.Markdown
    picker: MaterialPicker
    size: list  # the width and height sliders
    form: list  # prompt, negative, style, strength, (keep on, keep weight) per keep, width, height, count, steps, guidance, seed

    def source_outputs(self) -> list:
        return [self.source, self.source_view, self.source_info, self.picker.dropdown]

    def show_asset(self, owner: str, asset_id: str | None) -> list:
        """Values for ``source_outputs`` and ``size``: one of the owner's results as the source (or an error
        the UI shows), the size set to its shape."""
        asset = selected_asset(self.services, owner, asset_id)
        return [{"asset_id": asset.id}, str(self.services.asset_path(asset)),
                f"Source: your result `{asset.id}` ({asset.width}×{asset.height} px, seed {asset.params.get('seed')}).",
                gr.update(value=None), *self.size_for(asset.width, asset.height)]

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        return self.services.options.size_like(width, height)

    def values_from(self, settings: dict) -> list:
        """Form values for a template's (or a result's) image-to-image settings; the source stays as it is."""
        options = self.services.options
        profile = options.profile
        keeps = {k["kind"]: k.get("weight") for k in settings.get("keeps", [])}
        keep_values = []
        for keep in options.keeps:
            keep_values += [keep.name in keeps and keep.problem is None, keeps.get(keep.name) or keep.default_weight]
        return [settings.get("prompt", ""), settings.get("negative_prompt", ""), settings.get("style", "none"),
                float(settings.get("strength", options.img2img_strength)), *keep_values,
                int(settings.get("width") or profile.default_size[0]), int(settings.get("height") or profile.default_size[1]),
                int(settings.get("count", 1)), int(settings.get("steps", profile.steps)),
                float(settings.get("guidance", profile.guidance)), int(settings.get("seed", -1))]



def img2img_target(tab: Img2ImgTab) -> TemplateTarget:
    """Image-to-image as a template's tab: the template fills the form; the source stays the user's pick."""
    return TemplateTarget(tab.tab_id, tab.form, lambda request: dict(zip(tab.form, tab.values_from(request))))


def wire_senders(tab: Img2ImgTab, tabs: gr.Tabs, senders: list[tuple[gr.Button, gr.State]]) -> None:
    """Each send button (a ``SEND_LABEL`` button beside a result gallery, with the state holding the gallery's
    selected asset id) puts that result into the tab as the source and opens the tab. Galleries are built
    before this tab, so their buttons wait in ``senders`` until it exists."""
    def send(asset_id: str | None, request: gr.Request) -> list:
        return [gr.Tabs(selected=tab.tab_id), *tab.show_asset(tab.services.owner(request), asset_id)]

    for button, selected in senders:
        button.click(send, selected, [tabs, *tab.source_outputs(), *tab.size], api_visibility="private")


def build_img2img_tab(services: Services, tab_id: str, senders: list[tuple[gr.Button, gr.State]]) -> Img2ImgTab:
    """The tab; its own "Use as the new source" joins ``senders``."""
    options = services.options
    profile = options.profile
    gr.Markdown(banner(options), visible=profile.is_noise, elem_classes=["noise-banner"])
    problems = [k.problem for k in options.keeps if k.problem]
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("### 1 · Source picture")
            picker = build_material_picker(services, "From your material library", kind=None, elem_id="img2img-material")
            upload = gr.File(label="…or upload a picture (kept in your material library as a reference)",
                             file_types=["image"], type="filepath", elem_id="img2img-upload")
            source_view = gr.Image(label="Source", type="filepath", interactive=False, height=220, elem_id="img2img-source")
            source_info = gr.Markdown("No source yet: pick a material, upload a picture, or use "
                                      f"“{SEND_LABEL}” under any result.", elem_id="img2img-source-info")
            gr.Markdown("### 2 · What to make of it")
            prompt = gr.Textbox(label="Prompt (optional with a style)", lines=2, elem_id="img2img-prompt",
                                placeholder="the same scene as a watercolour painting / 水彩画风格")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            style = gr.Dropdown(options.styles, value="none", label="Style", elem_id="img2img-style")
            strength = gr.Slider(0.05, 1.0, value=options.img2img_strength, step=0.05, label="Strength",
                                 info="How much is redrawn: low keeps the source's colours and details, 1 redraws everything.",
                                 elem_id="img2img-strength")
            gr.Markdown("### 3 · What to keep\nNone ticked: composition only (plain image-to-image). Several at once "
                        "work together, each at its weight.")
            keep_inputs = []
            for keep in options.keeps:
                with gr.Row(equal_height=True):
                    on = gr.Checkbox(value=False, label=keep.label, interactive=keep.problem is None, scale=2,
                                     elem_id=f"img2img-keep-{keep.name}", info=keep.problem)
                    weight = gr.Slider(0.0, 2.0, value=keep.default_weight, step=0.05, label="Weight", scale=3,
                                       interactive=keep.problem is None, elem_id=f"img2img-weight-{keep.name}")
                keep_inputs += [on, weight]
            gr.Markdown("**Not available on this machine** (the other keeps work):\n" + "\n".join(f"- {p}" for p in problems),
                        visible=bool(problems), elem_id="img2img-unavailable")
            with gr.Accordion("Size, seed and steps", open=False):
                with gr.Row():
                    width = gr.Slider(profile.min_size, profile.max_size, value=profile.default_size[0], step=8,
                                      label="Width (px)", elem_id="img2img-width")
                    height = gr.Slider(profile.min_size, profile.max_size, value=profile.default_size[1], step=8,
                                       label="Height (px)", elem_id="img2img-height")
                gr.Markdown("Picking a source sets the size to its shape; the source is cropped to the size's shape.")
                with gr.Row():
                    count = gr.Slider(1, options.max_count, value=1, step=1, label="Images")
                    steps = gr.Slider(1, options.max_steps, value=profile.steps, step=1, label="Steps")
                    guidance = gr.Slider(0, 30, value=profile.guidance, step=0.5, label="Guidance")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="img2img-generate")
                cancel_button = gr.Button("Cancel", variant="stop")
            status = gr.Markdown(elem_id="img2img-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Results", format="png", columns=4, height=420, elem_id="img2img-gallery",
                                 object_fit="contain", buttons=["download", "fullscreen"])
            maps = gr.Gallery(label="What was kept (the maps the ControlNets read)", format="png", columns=3, height=200,
                              elem_id="img2img-maps", object_fit="contain")
            selected_info = gr.Markdown()
            with gr.Row():
                favourite_button = gr.Button("☆ Favourite")
                again_button = gr.Button("Use as the new source", elem_id="img2img-again")
            selected_params = gr.JSON(label="Parameters of the selected image")

    source = gr.State(None)
    job_id, asset_ids, selected = gr.State(None), gr.State([]), gr.State(None)
    form = [prompt, negative, style, strength, *keep_inputs, width, height, count, steps, guidance, seed]
    tab = Img2ImgTab(services, tab_id, source, source_view, source_info, picker, [width, height], form)

    def source_material(owner: str, material_id: str | None) -> tuple:
        """Values for ``material_outputs``: the owner's material as the source, the size set to its shape."""
        if not material_id:
            return None, None, "No source yet.", gr.update(), gr.update()
        material = services.materials.get(owner, material_id)
        if material is None:
            raise gr.Error("This material no longer exists.")
        w, h = tab.size_for(material.width, material.height)
        return ({"material_id": material.id}, str(services.files.path(material.file_hash, "png")),
                f"Source: material **{material.name}** ({material.width}×{material.height} px).", w, h)

    def use_material(material_id: str | None, request: gr.Request) -> tuple:
        return source_material(services.owner(request), material_id)

    material_outputs = [source, source_view, source_info, width, height]
    picker.dropdown.input(use_material, picker.dropdown, material_outputs, api_visibility="private")

    def add_upload(path: str | None, request: gr.Request):
        owner = services.owner(request)
        material = upload_material(services, owner, path, kind="reference")
        return picker.choices(owner, material.id), *source_material(owner, material.id)

    upload.upload(add_upload, upload, [picker.dropdown, *material_outputs], api_visibility="private")

    # The request comes before the keeps' values: Gradio fills in positional parameters only.
    def run(source_v, prompt_v, negative_v, style_v, strength_v, request: gr.Request, *rest, progress=gr.Progress()):
        keep_values, (width_v, height_v, count_v, steps_v, guidance_v, seed_v) = rest[:-6], rest[-6:]
        if not source_v:
            raise gr.Error("Choose a source picture first: pick a material, upload one, or send a result here.")
        keeps = [{"kind": keep.name, "weight": keep_values[2 * i + 1]}
                 for i, keep in enumerate(options.keeps) if keep_values[2 * i]]
        raw = dict(source_asset_id=source_v.get("asset_id"), source_material_id=source_v.get("material_id"),
                   prompt=prompt_v, negative_prompt=negative_v, style=style_v, strength=strength_v, keeps=keeps,
                   width=width_v, height=height_v, count=count_v, steps=steps_v, guidance=guidance_v,
                   seed=None if seed_v is None or seed_v < 0 else seed_v)
        owner = services.owner(request)
        job = yield from follow_job(services, owner, "img2img", raw, "img2img", progress, "Image-to-image",
                                    lambda job_id, text: (job_id, [], [], [], text))
        if job is None:
            return
        with services.db.session() as session:
            assets = repo.job_assets(session, job.id, owner)
        finals = [a for a in assets if a.stage == "final"]
        images = [(str(services.asset_path(a)), f"seed {a.params['seed']}") for a in finals]
        kept = [(str(services.asset_path(a)), options.stage_labels[a.stage]) for a in assets if a.stage != "final"]
        what = ", ".join(options.stage_labels[a.stage] for a in assets if a.stage != "final") or "composition only"
        yield (None, images, kept, [a.id for a in finals],
               f"Done: {len(finals)} picture(s), {finals[0].width}×{finals[0].height} px, seed {job.params['seed']} · kept: {what}.")

    run_button.click(run, [source, *form], [job_id, gallery, maps, asset_ids, status], api_name="img2img",
                     concurrency_limit=None)
    cancel_button.click(services.cancel, job_id, status, api_visibility="private")

    wire_selection(services, gallery, asset_ids, selected, selected_params, selected_info, favourite_button)
    senders.append((again_button, selected))
    return tab
