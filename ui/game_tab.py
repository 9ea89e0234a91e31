"""The Game assets tab: characters, props, icons, environments and tileable textures in a chosen style,
as transparent sprites and sprite sheets; training a style LoRA from the user's images; their LoRAs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd

from storage import repo
from storage.loras import LoraError
from storage.models import JobState, LoraState
from tasks.client import InvalidRequest
from ui.asset_panel import wire_selection
from ui.img2img_tab import SEND_LABEL
from ui.jobs import REFUSALS, follow_job, wait_for_job, warn_if_no_worker
from ui.lora_picker import LoraPicker, build_lora_picker
from ui.services import Services, banner
from ui.style_picker import build_style_picker
from ui.templates_tab import TemplateTarget

# Seconds between redraws of a running training's curve and samples.
TRAINING_POLL_SECONDS = 1.0
LORA_COLUMNS = ["Name", "Kind", "State", "Profile", "Trigger", "Note", "Id"]


def build_generate_section(services: Services, senders: list[tuple[gr.Button, gr.State]]) -> tuple[list, Callable[[dict], dict]]:
    """The generate form; returns the components a game template fills and how it fills them."""
    options = services.options
    profile = options.profile
    catalog = options.catalog
    with gr.Row():
        with gr.Column(scale=3):
            asset_type = gr.Radio(options.asset_types, value="character", label="Asset type", elem_id="game-asset-type")
            prompt = gr.Textbox(label="Subject", lines=2, elem_id="game-prompt",
                                placeholder="a fox ranger with a bow / 手持弓箭的狐狸游侠")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            style = gr.Dropdown(options.styles, value="pixel-art" if "pixel-art" in catalog.styles else "none",
                                label="Art style", elem_id="game-style",
                                info="Choosing a style sets its suggested size, steps and guidance.")
            style_picker = gr.Column()
            with gr.Row():
                transparent = gr.Checkbox(value=True, label="Transparent sprite (background removed, trimmed)",
                                          elem_id="game-transparent")
                sheet = gr.Checkbox(value=False, label="Sprite sheet of the variations", elem_id="game-sheet")
            with gr.Row():
                count = gr.Slider(1, options.max_count, value=4, step=1, label="Variations", elem_id="game-count")
                columns = gr.Slider(0, 8, value=0, step=1, label="Sheet columns (0 = square)")
            loras = build_lora_picker(services, "game-lora")
            with gr.Accordion("Size, steps and seed", open=False):
                suggested = options.style_settings(style.value, "character")
                with gr.Row():
                    width = gr.Slider(profile.min_size, profile.max_size, value=suggested["width"], step=8, label="Width (px)")
                    height = gr.Slider(profile.min_size, profile.max_size, value=suggested["height"], step=8, label="Height (px)")
                with gr.Row():
                    steps = gr.Slider(1, options.max_steps, value=suggested["steps"], step=1, label="Steps", elem_id="game-steps")
                    guidance = gr.Slider(0, 30, value=suggested["guidance"], step=0.5, label="Guidance")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
            with gr.Row():
                run_button = gr.Button("Generate assets", variant="primary", elem_id="game-generate")
                cancel_button = gr.Button("Cancel", variant="stop")
            status = gr.Markdown(elem_id="game-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Assets", format="png", columns=4, height=520, elem_id="game-gallery",
                                 object_fit="contain", buttons=["download", "fullscreen"])
            selected_info = gr.Markdown()
            with gr.Row():
                favourite_button = gr.Button("☆ Favourite")
                send = gr.Button(SEND_LABEL, elem_id="game-send")
            selected_params = gr.JSON(label="Parameters of the selected asset")
    job_id, asset_ids, selected = gr.State(None), gr.State([]), gr.State(None)
    senders.append((send, selected))

    def on_shape(type_name: str, style_name: str):
        """An asset type or style changes the suggested size, steps and guidance, and what output is offered."""
        asset = catalog.asset_types[type_name]
        suggested = options.style_settings(style_name, type_name)
        return (suggested["width"], suggested["height"], suggested["steps"], suggested["guidance"],
                gr.update(value=asset.transparent, interactive=asset.transparent),
                gr.update(value=False, interactive=asset.transparent))

    shape_outputs = [width, height, steps, guidance, transparent, sheet]
    asset_type.input(on_shape, [asset_type, style], shape_outputs, api_visibility="private")
    style.input(on_shape, [asset_type, style], shape_outputs, api_visibility="private")
    with style_picker:
        build_style_picker(services, style, "game-style-previews", then=(on_shape, [asset_type, style], shape_outputs))

    def run(type_v, prompt_v, negative_v, style_v, transparent_v, sheet_v, count_v, columns_v, width_v, height_v,
            steps_v, guidance_v, seed_v, lora_1=None, weight_1=1.0, lora_2=None, weight_2=1.0, lora_3=None,
            weight_3=1.0, request: gr.Request | None = None, progress=gr.Progress()):
        raw = dict(asset_type=type_v, prompt=prompt_v, negative_prompt=negative_v, style=style_v,
                   transparent=transparent_v, sprite_sheet=sheet_v, count=count_v, sheet_columns=columns_v,
                   width=width_v, height=height_v, steps=steps_v, guidance=guidance_v,
                   seed=None if seed_v is None or seed_v < 0 else seed_v, loras=LoraPicker.request([lora_1, weight_1, lora_2, weight_2, lora_3, weight_3]))
        owner = services.owner(request)
        job = yield from follow_job(services, owner, "game_asset", raw, "game", progress, "Asset generation",
                                    lambda job_id, status: (job_id, [], [], status))
        if job is None:
            return
        with services.db.session() as session:
            assets = [a for a in repo.job_assets(session, job.id, owner) if a.stage == "final"]
        items = []
        for asset in assets:
            what = "sprite sheet" if asset.kind == "sprite_sheet" else (
                "sprite" if job.params["transparent"] else "image")
            items.append((str(services.asset_path(asset)), f"{what} · {asset.width}×{asset.height} · seed {asset.params['seed']}"))
        note = "" if job.stage == "done" else f" Note: {job.stage}."
        yield None, items, [a.id for a in assets], f"Done: {len(assets)} asset(s).{note}"

    form = [asset_type, prompt, negative, style, transparent, sheet, count, columns, width, height, steps, guidance, seed,
            *loras.inputs]
    run_button.click(run, form, [job_id, gallery, asset_ids, status], api_name="game_generate", concurrency_limit=None)
    cancel_button.click(services.cancel, job_id, status, api_visibility="private")
    wire_selection(services, gallery, asset_ids, selected, selected_params, selected_info, favourite_button)

    def fill(request: dict) -> dict:
        suggested = options.style_settings(request["style"], request["asset_type"])
        return {asset_type: request["asset_type"], prompt: request.get("prompt", ""),
                negative: request.get("negative_prompt", ""), style: request["style"],
                transparent: request.get("transparent", True), sheet: request.get("sprite_sheet", False),
                count: request.get("count", 4), width: suggested["width"], height: suggested["height"],
                steps: request.get("steps", suggested["steps"]), guidance: request.get("guidance", suggested["guidance"])}

    return [asset_type, prompt, negative, style, transparent, sheet, count, width, height, steps, guidance], fill


def _uploaded(paths) -> list[tuple[str, bytes]]:
    return [(Path(p).name, Path(p).read_bytes()) for p in (paths or [])]


def _verdict_table(verdicts) -> pd.DataFrame:
    rows = [[v.name, "✓ usable" if v.ok else f"✗ {v.reason}", v.caption] for v in verdicts]
    return pd.DataFrame(rows, columns=["Image", "Check", "Caption (optional)"])


def _curve_frame(curve) -> pd.DataFrame:
    rows = [{"step": s, "loss": loss, "series": "loss"} for s, loss, _ in curve]
    rows += [{"step": s, "loss": smooth, "series": "smoothed"} for s, _, smooth in curve]
    # Typed even when empty: the plot keeps the axis types of its first value, and an empty frame's object
    # columns would make both axes discrete.
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64", "series": "str"})


def _trained_choices(services: Services, owner: str) -> list[tuple[str, str]]:
    """The owner's LoRAs trained here (running, finished or stopped), newest first."""
    return [(f"{lora.name} · {lora.state}", lora.id) for lora in services.loras.library.list(owner)
            if lora.kind == "style" and lora.job_id]


