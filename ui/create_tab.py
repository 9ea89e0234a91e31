"""The Create tab: prompt and settings in, a job through the queue, images out in a gallery."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from storage import repo
from tasks.client import FormOptions
from ui.asset_panel import caption, wire_selection
from ui.img2img_tab import SEND_LABEL
from ui.jobs import follow_job
from ui.lora_picker import LoraPicker, build_lora_picker
from ui.services import Services, banner
from ui.style_picker import build_style_picker
from ui.templates_tab import TemplateTarget

CUSTOM_ASPECT = "custom"


def aspect_of(options: FormOptions, width: int, height: int) -> str:
    for aspect in options.aspect_ratios:
        w, h = (int(x) for x in aspect.split(":"))
        if width * h == height * w:
            return aspect
    return CUSTOM_ASPECT


@dataclass
class CreateTab:
    """The Create tab's form, kept so other tabs can fill it ("reuse settings")."""

    services: Services
    form: list
    loras: LoraPicker

    def values_from(self, params: dict) -> list:
        """Form values that reproduce the image these parameters made."""
        options = self.services.options
        profile = options.profile
        width = int(params.get("width") or profile.default_size[0])
        height = int(params.get("height") or profile.default_size[1])
        stages = [s for s in params.get("stages", []) if s != "base" and s in profile.stages]
        return [
            params.get("prompt", ""), params.get("negative_prompt", ""), params.get("style", "none"),
            aspect_of(options, width, height), width, height, int(params.get("count", 1)), int(params.get("steps", profile.steps)),
            float(params.get("guidance", profile.guidance)), params.get("sampler", profile.sampler),
            int(params.get("seed", -1)), stages, bool(params.get("keep_stage_images", False)),
            *self.loras.values_from(params.get("loras", [])),  # the style's and fast mode's LoRAs come with them
            bool(params.get("fast", False)) and profile.fast_mode is not None,
        ]


