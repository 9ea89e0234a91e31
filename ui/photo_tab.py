"""The PhotoMaker & avatars tab: portraits that keep a person's face from 1-4 photos (with stylizations,
attribute edits and a second person mixed in), an avatar per style, and the photo studio's digital avatars
(checked photos, an identity LoRA trained on their face crops, photo templates rendered with it)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import gradio as gr
import pandas as pd

from storage import repo
from storage.avatars import AvatarError, AvatarView
from storage.models import JobState
from storage.quota import LimitExceeded
from tasks.client import InvalidRequest, JobView
from tasks.identity_client import AVATAR_TRAINING_STEPS, Portrait
from ui.img2img_tab import SEND_LABEL
from ui.jobs import REFUSALS, track_job, warn_if_no_worker
from ui.services import Services, banner
from ui.templates_tab import TemplateTarget

VERDICT_COLUMNS = ["Photo", "Verdict", "Reason"]
PHOTO_COLUMNS = ["Photo", "Verdict", "Problems", "Similarity to the group", "Sharpness"]
COMPOSITION_MARK = " 📐"
BEST_OF_INFO = "Candidates drawn per picture; the most like the person kept."
CONFIRM_DELETE = "I understand this deletes the photos, crops and the trained model"


def _both(entry) -> str:
    return f"{entry.label} · {entry.label_zh}"


def _files(paths) -> list[tuple[str, bytes]]:
    return [(Path(p).name, Path(p).read_bytes()) for p in (paths or [])]


def _seed(value) -> int | None:
    return None if value is None or value < 0 else int(value)


def _submit(services: Services, call: Callable[[], JobView]) -> JobView:
    """A job from one of the identity client's calls; a refused request (over a limit too) shows its message."""
    try:
        job = call()
    except REFUSALS as exc:
        raise gr.Error(str(exc)) from exc
    warn_if_no_worker(services)
    return job


def _ended(job: JobView, what: str) -> str | None:
    """None when the job succeeded; "Cancelled." when it was; raises its error when it failed."""
    if job.state == JobState.CANCELLED:
        return "Cancelled."
    if job.state == JobState.FAILED:
        raise gr.Error(f"{what} failed: {job.error}")
    return None


def _portrait_items(services: Services, owner: str, portraits: list[Portrait]) -> list[tuple[str, str]]:
    items = []
    with services.db.session() as session:
        for portrait in portraits:
            asset = repo.get_asset(session, portrait.asset_id, owner)
            if asset is not None:
                items.append((str(services.asset_path(asset)), portrait.caption))
    return items


def _follow(services: Services, owner: str, job: JobView, progress: gr.Progress, what: str, queued: str) -> Iterator[tuple]:
    """(job id, gallery, result ids, status) while the owner's identity job waits, runs and ends: the gallery
    empties, then fills with the job's pictures, most like the person first; a failure raises its message."""
    yield job.id, [], [], queued
    for job in track_job(services, owner, job, progress):
        if not job.finished:
            yield job.id, gr.update(), gr.update(), job.stage
    if (text := _ended(job, what)) is not None:
        yield None, [], [], text
        return
    yield None, *_results(services, owner, job)


def _results(services: Services, owner: str, job: JobView) -> tuple[list, list[str], str]:
    """A finished identity job's gallery items (most like the person first), their ids and a summary."""
    portraits = services.identity.portraits(owner, job.id)
    found = sum(p.similarity is not None for p in portraits)
    note = "" if job.stage == "done" else f" Note: {job.stage}."
    text = f"Done: {len(portraits)} picture(s), a face found in {found}, most like the person first.{note}"
    return _portrait_items(services, owner, portraits), [p.asset_id for p in portraits], text


class FacePhotos:
    """Face photos uploaded as materials when a form is sent; sending the same photos again reuses them."""

    def __init__(self, services: Services):
        self.services = services

    def ids(self, owner: str, paths, cache: dict, required: bool = True) -> list[str]:
        """The owner's material ids of the photos (uploaded now unless ``cache`` knows them)."""
        files = _files(paths)
        if not files:
            if required:
                raise gr.Error("Upload 1 to 4 photos of the person whose face the pictures keep.")
            return []
        key = "|".join(hashlib.sha256(data).hexdigest() for _, data in files)
        known = cache.get(key)
        materials = self.services.materials
        if known and all(materials.get(owner, m) is not None for m in known):
            return known
        try:
            cache[key] = self.services.identity.upload_faces(owner, files)
        except (InvalidRequest, LimitExceeded) as exc:
            raise gr.Error(str(exc)) from exc
        return cache[key]


