"""Hostile and awkward input against a real studio: ``python app.py`` (web process and its embedded worker, tiny
profile) on a free port, over HTTP.

Every file of the corpus (tests/bad_inputs.py) goes to every upload route: materials, PhotoMaker face photos,
the product mask, LoRA files, LoRA training images and avatar photos (and their check-only routes). Every
hostile text goes to every text field: prompts, chat messages, names, tags, titles, captions, triggers,
searches, ids in the address. A refusal must be a 4xx whose message a user understands, and leave no row and
no file behind; an odd picture that is accepted must be converted right; legitimate text that only looks like
SQL or script must be stored verbatim and answered as JSON. At the end the worker that saw all this is the same
process, finishes the jobs queued meanwhile and a normal one, and the database is intact.

The text cases run while a long training job holds the worker, so the jobs they queue wait (and can be
cancelled before they start) and nothing the worker writes changes the before/after comparisons.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import signal
import sqlite3
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from storage.pngmeta import read_params
from tests.bad_inputs import (
    HOSTILE_NAMES,
    HOSTILE_TEXTS,
    REFUSE,
    UNSTORABLE_TEXTS,
    BadFile,
    encode,
    image_corpus,
    model_corpus,
    tiny_lora_file,
)
from tests.support import StudioServer, studio_env, training_pngs, wait_for
from tests.support_faces import PERSON_A, person_photos

pytestmark = pytest.mark.integration

FAST = {"steps": 1, "width": 64, "height": 64}
CORPUS_SIZE = (96, 80)  # the accepted pictures' size, and so the size of the material that takes masks
IMAGES = {item.id: item for item in image_corpus(size=CORPUS_SIZE)}  # ids for collection; rebuilt with the canary
MODELS = {item.id: item for item in model_corpus()}
UPLOAD_ROUTES = ("material", "face-photo", "mask", "lora-file", "lora-training", "training-check", "avatar",
                 "avatar-check")
# Tables the worker writes on its own (heartbeats), left out of the before/after row counts.
VOLATILE_TABLES = {"workers", "alembic_version"}


# --- the studio ---------------------------------------------------------------------------------------------------


class Canary(http.server.BaseHTTPRequestHandler):
    """Where the SVGs point: any request here means the studio fetched what an upload names."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        Canary.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@dataclass
class Studio:
    server: StudioServer
    root: Path
    api: httpx.Client
    admin: httpx.Client
    canary_url: str
    worker_pid: int
    corpus: dict[str, BadFile]
    base: dict = field(default_factory=dict)  # material, asset, conversation, lora made up front
    prompt_jobs: dict[str, str] = field(default_factory=dict)  # text -> id of the generate job that carries it
    blocker: str | None = None

    @property
    def db_path(self) -> Path:
        return self.root / "data" / "studio.sqlite"

    @property
    def files(self) -> Path:
        return self.root / "data" / "files"

    def snapshot(self) -> tuple[dict[str, int], set[str]]:
        """Rows per table and the files of the file store (training's work folder and previews aside)."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30) as db:
            tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            counts = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables if t not in VOLATILE_TABLES}
        files = {str(p.relative_to(self.files)) for p in self.files.rglob("*")
                 if p.is_file() and p.relative_to(self.files).parts[0] not in ("work", "previews")}
        return counts, files

    def row(self, sql: str, *args):
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, args).fetchone()


def _token(root: Path, name: str, role: str) -> str:
    """An API token of a new user, made through the studio's own user store."""
    from storage.db import Database
    from storage.users import UserStore

    db = Database(f"sqlite:///{root / 'data' / 'studio.sqlite'}")
    try:
        store = UserStore(db)
        store.add(name, "a long enough password", role)
        secret, _ = store.create_token(name, "bad-input tests")
        return secret
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def studio(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("bad-input")
    canary = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canary)
    threading.Thread(target=canary.serve_forever, daemon=True).start()
    canary_url = f"http://127.0.0.1:{canary.server_address[1]}/canary.png"
    server = StudioServer(studio_env(root / "data", models_dir), root / "studio.log")
    try:
        server.wait_ready(timeout=150)
        api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60)
        if api.get("/me").status_code == 401:  # sign-in on: act as a member with an API token
            api.headers["authorization"] = f"Bearer {_token(root, 'mallory', 'member')}"
        admin = httpx.Client(base_url=f"{server.url}/api/v1", timeout=60,
                             headers={"authorization": f"Bearer {_token(root, 'root-admin', 'admin')}"})
        children = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) == 1, f"expected one embedded worker, found {children}"
        corpus = {item.id: item for item in image_corpus(canary_url, CORPUS_SIZE)}
        yield Studio(server, root, api, admin, canary_url, int(children[0]), corpus)
        api.close()
        admin.close()
        # The last test has seen the worker finish its jobs: end it (its own process group) at once, rather
        # than wait out its warm shutdown.
        os.killpg(int(children[0]), signal.SIGKILL)
    finally:
        server.stop()
        canary.shutdown()