def build_create_tab(services: Services, senders: list[tuple[gr.Button, gr.State]]) -> CreateTab:
    options = services.options
    profile = options.profile
    gr.Markdown(banner(options), visible=profile.is_noise, elem_classes=["noise-banner"])
    with gr.Row():
        with gr.Column(scale=3):
            prompt = gr.Textbox(label="Prompt", lines=3, placeholder="A red fox in fresh snow, morning light / 雪地里的红狐狸", elem_id="create-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1, placeholder="blurry, watermark")
            with gr.Row():
                style = gr.Dropdown(options.styles, value="none", label="Style", elem_id="create-style",
                                    info="Choosing a style sets its suggested size, steps and guidance.")
                sampler = gr.Dropdown(options.samplers, value=profile.sampler, label="Sampler", elem_id="create-sampler")
            style_picker = gr.Column()
            with gr.Row():
                aspect = gr.Dropdown([*options.aspect_ratios, CUSTOM_ASPECT], value=aspect_of(options, *profile.default_size), label="Aspect ratio")
                count = gr.Slider(1, options.max_count, value=1, step=1, label="Images")
            with gr.Row():
                width = gr.Slider(profile.min_size, profile.max_size, value=profile.default_size[0], step=8, label="Width (px)")
                height = gr.Slider(profile.min_size, profile.max_size, value=profile.default_size[1], step=8, label="Height (px)")
            with gr.Row():
                steps = gr.Slider(1, options.max_steps, value=profile.steps, step=1, label="Steps", elem_id="create-steps")
                guidance = gr.Slider(0, 30, value=profile.guidance, step=0.5, label="Guidance", elem_id="create-guidance")
                seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                stages = gr.CheckboxGroup(
                    [(options.stage_labels[s], s) for s in profile.stages if s != "base"], value=[],
                    label="Cascade stages after the base", info=f"Profile {profile.name}: {profile.label}",
                )
                keep = gr.Checkbox(value=False, label="Keep each stage's image")
            fast_mode = profile.fast_mode
            fast = gr.Checkbox(
                value=False, label="Fast" + (f": {fast_mode.label}" if fast_mode else ""), elem_id="create-fast",
                interactive=options.fast_problem is None,
                info=options.fast_problem or (f"A distilled model draws in {fast_mode.steps} steps at guidance "
                                              f"{fast_mode.guidance:g}, several times sooner, with less detail; Fast sets "
                                              "the steps, guidance and sampler for it."))
            loras = build_lora_picker(services, "create-lora")
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="create-generate")
                cancel_button = gr.Button("Cancel", variant="stop")
            status = gr.Markdown(elem_id="create-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Results", format="png", columns=4, height=520, elem_id="create-gallery",
                                 object_fit="contain", buttons=["download", "fullscreen"])
            selected_info = gr.Markdown()
            with gr.Row():
                favourite_button = gr.Button("☆ Favourite")
                reuse_button = gr.Button("Reuse settings")
                send = gr.Button(SEND_LABEL, elem_id="create-send")
            selected_params = gr.JSON(label="Parameters of the selected image")

    job_id = gr.State(None)
    asset_ids = gr.State([])
    selected = gr.State(None)
    senders.append((send, selected))
    form = [prompt, negative, style, aspect, width, height, count, steps, guidance, sampler, seed, stages, keep, *loras.inputs, fast]
    tab = CreateTab(services, form, loras)

    def on_style(name: str, fast_v: bool):
        suggested = options.style_settings(name)
        steps_v, guidance_v = (fast_mode.steps, fast_mode.guidance) if fast_v and fast_mode else (suggested["steps"], suggested["guidance"])
        return (aspect_of(options, suggested["width"], suggested["height"]), suggested["width"], suggested["height"],
                steps_v, guidance_v)

    style.input(on_style, [style, fast], [aspect, width, height, steps, guidance], api_visibility="private")
    with style_picker:
        build_style_picker(services, style, "create-style-previews",
                           then=(on_style, [style, fast], [aspect, width, height, steps, guidance]))

    def on_fast(fast_v: bool, style_v: str, stages_v: list[str]):
        """Fast sets the distilled model's steps, guidance and sampler and drops the refiner, which does not follow
        it; turning it off brings back the style's steps and guidance and the profile's sampler."""
        if fast_v and fast_mode:
            return fast_mode.steps, fast_mode.guidance, fast_mode.sampler, [s for s in stages_v if s != "refiner"]
        suggested = options.style_settings(style_v)
        return suggested["steps"], suggested["guidance"], profile.sampler, stages_v

    fast.input(on_fast, [fast, style, stages], [steps, guidance, sampler, stages], api_visibility="private")

    def on_aspect(choice: str, w: int, h: int):
        if choice == CUSTOM_ASPECT:
            return gr.update(), gr.update()
        new_w, new_h = options.size_for_aspect(choice, int(max(w, h)))
        clamp = lambda v: min(profile.max_size, max(profile.min_size, v))  # noqa: E731
        return clamp(new_w), clamp(new_h)

    aspect.input(on_aspect, [aspect, width, height], [width, height], api_visibility="private")

    # The LoRA slots are named parameters with defaults, so API callers of /generate may leave them out.
    def run(prompt_v, negative_v, style_v, _aspect, width_v, height_v, count_v, steps_v, guidance_v, sampler_v,
            seed_v, stages_v, keep_v, lora_1=None, weight_1=1.0, lora_2=None, weight_2=1.0, lora_3=None, weight_3=1.0,
            fast_v=False, request: gr.Request | None = None, progress=gr.Progress()):
        raw = dict(prompt=prompt_v, negative_prompt=negative_v, style=style_v, width=width_v, height=height_v,
                   count=count_v, steps=steps_v, guidance=guidance_v, sampler=sampler_v,
                   seed=None if seed_v is None or seed_v < 0 else seed_v, stages=stages_v, keep_stage_images=keep_v,
                   loras=LoraPicker.request([lora_1, weight_1, lora_2, weight_2, lora_3, weight_3]), fast=bool(fast_v))
        owner = services.owner(request)
        job = yield from follow_job(services, owner, "generate", raw, "create", progress, "Generation",
                                    lambda job_id, status: (job_id, [], [], status))
        if job is None:
            return
        with services.db.session() as session:
            assets = repo.job_assets(session, job.id, owner)
        images = [(str(services.asset_path(a)), caption(services, a)) for a in assets]
        final = [a for a in assets if a.stage == "final"]
        kept = f" (+{len(assets) - len(final)} stage images)" if len(assets) > len(final) else ""
        summary = f"Done: {len(final)} image(s), {final[0].width}×{final[0].height} px, seed {job.params['seed']}{kept}."
        yield None, images, [a.id for a in assets], summary

    run_button.click(
        run, form, [job_id, gallery, asset_ids, status], api_name="generate", concurrency_limit=None,
    )

    cancel_button.click(services.cancel, job_id, status, api_name="cancel")

    wire_selection(services, gallery, asset_ids, selected, selected_params, selected_info, favourite_button)

    def reuse(params: dict):
        if not params:
            raise gr.Error("Select an image first.")
        return tab.values_from(params)

    reuse_button.click(reuse, selected_params, form, api_visibility="private")
    return tab


def create_target(tab: CreateTab, tab_id: str) -> TemplateTarget:
    """Create as a template's tab: the template's request fills the whole form, as "Reuse settings" does."""
    return TemplateTarget(tab_id, tab.form, lambda request: dict(zip(tab.form, tab.values_from(request))))