@dataclass
class GroupedPicker:
    """A CheckboxGroup per category with "Select all" and "Clear"; the choice is their union."""

    groups: list[gr.CheckboxGroup]
    names: list[str]  # every entry, in catalogue order
    group_of: dict[str, int]  # entry -> the index of its group

    @property
    def inputs(self) -> list[gr.CheckboxGroup]:
        return self.groups

    def chosen(self, values) -> list[str] | str:
        picked = {name for group in values for name in (group or [])}
        if picked and picked == set(self.names):
            return "all"
        return [name for name in self.names if name in picked]

    def with_added(self, name: str, values) -> list:
        """The groups' values with ``name`` ticked too (the others unchanged)."""
        index = self.group_of[name]
        return [gr.update() if i != index else list(dict.fromkeys([*(group or []), name]))
                for i, group in enumerate(values)]


def build_grouped_picker(categories: dict, entries: dict, elem_id: str, label: Callable, value: list[str]) -> GroupedPicker:
    groups = []
    with gr.Column(elem_id=elem_id):
        with gr.Row():
            select_all = gr.Button("Select all", size="sm", elem_id=f"{elem_id}-all")
            clear = gr.Button("Clear", size="sm", elem_id=f"{elem_id}-clear")
        for name, category in categories.items():
            members = [(label(entry), key) for key, entry in entries.items() if entry.category == name]
            if members:
                groups.append(gr.CheckboxGroup(members, value=[k for _, k in members if k in value], label=_both(category),
                                               elem_id=f"{elem_id}-{name}"))
    everyone = [[k for k, e in entries.items() if e.category == name] for name in categories]
    everyone = [members for members in everyone if members]
    select_all.click(lambda: everyone, None, groups, api_visibility="private")
    clear.click(lambda: [[] for _ in groups], None, groups, api_visibility="private")
    return GroupedPicker(groups, list(entries), {name: i for i, members in enumerate(everyone) for name in members})


def _likeness_controls(identity, prefix: str) -> tuple[gr.Slider, gr.Slider]:
    """Candidates per picture (best of N) and face strength: the two controls every identity form has."""
    default, most = identity.best_of
    best_of = gr.Slider(1, most, value=default, step=1, label="Best of", info=BEST_OF_INFO, elem_id=f"{prefix}-best-of")
    scale = gr.Slider(0, 1.5, value=identity.default_scale, step=0.05, label="Face strength", elem_id=f"{prefix}-scale")
    return best_of, scale


def _batch_settings(services: Services, prefix: str, seed_label: str) -> tuple[gr.Slider, gr.Slider, gr.Number, gr.Slider]:
    """A batch form's settings (one picture per style or template): best of, face strength, seed and steps."""
    with gr.Row():
        best_of, scale = _likeness_controls(services.identity, prefix)
    with gr.Accordion("Seed and steps", open=False):
        with gr.Row():
            seed = gr.Number(value=-1, precision=0, label=seed_label)
            steps = gr.Slider(1, services.options.max_steps, value=services.options.profile.steps, step=1, label="Steps",
                              elem_id=f"{prefix}-steps")
    return best_of, scale, seed, steps


def _attribute_dropdowns(catalogue, elem_id: str) -> list[gr.Dropdown]:
    dropdowns = []
    with gr.Row():
        for name, attribute in catalogue.attributes.items():
            choices = [("unchanged · 不变", "")] + [(_both(o), key) for key, o in attribute.options.items()]
            dropdowns.append(gr.Dropdown(choices, value="", label=_both(attribute), elem_id=f"{elem_id}-{name}",
                                         min_width=180))
    return dropdowns


def _edits(catalogue, values) -> dict[str, str]:
    return {name: value for name, value in zip(catalogue.attributes, values) if value}


# ------------------------------------------------------------------------------------------ PhotoMaker


