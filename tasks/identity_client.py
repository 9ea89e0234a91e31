"""What the web side uses for identity portraits and the photo studio: face-photo uploads, PhotoMaker
portraits and attribute edits, avatar batches, digital avatars (checked photos, training, photo
templates) and the results ranked by face similarity. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass

from engine.identity_request import DEFAULT_BEST_OF, DEFAULT_SCALE, MAX_BEST_OF, MAX_PHOTOS, avatar_person
from engine.lora_request import DEFAULT_RANK
from engine.portraits import find_class_word
from storage import repo
from storage.avatars import AVATAR_TRIGGER, MIN_PHOTOS, AvatarError, AvatarLibrary, AvatarView, check_face_photos
from storage.avatars import MAX_PHOTOS as MAX_STUDIO_PHOTOS
from storage.images import ImageUploadError
from storage.loras import ImageVerdict
from storage.materials import MaterialError, MaterialLibrary
from storage.quota import picture_limit
from tasks.client import InvalidRequest, JobView, StudioClient

AVATAR_TRAINING_STEPS = 600
# The attribute-edit job redraws the picture it changes with these of its settings, so only the edit differs.
KEPT_FOR_EDITS = ("prompt", "stylization", "photos", "mix_photos", "mix", "scale", "seed", "width", "height", "steps",
                  "guidance", "sampler", "negative_prompt")


@dataclass
class Portrait:
    """One identity result as galleries show it."""

    asset_id: str
    label: str  # the preset
    similarity: float | None
    seed: int

    @property
    def caption(self) -> str:
        likeness = "no face found" if self.similarity is None else f"face similarity {self.similarity:.2f}"
        return f"{self.label} · {likeness}"


class IdentityClient:
    def __init__(self, client: StudioClient, avatars: AvatarLibrary, materials: MaterialLibrary):
        self.client, self.avatars, self.materials = client, avatars, materials

    # The portrait forms' starting values and limits: candidates per picture (best of) and face strength.
    best_of = (DEFAULT_BEST_OF, MAX_BEST_OF)
    default_scale = DEFAULT_SCALE

    @property
    def catalogue(self):
        return self.client.catalog.portraits

    @property
    def unavailable(self) -> str | None:
        """Why this studio cannot make identity portraits, or None when it can."""
        roles = self.client.profile.roles
        if "identity" in roles and "faces" in roles:
            return None
        return (f"The {self.client.profile.name} profile has no identity adapter, so it cannot keep a face. "
                "Run the studio with the sdxl or sd15 profile for PhotoMaker, avatars and the photo studio.")

    def upload_faces(self, owner_id: str, files: list[tuple[str, bytes]], limit: int = MAX_PHOTOS) -> list[str]:
        """Store face photos as the owner's materials (kind "face"); return their ids. A bad file is refused
        with its number and name."""
        if len(files) > limit:
            raise InvalidRequest(f"{len(files)} photos were given; use 1 to {limit} photos of the person (the clearest ones).")
        ids = []
        for number, (name, data) in enumerate(files, start=1):
            try:
                ids.append(self.materials.upload(owner_id, data, filename=name, kind="face").id)
            except (ImageUploadError, MaterialError) as exc:
                raise InvalidRequest(f"Photo {number} ({name.rsplit('/', 1)[-1]}): {exc}") from exc
        return ids

    def portrait(self, owner_id: str, request: dict, origin: str = "api") -> JobView:
        """A PhotoMaker job: ``request`` as the ``identity`` job kind takes it (photos are face-photo ids)."""
        return self.client.submit(owner_id, "identity", request, origin)

    def edit(self, owner_id: str, asset_id: str, edits: dict[str, str], origin: str = "api") -> JobView:
        """Redraw a PhotoMaker picture with attribute edits, its identity, seed and settings held."""
        with self.client.db.session() as session:
            source = repo.get_asset(session, asset_id, owner_id)
            if source is None or source.params.get("kind") != "identity":
                raise InvalidRequest(f"No PhotoMaker picture {asset_id} to edit.")
            params = dict(source.params)
        kept = {key: params[key] for key in KEPT_FOR_EDITS if key in params}
        kept.update(stylization=params.get("preset"), edits={**params.get("edits", {}), **edits},
                    edit_of=asset_id, count=1, best_of=1)
        return self.client.submit(owner_id, "identity", kept, origin)

    def avatar_batch(self, owner_id: str, request: dict, origin: str = "api") -> JobView:
        return self.client.submit(owner_id, "avatar_batch", request, origin)

    def portraits(self, owner_id: str, job_id: str) -> list[Portrait]:
        """A job's kept pictures, most like the person first."""
        with self.client.db.session() as session:
            job = repo.get_job(session, job_id, owner_id)
            if job is None:
                return []
            found = [Portrait(a.id, a.params.get("preset_label", ""), a.params.get("similarity"), a.params.get("seed", 0))
                     for a in job.assets if a.stage == "final"]
        return sorted(found, key=lambda p: (p.similarity is None, -(p.similarity or 0.0)))

    # The photo studio.

    @property
    def photo_limits(self) -> tuple[int, int]:
        return MIN_PHOTOS, MAX_STUDIO_PHOTOS

    def check_photos(self, files: list[tuple[str, bytes]]) -> list[ImageVerdict]:
        return check_face_photos(files, max_bytes=picture_limit(self.avatars.quota))

    def create_avatar(self, owner_id: str, name: str, subject: str, files: list[tuple[str, bytes]],
                      origin: str = "api") -> tuple[AvatarView, JobView, list[ImageVerdict]]:
        """Check the uploads, store the good ones as a new avatar, and queue the check of its faces."""
        if not find_class_word(subject):
            raise InvalidRequest("Say who the avatar is with a class word, e.g. 'a woman', 'a man', 'a boy' or '一个女孩'.")
        if message := self.unavailable:
            raise InvalidRequest(message)
        verdicts = self.check_photos(files)
        self.client.check_limits(owner_id, {})  # over a limit: refused before the photos are stored
        try:
            avatar = self.avatars.create(owner_id, name, subject, self.client.profile.name, verdicts)
        except AvatarError as exc:
            raise InvalidRequest(str(exc)) from exc
        try:
            job = self.client.submit(owner_id, "face_check", {"avatar_id": avatar.id}, origin)
        except InvalidRequest:
            self.avatars.delete(owner_id, avatar.id)
            raise
        return self.avatars.get(owner_id, avatar.id), job, verdicts

    def check_again(self, owner_id: str, avatar_id: str, origin: str = "api") -> JobView:
        """Check every photo of the avatar again (after a check that failed or was cancelled)."""
        return self.client.submit(owner_id, "face_check", {"avatar_id": avatar_id}, origin)

    def train_avatar(self, owner_id: str, avatar_id: str, settings: dict | None = None, origin: str = "api") -> JobView:
        """Train the avatar's identity LoRA on its usable face crops."""
        avatar = self.avatars.get(owner_id, avatar_id)
        if avatar is None:
            raise InvalidRequest(f"No avatar {avatar_id} (it may have been deleted).")
        person = avatar_person(avatar.subject, AVATAR_TRIGGER)
        try:
            lora_id = self.avatars.training_lora(owner_id, avatar_id, caption=f"a photo of {person}",
                                                 base_model=self.client.profile.roles["base"].model)
        except AvatarError as exc:
            raise InvalidRequest(str(exc)) from exc
        defaults = {"rank": DEFAULT_RANK, "steps": AVATAR_TRAINING_STEPS, "sample_prompt": f"a portrait photo of {person}"}
        # The trigger is in every caption already ("a photo of sks woman"), so the request adds none.
        return self.client.submit(owner_id, "train_avatar", {**defaults, **(settings or {}), "lora_id": lora_id, "trigger": ""}, origin)

    def render_templates(self, owner_id: str, avatar_id: str, request: dict, origin: str = "api") -> JobView:
        return self.client.submit(owner_id, "photo_template", dict(request, avatar_id=avatar_id), origin)