def build_training_section(services: Services, tab: gr.Tab) -> None:
    """The section inside ``tab``; opening it lists the user's trainings."""
    lora_client = services.loras
    low, high = lora_client.limits
    defaults = lora_client.defaults
    gr.Markdown(f"Upload **{low}–{high} images** in one style (PNG, JPEG or WebP, at least {lora_client.min_side} px "
                "on the short side). A `.txt` file with the same name as an image is its caption; or write captions "
                "in the table. The trigger word goes first in every caption: use it in prompts to call the style.")
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", file_types=["image", ".txt"], label="Training images",
                            elem_id="train-files")
            check_button = gr.Button("Check images", elem_id="train-check")
            checked = gr.Dataframe(headers=["Image", "Check", "Caption (optional)"], interactive=True,
                                   label="Checked images", elem_id="train-verdicts", wrap=True)
            with gr.Row():
                name = gr.Textbox(label="LoRA name", value="My style", elem_id="train-name")
                trigger = gr.Textbox(label="Trigger word", placeholder="mystyle", elem_id="train-trigger")
            with gr.Row():
                rank = gr.Dropdown(defaults["ranks"], value=defaults["rank"], label="Rank", info="Higher learns more detail, larger file.")
                steps = gr.Slider(10, 3000, value=defaults["steps"], step=10, label="Steps", elem_id="train-steps")
                learning_rate = gr.Number(value=defaults["learning_rate"], label="Learning rate", elem_id="train-lr")
            with gr.Accordion("More training settings", open=False):
                with gr.Row():
                    text_encoder = gr.Checkbox(value=False, label="Also train the text encoder(s)")
                    sample_every = gr.Number(value=0, precision=0, label="Sample every K steps (0 = a fifth of the run)",
                                             elem_id="train-sample-every")
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)")
                sample_prompt = gr.Textbox(label="Sample prompt (default: the trigger word and a character in a landscape)")
            with gr.Row():
                train_button = gr.Button("Start training", variant="primary", elem_id="train-start")
                cancel_button = gr.Button("Cancel training", variant="stop", elem_id="train-cancel")
            status = gr.Markdown(elem_id="train-status")
        with gr.Column(scale=4):
            with gr.Row(equal_height=True):
                watched = gr.Dropdown([], value=None, label="Show a training", scale=4,
                                      elem_id="train-watch", info="Follow a running training again, or see how one went.")
                watch_refresh = gr.Button("↻", scale=0, min_width=40)
            plot = gr.LinePlot(_curve_frame([]), x="step", y="loss", color="series", title="Training loss",
                               elem_id="train-loss", height=300)
            samples = gr.Gallery(label="Samples while training", columns=4, height=300, elem_id="train-samples",
                                 object_fit="contain")
    job_id = gr.State(None)

    def check(paths):
        try:
            verdicts = lora_client.check_images(_uploaded(paths))
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from exc
        usable = sum(v.ok for v in verdicts)
        text = f"{usable} of {len(verdicts)} image(s) usable" + ("" if usable >= low else f": at least {low} are needed")
        return _verdict_table(verdicts), text

    check_button.click(check, files, [checked, status], api_visibility="private")

    def train(paths, table, name_v, trigger_v, rank_v, steps_v, lr_v, te_v, every_v, seed_v, sample_prompt_v,
              request: gr.Request):
        captions = {}
        if isinstance(table, pd.DataFrame) and not table.empty:
            captions = {str(row.iloc[0]): str(row.iloc[2] or "") for _, row in table.iterrows() if str(row.iloc[2] or "").strip()}
        settings = dict(rank=rank_v, steps=steps_v, learning_rate=lr_v, train_text_encoder=te_v,
                        seed=None if seed_v is None or seed_v < 0 else seed_v, sample_prompt=sample_prompt_v)
        if every_v:
            settings["sample_every"] = every_v
        owner = services.owner(request)
        try:
            lora, job, verdicts = lora_client.start_training(owner, _uploaded(paths), name_v, trigger_v or "", captions,
                                                             settings, origin="game")
        except REFUSALS as exc:
            raise gr.Error(str(exc)) from exc
        warn_if_no_worker(services, "training")
        refused = [v for v in verdicts if not v.ok]
        left_out = f" ({len(refused)} image(s) left out)" if refused else ""
        yield job.id, _verdict_table(verdicts), f"Training '{lora.name}' queued{left_out} · job `{job.id}`", gr.update(), gr.update()
        yield from follow(owner, lora.id, job.id)

    def follow(owner: str, lora_id: str, job_id_v: str):
        while True:
            view = lora_client.training(owner, lora_id)
            if view is None:
                yield None, gr.update(), "The LoRA was deleted.", gr.update(), gr.update()
                return
            with services.db.session() as session:
                sample_items = []
                for sample in view.samples:
                    asset = repo.get_asset(session, sample["asset_id"], owner)
                    if asset is not None:
                        sample_items.append((str(services.asset_path(asset)), f"step {sample['step']}"))
            job = view.job
            finished = job is None or job.finished
            if view.lora.state == LoraState.READY:
                text = (f"**Trained** '{view.lora.name}': {len(view.lora.metrics.get('losses', []))} steps. It is in the "
                        "LoRA pickers now (press ↻ there).")
            elif finished and job is not None and job.state != JobState.SUCCEEDED:
                text = f"**{job.state.capitalize()}:** {view.lora.state_note or job.error or job.stage}"
            else:
                text = f"{job.stage if job else view.lora.state} · job `{job_id_v}`"
            yield (None if finished else job_id_v), gr.update(), text, _curve_frame(view.curve), sample_items
            if finished:
                return
            time.sleep(TRAINING_POLL_SECONDS)

    train_button.click(train, [files, checked, name, trigger, rank, steps, learning_rate, text_encoder, sample_every, seed,
                               sample_prompt], [job_id, checked, status, plot, samples], api_visibility="private",
                       concurrency_limit=None)

    def watch(lora_id, request: gr.Request):
        if not lora_id:
            return
        owner = services.owner(request)
        lora = lora_client.library.get(owner, lora_id)
        if lora is None:
            raise gr.Error("That LoRA was deleted.")
        yield from follow(owner, lora.id, lora.job_id)

    watched.input(watch, watched, [job_id, checked, status, plot, samples], api_visibility="private", concurrency_limit=None)
    def refreshed(current, request: gr.Request):
        return gr.update(choices=_trained_choices(services, services.owner(request)), value=current)

    # The user's trainings fill the list when the section is opened, when the list is, and on ↻.
    tab.select(refreshed, watched, watched, api_visibility="private")
    watched.focus(refreshed, watched, watched, api_visibility="private")
    watch_refresh.click(refreshed, watched, watched, api_visibility="private")

    cancel_button.click(services.cancel, job_id, status, api_visibility="private")