def build_photomaker_section(services: Services, enabled: bool, senders: list[tuple[gr.Button, gr.State]]) -> tuple[list, Callable[[dict], dict]]:
    """The PhotoMaker form; returns the components a portrait template fills and how it fills them."""
    options, identity = services.options, services.identity
    catalogue = identity.catalogue
    profile = options.profile
    faces = FacePhotos(services)
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", file_types=["image"], label="Face photos (1-4, the clearest ones)",
                            elem_id="photo-files")
            prompt = gr.Textbox(label="Prompt (name the person with a class word: man, woman, girl, 女孩…)", lines=2,
                                placeholder="a man in a garden / 一个女孩在海边", elem_id="photo-prompt")
            stylization = gr.Dropdown([(_both(s), key) for key, s in catalogue.stylizations.items()], value="none",
                                      label="Stylization", elem_id="photo-stylization")
            with gr.Accordion("Mix in a second person", open=False):
                mix_files = gr.File(file_count="multiple", file_types=["image"], label="The second person's photos (1-4)",
                                    elem_id="photo-mix-files")
                mix = gr.Slider(0, 1, value=0.5, step=0.05, label="Mix (0: the first person, 1: the second)",
                                elem_id="photo-mix")
            with gr.Accordion("Attribute edits", open=False):
                attributes = _attribute_dropdowns(catalogue, "photo-attr")
            with gr.Row():
                count = gr.Slider(1, options.max_count, value=2, step=1, label="Pictures", elem_id="photo-count")
                best_of, scale = _likeness_controls(identity, "photo")
            with gr.Accordion("Seed, steps and guidance", open=False):
                negative = gr.Textbox(label="Negative prompt", lines=1)
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1 = random)", elem_id="photo-seed")
                    steps = gr.Slider(1, options.max_steps, value=profile.steps, step=1, label="Steps", elem_id="photo-steps")
                    guidance = gr.Slider(0, 30, value=profile.guidance, step=0.5, label="Guidance")
            with gr.Row():
                run_button = gr.Button("Generate", variant="primary", elem_id="photo-generate", interactive=enabled)
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="photo-cancel")
            status = gr.Markdown(elem_id="photo-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Portraits (most like the person first)", format="png", columns=3, height=460,
                                 object_fit="contain", elem_id="photo-gallery", buttons=["download", "fullscreen"])
            selected_info = gr.Markdown("Select a picture to edit its attributes.", elem_id="photo-selected")
            send = gr.Button(SEND_LABEL, elem_id="photo-send")
            with gr.Accordion("Edit attributes of the selected picture", open=True):
                reedits = _attribute_dropdowns(catalogue, "photo-edit-attr")
                edit_button = gr.Button("Redraw with these edits", interactive=False, elem_id="photo-edit")
                before_after = gr.ImageSlider(label="Before / after", type="filepath", elem_id="photo-before-after",
                                              height=360)
    job_id, result_ids, selected, cache = gr.State(None), gr.State([]), gr.State(None), gr.State({})
    senders.append((send, selected))

    def run(paths, prompt_v, stylization_v, mix_paths, mix_v, count_v, best_of_v, scale_v, negative_v, seed_v, steps_v,
            guidance_v, cache_v, request: gr.Request, *edit_values, progress=gr.Progress()):
        raw = dict(prompt=prompt_v, stylization=stylization_v, mix=mix_v, edits=_edits(catalogue, edit_values),
                   count=count_v, best_of=best_of_v, scale=scale_v, negative_prompt=negative_v, seed=_seed(seed_v),
                   steps=steps_v, guidance=guidance_v)
        # The rest of the request is checked before the photos are stored, so a prompt to correct stores nothing.
        try:
            services.client.validate("identity", dict(raw, photos=["upload"] * max(1, len(paths or []))))
        except InvalidRequest as exc:
            raise gr.Error(str(exc)) from exc
        owner = services.owner(request)
        raw.update(photos=faces.ids(owner, paths, cache_v), mix_photos=faces.ids(owner, mix_paths, cache_v, required=False))
        job = _submit(services, lambda: identity.portrait(owner, raw, origin="photo"))
        queued = f"Queued (seed {job.params['items'][0]['generation']['seed']}) · job `{job.id}`"
        for running, items, ids, text in _follow(services, owner, job, progress, "PhotoMaker", queued):
            yield running, items, ids, None, text, cache_v, gr.update(interactive=False)

    form = [files, prompt, stylization, mix_files, mix, count, best_of, scale, negative, seed, steps, guidance, cache,
            *attributes]
    run_button.click(run, form, [job_id, gallery, result_ids, selected, status, cache, edit_button],
                     api_visibility="private", concurrency_limit=None)
    cancel_button.click(services.cancel, job_id, status, api_visibility="private")

    def select(ids: list[str], evt: gr.SelectData):
        asset_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
        if asset_id is None:
            return None, "Select a picture to edit its attributes.", gr.update(interactive=False)
        caption = evt.value.get("caption") if isinstance(evt.value, dict) else ""
        return asset_id, f"Selected: {caption or asset_id}", gr.update(interactive=enabled)

    gallery.select(select, result_ids, [selected, selected_info, edit_button], api_visibility="private")

    def edit(asset_id, request: gr.Request, *values, progress=gr.Progress()):
        if not asset_id:
            raise gr.Error("Select a picture in the gallery first.")
        edits = _edits(catalogue, values)
        if not edits:
            raise gr.Error("Choose at least one attribute to change (the others stay as they are).")
        owner = services.owner(request)
        job = _submit(services, lambda: identity.edit(owner, asset_id, edits, origin="photo"))
        yield job.id, gr.update(), f"Redrawing with {', '.join(edits.values())} · job `{job.id}`"
        for job in track_job(services, owner, job, progress):
            if not job.finished:
                yield job.id, gr.update(), job.stage
        if (text := _ended(job, "The edit")) is not None:
            yield None, gr.update(), text
            return
        portraits = identity.portraits(owner, job.id)
        with services.db.session() as session:
            before = repo.get_asset(session, asset_id, owner)
        after = _portrait_items(services, owner, portraits[:1])
        if before is None or not after:
            raise gr.Error("The edited picture (or the one it changes) is gone.")
        yield None, (str(services.asset_path(before)), after[0][0]), f"Edited: {after[0][1]}"

    edit_button.click(edit, [selected, *reedits], [job_id, before_after, status], api_visibility="private",
                      concurrency_limit=None)

    def fill(request: dict) -> dict:
        """A portrait template's settings; the face photos are the user's to upload."""
        return {prompt: request.get("prompt", ""), stylization: request.get("stylization", "none"),
                negative: request.get("negative_prompt", ""), count: request.get("count", 2),
                best_of: request.get("best_of", best_of.value), steps: request.get("steps", profile.steps),
                guidance: request.get("guidance", profile.guidance)}

    return [prompt, stylization, negative, count, best_of, steps, guidance], fill