def wait_job(studio: Studio, job_id: str, timeout: float = 120) -> dict:
    def finished():
        job = studio.api.get(f"/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, timeout, 0.1, f"job {job_id}")


@pytest.fixture(scope="module")
def base(studio):
    """What the routes work on: a material the corpus' size, a finished picture (its prompt matches the search
    "100%_off" only if % and _ were wildcards), a conversation, an uploaded LoRA."""
    api = studio.api
    material = api.post("/materials", files={"file": ("base.png", encode(Image.new("RGB", CORPUS_SIZE, (90, 120, 200)), "PNG"),
                                                       "image/png")}, data={"name": "base material"})
    assert material.status_code == 201, material.text
    job = post_json(api, "/jobs", {"kind": "generate", "params": dict(FAST, prompt="1000 boats offshore", seed=1)})
    assert job.status_code == 202, job.text
    done = wait_job(studio, job.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    lora = api.post("/loras", files={"file": ("base.safetensors", tiny_lora_file(), "application/octet-stream")},
                    data={"name": "base lora"})
    assert lora.status_code == 202, lora.text
    wait_job(studio, lora.json()["job"]["id"])
    chat = post_json(api, "/jobs", {"kind": "chat_turn", "params": {"text": "a lighthouse", "count": 1}})
    assert chat.status_code == 202, chat.text
    api.delete(f"/jobs/{chat.json()['id']}")  # the conversation is what counts, not its picture
    wait_job(studio, chat.json()["id"])  # (it may have started: then it stops at its next step)
    studio.base.update(material=material.json(), asset_id=done["asset_ids"][0], lora_id=lora.json()["lora"]["id"],
                       conversation_id=chat.json()["params"]["conversation_id"])
    return studio.base


@pytest.fixture(scope="module")
def busy_worker(studio, base):
    """A long training job holding the worker (no samples, no checkpoints): jobs queued meanwhile wait."""
    files = [("images", (name, data, "image/png")) for name, data in training_pngs(5)]
    settings = {"steps": 10_000, "sample_every": 0, "checkpoint_every": 10_000}
    response = studio.api.post("/loras/train", files=files, data={"name": "blocker", "settings": json.dumps(settings)})
    assert response.status_code == 202, response.text
    studio.blocker = response.json()["job"]["id"]
    wait_for(lambda: studio.api.get(f"/jobs/{studio.blocker}").json()["state"] == "running", 90, 0.1, "the blocker to run")
    return studio.blocker


# --- helpers ------------------------------------------------------------------------------------------------------------


def post_json(client: httpx.Client, path: str, body, method: str = "POST") -> httpx.Response:
    """JSON as any client may send it: non-ASCII escaped, so lone surrogates ("\\ud800") can be sent too."""
    return client.request(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def message(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else "; ".join(str(item.get("msg", item)) for item in detail)


def assert_answers_json(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url.path}: {response.status_code} " \
                                       f"{response.text[:800]}"
    assert "Traceback" not in response.text and 'File "' not in response.text, response.text[:800]
    if response.status_code != 204:
        assert response.headers["content-type"].startswith("application/json"), response.headers["content-type"]


def assert_refused(response: httpx.Response, *words: str) -> str:
    """A 4xx with a message in words (no traceback) that says ``words``; returns the message."""
    assert_answers_json(response)
    assert 400 <= response.status_code < 500, f"expected a refusal, got {response.status_code}: {response.text[:500]}"
    text = message(response)
    assert len(text) >= 9, text  # words, at the least Starlette's "Not Found"
    for word in words:
        assert word.lower() in text.lower(), f"{word!r} not in {text!r}"
    return text


def png_at(client: httpx.Client, url: str) -> tuple[Image.Image, bytes]:
    response = client.get(url.removeprefix("/api/v1"))
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image, response.content


def send_upload(studio: Studio, route: str, item: BadFile) -> httpx.Response:
    api, file = studio.api, (item.filename, item.data, "application/octet-stream")
    if route in ("material", "face-photo"):
        return api.post("/materials", files={"file": file}, data={"kind": "face" if route == "face-photo" else "product"})
    if route == "mask":
        return api.put(f"/materials/{studio.base['material']['id']}/mask", files={"file": file})
    if route == "lora-file":
        return api.post("/loras", files={"file": file})
    if route == "lora-training":
        return api.post("/loras/train", files=[("images", file)], data={"name": "one picture", "settings": '{"steps": 10}'})
    if route == "training-check":
        return api.post("/loras/check-images", files=[("images", file)])
    if route == "avatar":
        return api.post("/avatars", files=[("photos", file)], data={"name": "one photo", "subject": "a woman"})
    return api.post("/avatars/check-photos", files=[("photos", file)])


# --- 1. every file to every upload route ------------------------------------------------------------------------------

# What a mask of the material's size becomes, from the accepted pictures: (x, y, 0 or 255) probes, or the words
# of the refusal. The palette's blue is dark (its alpha decides, not its brightness); an animation's first frame
# is red, dark, so "no product" (its second frame, green, would be all product).
MASKS = {
    "cmyk-jpeg": [(10, 10, 255), (90, 10, 0)],
    "grey-16bit-png": [(2, 40, 0), (93, 40, 255)],
    "palette-alpha-png": [(5, 5, 0), (90, 5, 255), (5, 75, 255)],
    "rgb-16bit-png": "no product",
    "animated-gif": "no product",
    "animated-webp": "no product",
    "animated-png": "no product",
    "exif-rotated-jpeg": "64×96",
    "png-with-trailing-zip": "128×96",
}


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
@pytest.mark.parametrize("item_id", list(IMAGES))
def test_every_picture_upload_is_refused_clearly_or_converted(studio, base, route, item_id):
    item = studio.corpus[item_id]
    material_id = base["material"]["id"]
    mask_before = studio.row("SELECT mask_hash FROM materials WHERE id = ?", material_id)
    before = studio.snapshot()
    response = send_upload(studio, route, item)
    assert_answers_json(response)

    if route in ("training-check", "avatar-check"):  # checks only: a verdict per picture, nothing stored
        assert response.status_code == 200, response.text
        [verdict] = response.json()
        if item.expect == REFUSE:
            assert not verdict["ok"] and item.reason in verdict["reason"].lower(), verdict
        elif route == "training-check":
            assert verdict["ok"], verdict
            assert (verdict["width"], verdict["height"]) == item.size, verdict
        else:  # accepted pictures are too small to be face photos: said so
            assert not verdict["ok"] and "too small" in verdict["reason"].lower(), verdict
        assert studio.snapshot() == before
        return

    if route in ("lora-training", "avatar"):  # one picture is never enough: refused, with why it is refused
        words = ("usable", item.reason) if item.expect == REFUSE else ("usable",)
        assert_refused(response, *words)
        assert studio.snapshot() == before
        return

    if route == "lora-file":  # no picture is a LoRA
        assert_refused(response, "safetensors" if item.data else "empty")
        assert studio.snapshot() == before
        return

    if route == "mask":
        expected = MASKS.get(item_id)
        if item.expect == REFUSE or isinstance(expected, str):
            text = assert_refused(response)
            # Refused for what it is, or (read from its header, before decoding) for not being the photo's size.
            wanted = [item.reason, f"must be {CORPUS_SIZE[0]}×{CORPUS_SIZE[1]}"] if item.expect == REFUSE else [expected]
            assert any(w.lower() in text.lower() for w in wanted), (wanted, text)
            assert studio.snapshot() == before
            assert studio.row("SELECT mask_hash FROM materials WHERE id = ?", material_id) == mask_before
            return
        assert response.status_code == 200, response.text
        mask, _ = png_at(studio.api, response.json()["mask_url"])
        assert mask.size == CORPUS_SIZE and mask.mode == "L"
        for x, y, value in expected:
            assert mask.getpixel((x, y)) == value, (x, y, mask.getpixel((x, y)), value)
        return

    # Materials and face photos: refused with the reason, or stored converted to PNG.
    if item.expect == REFUSE:
        assert_refused(response, item.reason)
        assert studio.snapshot() == before
        return
    assert response.status_code == 201, response.text
    material = response.json()
    assert (material["width"], material["height"]) == item.size, material
    assert material["kind"] == ("face" if route == "face-photo" else "product")
    stored, raw = png_at(studio.api, material["file_url"])
    assert raw.startswith(b"\x89PNG") and stored.format == "PNG"
    assert stored.size == item.size
    item.check(stored, material["notes"])
    if item.absent:
        assert item.absent not in raw, "bytes after the picture were stored with it"
    # Deleting it takes its row and its file away again.
    assert studio.api.delete(f"/materials/{material['id']}").status_code == 204
    assert studio.snapshot() == before


@pytest.mark.parametrize("item_id", list(MODELS))
def test_every_model_file_that_is_no_safetensors_lora_is_refused_before_storing(studio, base, item_id):
    item = MODELS[item_id]
    before = studio.snapshot()
    response = studio.api.post("/loras", files={"file": (item.filename, item.data, "application/octet-stream")},
                               data={"name": "suspicious"})
    assert_refused(response, item.reason)
    assert studio.snapshot() == before
    assert not Path("/tmp/studio-pwned-by-pickle").exists(), "a pickle was loaded"


@pytest.mark.parametrize("name_id", list(HOSTILE_NAMES))
def test_hostile_file_names_are_only_labels(studio, base, name_id):
    """A file name never becomes a path: the file is stored by its hash, the name is a label without folders
    or control characters (or the upload is refused with a reason)."""
    name = HOSTILE_NAMES[name_id]
    picture = encode(Image.new("RGB", (80, 80), (200, 30, 30)), "PNG")
    before = studio.snapshot()
    # Sent as raw bytes: a client library would escape NUL and line breaks in a file name itself.
    boundary = "----bad-input-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".encode()
            + name.encode("utf-8", "surrogateescape") + b"\"\r\nContent-Type: image/png\r\n\r\n" + picture
            + f"\r\n--{boundary}--\r\n".encode())
    response = studio.api.post("/materials", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_answers_json(response)
    if response.status_code != 201:
        assert_refused(response)
        assert studio.snapshot() == before
        return
    material = response.json()
    label = material["name"]
    assert "/" not in label and "\\" not in label and not any(ord(c) < 32 for c in label), label
    assert len(label) <= 120 and label.strip(".") and ".." not in label, label
    _, files = studio.snapshot()
    added = files - before[1]
    assert len(added) <= 1 and all(p.endswith(".png") for p in added), added  # at most one PNG, in the store
    assert not Path("/etc/passwd.png").exists() and not (studio.root / "x.png").exists()
    assert studio.api.delete(f"/materials/{material['id']}").status_code == 204

    check = studio.api.post("/loras/check-images", content=body.replace(b'name="file"', b'name="images"'),
                            headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert_answers_json(check)
    if check.status_code == 200:
        shown = check.json()[0]["name"]
        assert "/" not in shown and "\\" not in shown and not any(ord(c) < 32 for c in shown), shown


# --- 2. every hostile text to every text field ------------------------------------------------------------------------


@dataclass
class Sent:
    response: httpx.Response
    stored: list[tuple[str, str]] = field(default_factory=list)  # (what the studio kept, what it must be)


def _cancel(studio: Studio, job_id: str) -> None:
    """Cancel the job a text case queued (it waits behind the blocker), so nothing runs for it."""
    assert studio.api.delete(f"/jobs/{job_id}").json()["state"] == "cancelled"


def t_prompt(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, "/jobs", {"kind": "generate", "params": dict(FAST, prompt=text, negative_prompt=text)})
    if r.status_code != 202:
        return Sent(r)
    studio.prompt_jobs[text] = r.json()["id"]  # runs after the blocker; its picture is checked at the end
    params = studio.api.get(f"/jobs/{r.json()['id']}").json()["params"]
    return Sent(r, [(params["prompt"], text), (params["negative_prompt"], text)])


def t_chat(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, "/jobs", {"kind": "chat_turn", "params": {"text": text, "count": 1}})
    if r.status_code != 202:
        return Sent(r)
    _cancel(studio, r.json()["id"])
    conversation = studio.api.get(f"/conversations/{r.json()['params']['conversation_id']}").json()
    return Sent(r, [(conversation["title"], text), (conversation["turns"][0]["text"], text)])


def t_conversation_title(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, f"/conversations/{studio.base['conversation_id']}", {"title": text}, "PATCH")
    return Sent(r, [(r.json().get("title"), text)] if r.status_code == 200 else [])


def t_material_upload(studio: Studio, text: str) -> Sent:
    picture = encode(Image.new("RGB", (72, 72), (20, 160, 90)), "PNG")
    r = studio.api.post("/materials", files={"file": ("p.png", picture, "image/png")}, data={"name": text, "tags": text})
    if r.status_code != 201:
        return Sent(r)
    again = studio.api.get(f"/materials/{r.json()['id']}").json()
    return Sent(r, [(again["name"], text), (again["tags"], [text.lower()])])


def t_material_patch(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, f"/materials/{studio.base['material']['id']}", {"name": text, "tags": [text]}, "PATCH")
    return Sent(r, [(r.json()["name"], text), (r.json()["tags"], [text.lower()])] if r.status_code == 200 else [])


def t_material_search(studio: Studio, text: str) -> Sent:
    return Sent(studio.api.get("/materials", params={"search": text, "tag": text, "kind": text}))


def t_asset_search(studio: Studio, text: str) -> Sent:
    return Sent(studio.api.get("/assets", params={"search": text, "origin": text}))


def t_template_title(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, "/templates", {"asset_id": studio.base["asset_id"], "title": text, "title_zh": text})
    if r.status_code != 201:
        return Sent(r)
    again = studio.api.get(f"/templates/{quote(r.json()['key'])}").json()
    return Sent(r, [(again["title"], text), (again["title_zh"], text)])


def t_template_tags(studio: Studio, text: str) -> Sent:
    """Template tags are lower-case words joined by '-': most of these are refused, with that rule."""
    r = post_json(studio.api, "/templates", {"asset_id": studio.base["asset_id"], "title": "tagged", "tags": [text]})
    return Sent(r, [(r.json()["tags"], r.json()["tags"])] if r.status_code == 201 else [])


def t_template_search(studio: Studio, text: str) -> Sent:
    return Sent(studio.api.get("/templates", params={"search": text, "tag": text}))


def t_lora_upload(studio: Studio, text: str) -> Sent:
    r = studio.api.post("/loras", files={"file": ("x.safetensors", tiny_lora_file(), "application/octet-stream")},
                        data={"name": text})
    if r.status_code != 202:
        return Sent(r)
    _cancel(studio, r.json()["job"]["id"])
    return Sent(r, [(studio.api.get(f"/loras/{r.json()['lora']['id']}").json()["name"], text)])


def t_lora_rename(studio: Studio, text: str) -> Sent:
    r = post_json(studio.api, f"/loras/{studio.base['lora_id']}", {"name": text}, "PATCH")
    return Sent(r, [(r.json()["name"], text)] if r.status_code == 200 else [])


def t_lora_training(studio: Studio, text: str) -> Sent:
    files = [("images", (name, data, "image/png")) for name, data in training_pngs(5)]
    r = studio.api.post("/loras/train", files=files, data={
        "name": text, "trigger": text, "captions": json.dumps({"style-0.png": text}),
        "settings": json.dumps({"steps": 10, "sample_prompt": text})})
    if r.status_code != 202:
        return Sent(r)
    _cancel(studio, r.json()["job"]["id"])
    lora = studio.api.get(f"/loras/{r.json()['lora']['id']}").json()
    return Sent(r, [(lora["name"], text), (lora["trigger"], text), (lora["images"][0]["caption"], text),
                    (lora["settings"]["sample_prompt"], text)])


@functools.cache
def face_pngs() -> tuple[bytes, ...]:
    """Five photos of one person, each big enough (and photo-like enough) for an avatar."""
    return tuple(encode(p, "PNG") for p in person_photos(PERSON_A, 5, seed=31, size=(256, 320)))


def t_avatar(studio: Studio, text: str) -> Sent:
    photos = [("photos", (f"me-{i}.png", data, "image/png")) for i, data in enumerate(face_pngs())]
    r = studio.api.post("/avatars", files=photos, data={"name": text, "subject": f"a woman {text}"})
    if r.status_code != 202:
        return Sent(r)
    _cancel(studio, r.json()["job"]["id"])
    avatar = studio.api.get(f"/avatars/{r.json()['avatar']['id']}").json()
    return Sent(r, [(avatar["name"], text), (avatar["subject"], f"a woman {text}")])


def t_user_name(studio: Studio, text: str) -> Sent:
    return Sent(post_json(studio.admin, "/users", {"name": text, "password": "a long enough password"}))


def t_job_kind(studio: Studio, text: str) -> Sent:
    return Sent(post_json(studio.api, "/jobs", {"kind": text, "params": {"prompt": text}}))


def t_enum_queries(studio: Studio, text: str) -> Sent:
    for path, params in (("/jobs", {"state": text}), ("/styles", {"category": text, "family": text}),
                         ("/avatar-styles", {"category": text}), ("/photo-templates", {"category": text})):
        response = studio.api.get(path, params=params)
        if response.status_code != 200:
            return Sent(response)
        assert response.json() == [], (path, response.json())
    return Sent(studio.api.get("/templates", params={"source": text}))


def t_ids_in_address(studio: Studio, text: str) -> Sent:
    for path in ("assets", "materials", "templates", "jobs", "loras", "avatars", "conversations"):
        response = studio.api.get(f"/{path}/{quote(text, safe='')}")
        if response.status_code != 404:
            return Sent(response)
        assert_refused(response)
    return Sent(response)


def t_product_rerun(studio: Studio, text: str) -> Sent:
    return Sent(post_json(studio.api, f"/assets/{studio.base['asset_id']}/rerun", {"canvas_format": text}))


def t_portrait_edit(studio: Studio, text: str) -> Sent:
    return Sent(post_json(studio.api, f"/portraits/{studio.base['asset_id']}/edit", {"edits": {text: text}}))


# target -> (send, what must happen to legitimate text: "stored" verbatim, "listed" (200), "refused" (4xx)
# or "either", and how the text travels: "json", "form" or "query").
TEXT_TARGETS = {
    "job-prompt": (t_prompt, "stored", "json"),
    "chat-message": (t_chat, "stored", "json"),
    "conversation-title": (t_conversation_title, "stored", "json"),
    "material-name-and-tags": (t_material_upload, "stored", "form"),
    "material-rename": (t_material_patch, "stored", "json"),
    "material-search": (t_material_search, "listed", "query"),
    "asset-search": (t_asset_search, "listed", "query"),
    "template-title": (t_template_title, "stored", "json"),
    "template-tags": (t_template_tags, "either", "json"),
    "template-search": (t_template_search, "listed", "query"),
    "lora-upload-name": (t_lora_upload, "stored", "form"),
    "lora-rename": (t_lora_rename, "stored", "json"),
    "lora-training-texts": (t_lora_training, "stored", "form"),
    "avatar-name-and-subject": (t_avatar, "stored", "form"),
    "user-name": (t_user_name, "refused", "json"),
    "job-kind": (t_job_kind, "refused", "json"),
    "enum-queries": (t_enum_queries, "refused", "query"),
    "ids-in-address": (t_ids_in_address, "refused", "query"),
    "product-rerun-format": (t_product_rerun, "refused", "json"),
    "portrait-edit": (t_portrait_edit, "refused", "json"),
}
TEXT_CASES = [(target, text_id) for target in TEXT_TARGETS for text_id in HOSTILE_TEXTS]
# NUL goes everywhere; a lone surrogate only where JSON can spell it (no form, query or address can).
UNSTORABLE_CASES = [(target, text_id) for target, (_, _, channel) in TEXT_TARGETS.items() for text_id in UNSTORABLE_TEXTS
                    if text_id == "nul-byte" or channel == "json"]


@pytest.mark.parametrize("target,text_id", TEXT_CASES)
def test_hostile_text_is_stored_verbatim_or_refused_clearly(studio, base, busy_worker, target, text_id):
    text = HOSTILE_TEXTS[text_id]
    send, outcome, _ = TEXT_TARGETS[target]
    before = studio.snapshot()
    sent = send(studio, text)
    assert_answers_json(sent.response)
    ok = 200 <= sent.response.status_code < 300
    if outcome == "stored":
        assert ok, f"legitimate text refused: {sent.response.status_code} {sent.response.text[:400]}"
    elif outcome == "listed":
        assert sent.response.status_code == 200 and isinstance(sent.response.json(), list), sent.response.text[:400]
    elif outcome == "refused":
        assert not ok, f"expected a refusal, got {sent.response.status_code}: {sent.response.text[:400]}"
    if ok:
        for kept, expected in sent.stored:
            assert kept == expected, f"stored {kept!r}, sent {expected!r}"
        # Answered as JSON text: the script is data inside a JSON string, never markup of its own.
        assert "<script>" not in sent.response.text or sent.response.headers["content-type"].startswith("application/json")
    else:
        assert_refused(sent.response)
        assert studio.snapshot() == before, "a refused request left rows or files behind"


@pytest.mark.parametrize("target,text_id", UNSTORABLE_CASES)
def test_text_no_database_can_hold_is_refused_before_anything_is_stored(studio, base, busy_worker, target, text_id):
    text = UNSTORABLE_TEXTS[text_id]
    send = TEXT_TARGETS[target][0]
    before = studio.snapshot()
    sent = send(studio, text)
    if target in ("user-name", "job-kind", "enum-queries", "ids-in-address", "product-rerun-format", "portrait-edit"):
        assert_refused(sent.response)  # refused either way; the reason may be the field's own rule
    else:
        assert_refused(sent.response, "U+0000" if text_id == "nul-byte" else "surrogate")
    assert studio.snapshot() == before


# Fields of each job kind that name catalogue entries or rows, sent as lists, objects or huge numbers.
TYPE_CONFUSION = {
    "generate": ["style", "sampler", "stages", "loras", "seed", "width"],
    "img2img": ["style", "keeps", "source_asset_id", "source_material_id"],
    "chat_turn": ["conversation_id", "parent_turn_id", "tweak", "aspect"],
    "product": ["scenes", "canvas_format", "placement", "scene_specs", "material_id"],
    "game_asset": ["asset_type", "style"],
    "identity": ["stylization", "edits", "edit_of", "photos"],
    "avatar_batch": ["styles", "photos"],
    "photo_template": ["templates", "avatar_id"],
    "train_lora": ["lora_id", "rank"],
    "face_check": ["avatar_id"],
}
WRONG_TYPES = [[{}], {"a": [1]}, ["a", "b"], 10**30, 1.5]


@pytest.mark.parametrize("kind", list(TYPE_CONFUSION))
def test_job_parameters_of_the_wrong_type_are_refused_not_crashed_on(studio, base, busy_worker, kind):
    face = studio.api.post("/materials", files={"file": ("face.png", face_pngs()[0], "image/png")}, data={"kind": "face"})
    valid = {"generate": {"prompt": "a cat"}, "img2img": {"prompt": "a cat", "source_material_id": base["material"]["id"]},
             "chat_turn": {"text": "a cat"}, "product": {"material_id": base["material"]["id"], "scenes": ["studio"]},
             "game_asset": {"prompt": "a sword"}, "identity": {"prompt": "a woman", "photos": [face.json()["id"]]},
             "avatar_batch": {"subject": "a woman", "photos": [face.json()["id"]], "styles": "all"},
             "photo_template": {"avatar_id": "none", "templates": "all"}, "train_lora": {"lora_id": base["lora_id"]},
             "face_check": {"avatar_id": "none"}}[kind]
    for key in TYPE_CONFUSION[kind]:
        for value in WRONG_TYPES:
            before = studio.snapshot()
            response = post_json(studio.api, "/jobs", {"kind": kind, "params": dict(valid, **{key: value})})
            assert_answers_json(response)
            if response.status_code == 202:  # a value the kind reads as text or a number: fine, never run
                _cancel(studio, response.json()["id"])
            else:
                assert_refused(response)
                assert studio.snapshot() == before, (key, value)
    studio.api.delete(f"/materials/{face.json()['id']}")


def test_a_20_mb_json_body_is_refused_with_its_size(studio, base, busy_worker):
    before = studio.snapshot()
    big = "A" * 20_000_000
    for path, body, method in (("/jobs", {"kind": "generate", "params": {"prompt": "ok", "padding": big}}, "POST"),
                               (f"/conversations/{studio.base['conversation_id']}", {"title": big}, "PATCH"),
                               (f"/materials/{studio.base['material']['id']}", {"name": "x", "tags": [big]}, "PATCH")):
        response = post_json(studio.api, path, body, method)
        assert response.status_code == 413, response.text[:300]
        assert_refused(response, "MB")
        assert len(response.content) < 2000, "the refusal must not echo the body back"
    assert studio.snapshot() == before


def test_uploads_over_the_job_limit_store_nothing(studio, base, busy_worker):
    """At the most jobs a user may have waiting, a LoRA upload, a LoRA training and an avatar (each of which
    queues a job) are refused up front: no LoRA stuck "checking" for ever, no orphaned pictures."""
    waiting = len(studio.api.get("/jobs", params={"state": ["queued", "running"], "limit": 500}).json())
    fillers = []
    while waiting < 20:  # the studio's default limit of jobs waiting or running at once
        response = post_json(studio.api, "/jobs", {"kind": "generate", "params": dict(FAST, prompt="filler")})
        assert response.status_code == 202, response.text
        fillers.append(response.json()["id"])
        waiting += 1
    try:
        before = studio.snapshot()
        for sent in (t_lora_upload(studio, "over the limit"), t_lora_training(studio, "over the limit"),
                     t_avatar(studio, "over the limit")):
            assert_refused(sent.response, "jobs waiting or running")
            assert sent.response.status_code == 429
        assert studio.snapshot() == before
    finally:
        for job_id in fillers:
            studio.api.delete(f"/jobs/{job_id}")


# --- 3. afterwards: the same worker finishes everything, the database is intact ------------------------------------


def test_afterwards_the_same_worker_finishes_the_queued_jobs_and_a_normal_one(studio, base, busy_worker):
    api = studio.api
    blocker = api.get(f"/jobs/{studio.blocker}").json()
    # Had it ended early, jobs would have run meanwhile and the before/after comparisons would mean less.
    assert blocker["state"] == "running", f"the blocking training ended early: {blocker['state']} {blocker['error']}"
    assert api.delete(f"/jobs/{studio.blocker}").status_code == 200
    assert wait_job(studio, studio.blocker)["state"] == "cancelled"
    # The hostile prompts' pictures carry their prompts verbatim, in the row and in the PNG's parameters.
    assert studio.prompt_jobs, "no prompt job was queued"
    for text, job_id in studio.prompt_jobs.items():
        job = wait_job(studio, job_id)
        assert job["state"] == "succeeded", (text, job["error"])
        asset = api.get(f"/assets/{job['asset_ids'][0]}").json()
        assert asset["prompt"] == text
        _, raw = png_at(api, asset["file_url"])
        assert read_params(raw)["prompt"] == text
        # Found by its own words, literally (quotes, %, _ and all).
        found = [a["id"] for a in api.get("/assets", params={"search": text, "limit": 500}).json()]
        assert asset["id"] in found, text
    # "100%_off" is no pattern: only prompts holding those very characters match ("1000 boats offshore" does not).
    for listed in api.get("/assets", params={"search": HOSTILE_TEXTS["like-wildcards"], "limit": 500}).json():
        assert HOSTILE_TEXTS["like-wildcards"].lower() in listed["prompt"].lower(), listed["prompt"]
    # Materials named with hostile text are found by it.
    for text in HOSTILE_TEXTS.values():
        assert any(m["name"] == text for m in api.get("/materials", params={"search": text}).json()), text

    # The worker that saw all of it is the same process, and a normal job still succeeds.
    assert studio.server.alive()
    children = subprocess.run(["pgrep", "-P", str(studio.server.pid)], capture_output=True, text=True).stdout.split()
    assert children == [str(studio.worker_pid)], f"the worker was replaced: {children} (was {studio.worker_pid})"
    normal = post_json(api, "/jobs", {"kind": "generate", "params": dict(FAST, prompt="a calm lake at dawn", seed=3)})
    assert normal.status_code == 202, normal.text
    done = wait_job(studio, normal.json()["id"])
    assert done["state"] == "succeeded", done["error"]
    health = api.get("/health").json()
    assert health["workers"] and health["queue_depth"] == 0

    # Nothing fetched what the SVGs named; the tables are all there and sound.
    assert Canary.hits == [], Canary.hits
    with sqlite3.connect(f"file:{studio.db_path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"assets", "jobs", "materials", "conversations", "turns", "trained_models", "avatars", "users",
                "user_templates"} <= tables
        assert db.execute("SELECT count(*) FROM assets").fetchone()[0] >= len(studio.prompt_jobs) + 2
    assert not list(studio.files.rglob(".incoming-*")), "a half-written file stayed in the store"