def _lora_table(services: Services, owner: str) -> pd.DataFrame:
    rows = [[lora.name, "trained" if lora.kind == "style" else "uploaded", lora.state, lora.profile, lora.trigger,
             lora.state_note or "", lora.id] for lora in services.loras.library.list(owner)]
    return pd.DataFrame(rows, columns=LORA_COLUMNS)


def build_library_section(services: Services, tab: gr.Tab) -> None:
    """The section inside ``tab``; opening it lists the user's LoRAs."""
    lora_client = services.loras
    table = gr.Dataframe(pd.DataFrame([], columns=LORA_COLUMNS), interactive=False, label="Your LoRAs",
                         elem_id="lora-table", wrap=True)
    with gr.Row():
        refresh = gr.Button("↻ Refresh")
        selected = gr.Textbox(label="Selected LoRA id", interactive=False)
    with gr.Row():
        rename_to = gr.Textbox(label="New name")
        rename_button = gr.Button("Rename")
        download = gr.Markdown()
        delete_button = gr.Button("Delete", variant="stop")
    gr.Markdown("### Upload a LoRA\nOnly `.safetensors` files (pickled `.ckpt`/`.pt`/`.bin` files can run code and are "
                "refused). A worker checks its layers against this profile's base model before it can be used.")
    with gr.Row():
        upload_file = gr.File(file_types=[".safetensors"], label="LoRA file", elem_id="lora-upload")
        upload_name = gr.Textbox(label="Name")
        upload_weight = gr.Slider(-2, 2, value=1.0, step=0.05, label="Default weight")
        upload_button = gr.Button("Upload", variant="primary")
    status = gr.Markdown()

    def on_select(frame: pd.DataFrame, evt: gr.SelectData, request: gr.Request):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        lora_id = str(frame.iloc[row]["Id"])
        lora = lora_client.library.get(services.owner(request), lora_id)
        link = f"[Download .safetensors](/api/v1/loras/{lora_id}/file)" if lora and lora.file_hash else ""
        return lora_id, lora.name if lora else "", link

    table.select(on_select, table, [selected, rename_to, download], api_visibility="private")
    def listing(request: gr.Request) -> pd.DataFrame:
        return _lora_table(services, services.owner(request))

    tab.select(listing, None, table, api_visibility="private")
    refresh.click(listing, None, table, api_visibility="private")

    def rename(lora_id, new_name, request: gr.Request):
        if not lora_id:
            raise gr.Error("Select a LoRA in the table first.")
        owner = services.owner(request)
        try:
            lora_client.library.update(owner, lora_id, name=new_name)
        except (LookupError, LoraError) as exc:
            raise gr.Error(str(exc)) from exc
        return _lora_table(services, owner), "Renamed."

    rename_button.click(rename, [selected, rename_to], [table, status], api_visibility="private")

    def delete(lora_id, request: gr.Request):
        if not lora_id:
            raise gr.Error("Select a LoRA in the table first.")
        owner = services.owner(request)
        try:
            lora_client.library.delete(owner, lora_id)
        except (LookupError, LoraError) as exc:
            raise gr.Error(str(exc)) from exc
        return _lora_table(services, owner), "", "Deleted, with its weights and training images."

    delete_button.click(delete, selected, [table, selected, status], api_visibility="private")

    def upload(path, name_v, weight_v, request: gr.Request, progress=gr.Progress()):
        if not path:
            raise gr.Error("Choose a .safetensors file first.")
        owner = services.owner(request)
        try:
            lora, job = lora_client.upload(owner, Path(path).read_bytes(), Path(path).name, name_v, weight_v, origin="game")
        except REFUSALS as exc:
            raise gr.Error(str(exc)) from exc
        job = wait_for_job(services, owner, job, progress)
        lora = lora_client.library.get(owner, lora.id)
        if lora.state == LoraState.READY:
            return _lora_table(services, owner), f"**'{lora.name}' is ready:** {lora.state_note}"
        raise gr.Error(f"'{lora.name}' was not accepted: {lora.state_note or job.error}")

    upload_button.click(upload, [upload_file, upload_name, upload_weight], [table, status], api_visibility="private")


def build_game_tab(services: Services, senders: list[tuple[gr.Button, gr.State]], targets: dict[str, TemplateTarget]) -> None:
    options = services.options
    gr.Markdown(banner(options), visible=options.profile.is_noise, elem_classes=["noise-banner"])
    with gr.Tabs() as sections:
        with gr.Tab("Generate", id="game-generate-tab"):
            components, fill = build_generate_section(services, senders)
        with gr.Tab("Train a style", id="game-train-tab") as train_tab:
            build_training_section(services, train_tab)
        with gr.Tab("My LoRAs", id="game-loras-tab") as loras_tab:
            build_library_section(services, loras_tab)
    targets["game"] = TemplateTarget("game", [sections, *components],
                                     lambda request: {sections: gr.Tabs(selected="game-generate-tab"), **fill(request)})