# ------------------------------------------------------------------------------------------- Avatars


def _avatar_previews(services: Services) -> tuple[list[tuple[str, str]], list[str], str]:
    """Gallery items of the avatar styles with a preview on this profile, their names, and a note."""
    store, profile = services.avatar_previews, services.options.profile.name
    items, names = [], []
    for name, style in services.identity.catalogue.avatar_styles.items():
        if (path := store.path(profile, name)) is not None:
            items.append((str(path), _both(style)))
            names.append(name)
    if not items:
        return [], [], (f"No avatar style has a preview on the {profile} profile yet: "
                        "`python app.py styles previews --avatars` renders them.")
    noise = store.manifest(profile).get("noise")
    noise = "**These previews were rendered by the tiny profile: they are noise.** " if noise else ""
    return items, names, f"{noise}Click a preview to tick its style."


def build_avatar_section(services: Services, enabled: bool) -> None:
    identity = services.identity
    catalogue = identity.catalogue
    faces = FacePhotos(services)
    with gr.Row():
        with gr.Column(scale=3):
            files = gr.File(file_count="multiple", file_types=["image"], label="Face photos (1-4)", elem_id="avatar-files")
            subject = gr.Textbox(label="Who (a class word and a few details)", placeholder="a woman / 一个女孩",
                                 elem_id="avatar-subject")
            with gr.Accordion("Styles", open=True):
                styles = build_grouped_picker(catalogue.avatar_categories, catalogue.avatar_styles, "avatar-styles", _both,
                                              value=list(catalogue.avatar_styles)[:4])
            with gr.Accordion("Style previews", open=False) as previews_box:
                preview_items, preview_names, preview_note = _avatar_previews(services)
                previews = gr.Gallery(preview_items, columns=6, height=260, allow_preview=False, show_label=False,
                                      object_fit="cover", elem_id="avatar-previews")
                previews_note = gr.Markdown(preview_note)
            best_of, scale, seed, steps = _batch_settings(services, "avatar", "Seed (-1 = random; one seed for every style)")
            with gr.Row():
                run_button = gr.Button("Generate avatars", variant="primary", elem_id="avatar-generate", interactive=enabled)
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="avatar-cancel")
            status = gr.Markdown(elem_id="avatar-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Avatars (most like the person first)", format="png", columns=4, height=600,
                                 object_fit="contain", elem_id="avatar-gallery", buttons=["download", "fullscreen"])
    job_id, cache, shown = gr.State(None), gr.State({}), gr.State(preview_names)
    # Previews rendered since the page was built show up when the accordion is opened.
    previews_box.expand(lambda: _avatar_previews(services), None, [previews, shown, previews_note],
                        api_visibility="private")

    def pick(evt: gr.SelectData, names: list[str], *groups):  # the event first: Gradio fills it in by position
        if evt.index is None or evt.index >= len(names):
            return [gr.update() for _ in groups]
        return styles.with_added(names[evt.index], groups)

    previews.select(pick, [shown, *styles.inputs], styles.inputs, api_visibility="private")

    def run(paths, subject_v, best_of_v, scale_v, seed_v, steps_v, cache_v, request: gr.Request, *groups,
            progress=gr.Progress()):
        chosen = styles.chosen(groups)
        if not chosen:
            raise gr.Error("Pick at least one style (or Select all).")
        owner = services.owner(request)
        photos = faces.ids(owner, paths, cache_v)
        raw = dict(subject=subject_v, photos=photos, styles=chosen, best_of=best_of_v, scale=scale_v, seed=_seed(seed_v),
                   steps=steps_v)
        job = _submit(services, lambda: identity.avatar_batch(owner, raw, origin="photo"))
        queued = f"Queued: {len(job.params['items'])} style(s) · job `{job.id}`"
        for running, items, _, text in _follow(services, owner, job, progress, "The avatars", queued):
            yield running, items, text, cache_v

    run_button.click(run, [files, subject, best_of, scale, seed, steps, cache, *styles.inputs],
                     [job_id, gallery, status, cache], api_visibility="private", concurrency_limit=None)
    cancel_button.click(services.cancel, job_id, status, api_visibility="private")


# -------------------------------------------------------------------------------------- Photo studio


def _verdict_table(verdicts) -> pd.DataFrame:
    rows = [[v.name, "✓ usable" if v.ok else "✗ refused", "" if v.ok else v.reason] for v in verdicts]
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _photo_table(avatar: AvatarView | None) -> pd.DataFrame:
    marks = {"usable": "✓ usable", "rejected": "✗ rejected", "pending": "… checking"}
    rows = [[p.name, marks.get(p.verdict, p.verdict), " ".join(p.problems), _number(p.similarity, 2), _number(p.sharpness, 0)]
            for p in (avatar.photos if avatar else [])]
    return pd.DataFrame(rows, columns=PHOTO_COLUMNS)


def _avatar_choices(services: Services, owner: str) -> list[tuple[str, str]]:
    return [(f"{a.name} · {a.state}", a.id) for a in services.identity.avatars.list(owner)]


def _avatar_summary(avatar: AvatarView | None) -> str:
    if avatar is None:
        return "No avatar chosen."
    hint = {"checking": "Its photos are being checked.",
            "needs photos": "Too few photos passed the checks to train: make a new avatar with more good photos.",
            "check failed": f"The photo check did not finish ({avatar.check_error}): check the photos again.",
            "checked": "Ready to train.", "training": "Training…",
            "ready": "Trained: render it into photo templates below.",
            "failed": f"Training failed: {avatar.lora.state_note if avatar.lora else ''} Train it again."}[avatar.state]
    return (f"**{avatar.name}** ({avatar.subject}) · state: **{avatar.state}** · {len(avatar.usable)} of "
            f"{len(avatar.photos)} photos usable. {hint}")


class AvatarViews:
    """One user's chosen avatar's summary, photo table and face crops; the avatar dropdown's choices."""

    def __init__(self, services: Services, owner: str):
        self.services, self.owner = services, owner

    def get(self, avatar_id: str | None) -> AvatarView | None:
        return self.services.identity.avatars.get(self.owner, avatar_id) if avatar_id else None

    def crops(self, avatar: AvatarView | None) -> list[tuple[str, str]]:
        items = []
        for photo in (avatar.usable if avatar else []):
            try:
                path = self.services.identity.avatars.photo(self.owner, avatar.id, photo.id, crop=True)
            except LookupError:
                continue
            items.append((str(path), photo.name))
        return items

    def details(self, avatar_id: str | None) -> tuple:
        """(summary, photo table, crops) of the avatar."""
        avatar = self.get(avatar_id)
        return _avatar_summary(avatar), _photo_table(avatar), self.crops(avatar)

    def dropdown(self, value: str | None) -> dict:
        choices = _avatar_choices(self.services, self.owner)
        return gr.update(choices=choices, value=value if value in {v for _, v in choices} else None)


def build_studio_section(services: Services, enabled: bool, tab: gr.Tab) -> None:
    identity = services.identity
    catalogue = identity.catalogue
    low, high = identity.photo_limits
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown(f"### 1 · Create a digital avatar\nUpload **{low}–{high} photos** of one person: the face clearly "
                        "visible, alone, sharp, from different angles and days. Each photo is checked; the usable faces "
                        "are cropped for training. The photos and crops stay yours and are deleted with the avatar.")
            with gr.Row():
                name = gr.Textbox(label="Avatar name", value="My avatar", elem_id="studio-name")
                subject = gr.Textbox(label="Who (a class word)", placeholder="a woman / 一个女孩", elem_id="studio-subject")
            files = gr.File(file_count="multiple", file_types=["image"], label=f"Photos ({low}-{high})", elem_id="studio-files")
            with gr.Row():
                check_button = gr.Button("Check photos", elem_id="studio-check")
                create_button = gr.Button("Create avatar", variant="primary", elem_id="studio-create", interactive=enabled)
            status = gr.Markdown(elem_id="studio-status")
            verdicts = gr.Dataframe(pd.DataFrame([], columns=VERDICT_COLUMNS), interactive=False, wrap=True,
                                    label="Upload checks", elem_id="studio-verdicts")
        with gr.Column(scale=4):
            gr.Markdown("### 2 · Your avatars: check, train, delete")
            with gr.Row(equal_height=True):
                avatar = gr.Dropdown([], value=None, label="Avatar", scale=4,
                                     elem_id="studio-avatar")
                refresh = gr.Button("↻", scale=0, min_width=40, elem_id="studio-avatar-refresh")
            summary = gr.Markdown("No avatar chosen.", elem_id="studio-avatar-state")
            photos = gr.Dataframe(pd.DataFrame([], columns=PHOTO_COLUMNS), interactive=False, wrap=True,
                                  label="Its photos", elem_id="studio-photos")
            crops = gr.Gallery(label="Usable face crops (the training set)", columns=6, height=200, object_fit="contain",
                               elem_id="studio-crops")
            with gr.Row(equal_height=True):
                train_steps = gr.Slider(10, 3000, value=AVATAR_TRAINING_STEPS, step=10, label="Training steps", scale=3,
                                        elem_id="studio-train-steps")
                train_button = gr.Button("Train digital avatar", variant="primary", elem_id="studio-train", scale=2,
                                         interactive=enabled)
                train_cancel = gr.Button("Cancel training", variant="stop", elem_id="studio-train-cancel", scale=1)
            train_status = gr.Markdown(elem_id="studio-train-status")
            with gr.Row(equal_height=True):
                confirm = gr.Checkbox(value=False, label=CONFIRM_DELETE, elem_id="studio-delete-confirm", scale=3)
                recheck_button = gr.Button("Check photos again", elem_id="studio-recheck", scale=1, interactive=enabled)
                delete_button = gr.Button("Delete avatar", variant="stop", elem_id="studio-delete", scale=1)
            manage_status = gr.Markdown(elem_id="studio-delete-status")
    gr.Markdown(f"### 3 · Photo templates of the chosen avatar\n{COMPOSITION_MARK.strip()} marks a template with a "
                "composition sketch that sets the pose.")
    with gr.Row():
        with gr.Column(scale=3):
            templates = build_grouped_picker(catalogue.template_categories, catalogue.photo_templates, "studio-templates",
                                             lambda t: _both(t) + (COMPOSITION_MARK if t.composition else ""), value=[])
            best_of, scale, seed, steps = _batch_settings(services, "studio", "Seed (-1 = random; one seed for every template)")
            with gr.Row():
                render_button = gr.Button("Render", variant="primary", elem_id="studio-render", interactive=enabled)
                render_cancel = gr.Button("Cancel", variant="stop", elem_id="studio-render-cancel")
            render_status = gr.Markdown(elem_id="studio-render-status")
        with gr.Column(scale=4):
            gallery = gr.Gallery(label="Photos (most like the avatar first)", format="png", columns=4, height=480,
                                 object_fit="contain", elem_id="studio-gallery", buttons=["download", "fullscreen"])
    train_job, render_job = gr.State(None), gr.State(None)
    details = [summary, photos, crops]

    def views_for(request: gr.Request) -> AvatarViews:
        return AvatarViews(services, services.owner(request))

    def check(paths):
        if not paths:
            raise gr.Error(f"Upload {low} to {high} photos of the person first.")
        found = identity.check_photos(_files(paths))
        usable = sum(v.ok for v in found)
        need = "" if usable >= low else f": at least {low} are needed"
        return _verdict_table(found), f"{usable} of {len(found)} photo(s) pass the upload checks{need}."

    check_button.click(check, files, [verdicts, status], api_visibility="private")

    def create(name_v, subject_v, paths, request: gr.Request, progress=gr.Progress()):
        if not paths:
            raise gr.Error(f"Upload {low} to {high} photos of the person first.")
        views = views_for(request)
        try:
            made, job, found = identity.create_avatar(views.owner, name_v, subject_v, _files(paths), origin="photo")
        except REFUSALS as exc:
            raise gr.Error(str(exc)) from exc
        warn_if_no_worker(services, "face check")
        table = _verdict_table(found)
        yield (table, f"Avatar '{made.name}' created: checking its faces · job `{job.id}`", views.dropdown(made.id),
               *views.details(made.id))
        for job in track_job(services, views.owner, job, progress):
            if not job.finished:
                yield table, f"Checking the faces: {job.stage}", gr.update(), gr.update(), gr.update(), gr.update()
        if job.state != JobState.SUCCEEDED:
            text = f"**The face check {job.state}:** {job.error or job.stage}. Press ↻ to check the avatar's state."
            yield table, text, views.dropdown(made.id), *views.details(made.id)
            if job.state == JobState.FAILED:
                raise gr.Error(f"The face check failed: {job.error}")
            return
        checked = views.get(made.id)
        ready = checked is not None and checked.state == "checked"
        text = f"Checked: {job.stage}." + (" Ready to train." if ready else "")
        yield table, text, views.dropdown(made.id), *views.details(made.id)

    # Progress and errors show on the status lines, so they never cover a control the user needs next.
    create_button.click(create, [name, subject, files], [verdicts, status, avatar, *details], api_visibility="private",
                        concurrency_limit=None, show_progress_on=status)

    def show_details(avatar_id: str | None, request: gr.Request) -> tuple:
        return views_for(request).details(avatar_id)

    def choices(avatar_id: str | None, request: gr.Request) -> dict:
        return views_for(request).dropdown(avatar_id)

    def reload(avatar_id: str | None, request: gr.Request) -> tuple:
        views = views_for(request)
        return views.dropdown(avatar_id), *views.details(avatar_id)

    avatar.input(show_details, avatar, details, api_visibility="private")
    # The user's avatars fill the list when the section is opened, when the list is (avatars made or changed in
    # another browser show up), and on ↻.
    avatar.focus(choices, avatar, avatar, api_visibility="private")
    tab.select(choices, avatar, avatar, api_visibility="private")
    refresh.click(reload, avatar, [avatar, *details], api_visibility="private", show_progress_on=summary)

    def recheck(avatar_id, request: gr.Request, progress=gr.Progress()):
        if not avatar_id:
            raise gr.Error("Choose an avatar first (or create one above).")
        views = views_for(request)
        job = _submit(services, lambda: identity.check_again(views.owner, avatar_id, origin="photo"))
        yield views.dropdown(avatar_id), *views.details(avatar_id), f"Checking the photos again · job `{job.id}`"
        for job in track_job(services, views.owner, job, progress):
            if not job.finished:
                yield gr.update(), gr.update(), gr.update(), gr.update(), job.stage
        text = f"Checked: {job.stage}." if job.state == JobState.SUCCEEDED else f"**The check ended {job.state}:** {job.error or ''}"
        yield views.dropdown(avatar_id), *views.details(avatar_id), text

    recheck_button.click(recheck, avatar, [avatar, *details, manage_status], api_visibility="private",
                         concurrency_limit=None, show_progress_on=manage_status)

    def train(avatar_id, steps_v, request: gr.Request, progress=gr.Progress()):
        if not avatar_id:
            raise gr.Error("Choose an avatar first (or create one above).")
        views = views_for(request)
        job = _submit(services, lambda: identity.train_avatar(views.owner, avatar_id, {"steps": steps_v}, origin="photo"))
        yield job.id, views.dropdown(avatar_id), _avatar_summary(views.get(avatar_id)), f"Training queued · job `{job.id}`"
        for job in track_job(services, views.owner, job, progress):
            if not job.finished:
                yield job.id, gr.update(), gr.update(), f"Training: {job.stage} · job `{job.id}`"
        trained = views.get(avatar_id)
        if trained is not None and trained.state == "ready":
            text = f"**Trained** '{trained.name}' ({steps_v} steps): it is ready for photo templates."
        elif job.state == JobState.CANCELLED:
            text = "Training cancelled."
        else:
            note = (trained.lora.state_note if trained and trained.lora else None) or job.error or job.stage
            yield None, views.dropdown(avatar_id), _avatar_summary(trained), f"**Training failed:** {note}"
            raise gr.Error(f"Training failed: {note}")
        yield None, views.dropdown(avatar_id), _avatar_summary(trained), text

    train_button.click(train, [avatar, train_steps], [train_job, avatar, summary, train_status], api_visibility="private",
                       concurrency_limit=None, show_progress_on=train_status)
    train_cancel.click(services.cancel, train_job, train_status, api_visibility="private")

    def delete(avatar_id, confirmed, request: gr.Request):
        if not avatar_id:
            raise gr.Error("Choose the avatar to delete first.")
        if not confirmed:
            raise gr.Error(f"Tick “{CONFIRM_DELETE}” first.")
        views = views_for(request)
        gone = views.get(avatar_id)
        try:
            identity.avatars.delete(views.owner, avatar_id)
        except (AvatarError, LookupError) as exc:
            raise gr.Error(str(exc)) from exc
        text = f"Deleted '{gone.name if gone else avatar_id}' with its photos, face crops and trained model."
        return (views.dropdown(None), *views.details(None), False, text)

    delete_button.click(delete, [avatar, confirm], [avatar, *details, confirm, manage_status], api_visibility="private",
                        show_progress_on=manage_status)

    def render(avatar_id, best_of_v, scale_v, seed_v, steps_v, request: gr.Request, *groups, progress=gr.Progress()):
        if not avatar_id:
            raise gr.Error("Choose a trained avatar first.")
        chosen = templates.chosen(groups)
        if not chosen:
            raise gr.Error("Pick at least one photo template (or Select all).")
        owner = services.owner(request)
        raw = dict(templates=chosen, best_of=best_of_v, scale=scale_v, seed=_seed(seed_v), steps=steps_v)
        job = _submit(services, lambda: identity.render_templates(owner, avatar_id, raw, origin="photo"))
        queued = f"Queued: {len(job.params['items'])} template(s) · job `{job.id}`"
        for running, items, _, text in _follow(services, owner, job, progress, "Rendering", queued):
            yield running, items, text

    render_button.click(render, [avatar, best_of, scale, seed, steps, *templates.inputs], [render_job, gallery, render_status],
                        api_visibility="private", concurrency_limit=None)
    render_cancel.click(services.cancel, render_job, render_status, api_visibility="private")


def build_photo_tab(services: Services, senders: list[tuple[gr.Button, gr.State]], targets: dict[str, TemplateTarget]) -> None:
    options = services.options
    unavailable = services.identity.unavailable
    gr.Markdown(banner(options), visible=options.profile.is_noise, elem_classes=["noise-banner"])
    gr.Markdown(f"**{unavailable}**" if unavailable else "", visible=bool(unavailable), elem_id="photo-unavailable",
                elem_classes=["noise-banner"])
    enabled = unavailable is None
    with gr.Tabs() as sections:
        with gr.Tab("PhotoMaker", id="photo-maker-tab"):
            components, fill = build_photomaker_section(services, enabled, senders)
        with gr.Tab("Avatars", id="photo-avatars-tab"):
            build_avatar_section(services, enabled)
        with gr.Tab("Photo studio", id="photo-studio-tab") as studio_tab:
            build_studio_section(services, enabled, studio_tab)
    targets["photomaker"] = TemplateTarget("photo", [sections, *components],
                                           lambda request: {sections: gr.Tabs(selected="photo-maker-tab"), **fill(request)})
