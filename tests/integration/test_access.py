"""Who may see and change what, against one real studio with sign-in on (tiny profile, embedded worker):
API tokens and the sign-in page; each user's jobs, results, conversations, materials, LoRAs, avatars and
templates (another user gets 404 for every one of them, sees none in a listing, and cannot name them in a
job); Gradio's file route; the admin routes; /me; and the per-user limits (jobs at once, pictures per job,
upload size, storage quota).

Users are made with ``python app.py users`` before the studio starts, as an operator would: alice, bob and
carol (members; carol is the one who runs into the limits), dave (a member disabled and enabled from the
command line while the studio runs) and root (an admin)."""

from __future__ import annotations

import hashlib
import html
import http.client
import io
import re
import shutil
import subprocess
import sys
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from itsdangerous import URLSafeTimedSerializer
from PIL import Image
from safetensors.numpy import save as save_safetensors

from engine.product.scenes import load_scenes
from storage.loras import safetensors_keys
from tests.support import ROOT, StudioServer, studio_env, wait_for
from tests.support_faces import PERSON_A, person_photos

pytestmark = pytest.mark.integration

PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22", "carol": "carol-password-333",
             "dave": "dave-password-4444", "root": "root-password-55555"}
ADMINS = {"root"}
MAX_QUEUED_JOBS, MAX_IMAGES_PER_JOB, MAX_UPLOAD_MB, QUOTA_MB = 3, 4, 1, 4
FAST = {"steps": 2, "width": 64, "height": 64}
NOT_SIGNED_IN = "Sign in first"
WORD = f"harbour{uuid.uuid4().hex[:6]}"  # in alice's prompts only


@dataclass
class Account:
    name: str
    password: str
    token: str
    http: httpx.Client  # the REST API under /api/v1 with the user's token


@dataclass
class Studio:
    server: StudioServer
    env: dict
    data_dir: Path
    users: dict[str, Account]

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def files_root(self) -> Path:
        return (self.data_dir / "files").resolve()

    def __getitem__(self, name: str) -> Account:
        return self.users[name]

    def anonymous(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def browser(self, name: str) -> httpx.Client:
        """A client signed in through the sign-in page, as a browser is: it holds the session cookie."""
        client = self.anonymous()
        response = client.post("/login", data={"username": name, "password": PASSWORDS[name], "next": "/"})
        assert response.status_code == 303, response.text
        assert client.cookies.get("studio_session")
        return client


def users_command(env: dict, *args: str, stdin: str | None = None) -> str:
    return finished(start_users_command(env, *args, stdin=stdin), stdin)


def start_users_command(env: dict, *args: str, stdin: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "users", *args], env=env, cwd=env["STUDIO_DATA_DIR"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, stdin: str | None = None) -> str:
    out, err = process.communicate(stdin, timeout=120)
    assert process.returncode == 0, err
    return out


def new_token(env: dict, name: str, token_name: str = "tests") -> str:
    return users_command(env, "token", name, "--token-name", token_name).strip().splitlines()[-1]


def add_users(env: dict) -> None:
    """Each user added with ``python app.py users add``: the first command makes the database, the others
    run side by side."""
    def add(name: str) -> subprocess.Popen:
        return start_users_command(env, "add", name, "--role", "admin" if name in ADMINS else "member", "--password-stdin")

    first, *others = PASSWORDS
    assert finished(add(first), PASSWORDS[first] + "\n") == f"added {first} (member)\n"
    adding = {name: add(name) for name in others}
    for name, process in adding.items():
        assert finished(process, PASSWORDS[name] + "\n") == f"added {name} ({'admin' if name in ADMINS else 'member'})\n"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, models_dir):
    data_dir = tmp_path_factory.mktemp("access") / "data"
    data_dir.mkdir()
    env = studio_env(data_dir, models_dir, STUDIO_AUTH="on", STUDIO_MAX_QUEUED_JOBS=str(MAX_QUEUED_JOBS),
                     STUDIO_MAX_IMAGES_PER_JOB=str(MAX_IMAGES_PER_JOB), STUDIO_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB),
                     STUDIO_QUOTA_MB=str(QUOTA_MB))
    add_users(env)
    server = StudioServer(env, data_dir / "studio.log")
    try:
        # An API token each, made while the studio starts (it reads them from the database on each request).
        making = {name: start_users_command(env, "token", name, "--token-name", "tests") for name in PASSWORDS}
        tokens = {name: finished(process).strip().splitlines()[-1] for name, process in making.items()}
        server.wait_ready(timeout=180)
        users = {name: Account(name, PASSWORDS[name], token, httpx.Client(
            base_url=f"{server.url}/api/v1", timeout=30, headers={"Authorization": f"Bearer {token}"}))
            for name, token in tokens.items()}
        yield Studio(server, env, data_dir, users)
        for account in users.values():
            account.http.close()
    finally:
        server.stop()


# --- helpers ------------------------------------------------------------------------------------------------


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(side: int, seed: int = 0) -> bytes:
    """A picture PNG cannot compress: its file is about 3 bytes a pixel."""
    return png(Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)))


def submit(user: Account, kind: str, params: dict) -> httpx.Response:
    return user.http.post("/jobs", json={"kind": kind, "params": params})


def wait_job(user: Account, job_id: str, timeout: float = 180) -> dict:
    def finished():
        job = user.http.get(f"/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, timeout, 0.2, f"job {job_id}")


def succeeded(user: Account, job_id: str, timeout: float = 180) -> dict:
    job = wait_job(user, job_id, timeout)
    assert job["state"] == "succeeded", f"job ended {job['state']}: {job['error']}"
    return job


def job_ids(user: Account) -> list[str]:
    response = user.http.get("/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()]


def detail(response: httpx.Response) -> str:
    return str(response.json().get("detail"))


def tiny_lora(models_dir: Path, rank: int = 2) -> bytes:
    """A LoRA for the tiny profile's UNet: one attention projection, in peft's layout (as trained here)."""
    header = safetensors_keys((models_dir / "tiny" / "base" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes())
    layer, info = next((k, v) for k, v in sorted(header.items()) if k.endswith("attn1.to_q.weight"))
    out_features, in_features = info["shape"]
    rng = np.random.default_rng(7)
    stem = "unet." + layer.removesuffix(".weight")
    return save_safetensors({f"{stem}.lora_A.weight": rng.normal(0, 0.1, (rank, in_features)).astype(np.float32),
                             f"{stem}.lora_B.weight": rng.normal(0, 0.1, (out_features, rank)).astype(np.float32)})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- alice's work ---------------------------------------------------------------------------------------------


@dataclass
class Work:
    job: str
    assets: list[str]  # two results of a generate job
    asset_file: bytes  # the first one's picture
    conversation: str
    chat_job: str
    material: str
    lora: str
    avatar: str
    photo: str  # one of the avatar's photos, with a face crop
    template: str  # a private template saved from the second result


@pytest.fixture(scope="module")
def alice_work(studio, models_dir) -> Work:
    """One of each thing a user owns, made by alice through the REST API; the jobs are submitted together
    and waited for together."""
    alice = studio["alice"]
    generated = submit(alice, "generate", dict(FAST, prompt=f"a {WORD} at dawn", count=2, seed=11))
    assert generated.status_code == 202, generated.text
    chat = submit(alice, "chat_turn", {"text": f"a {WORD} lighthouse", "count": 1})
    assert chat.status_code == 202, chat.text

    material = alice.http.post("/materials", files={"file": ("bottle.png", png(Image.new("RGB", (96, 64), "red")), "image/png")},
                               data={"name": f"{WORD} bottle", "kind": "product"})
    assert material.status_code == 201, material.text
    material_id = material.json()["id"]
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (20, 10, 70, 50))
    masked = alice.http.put(f"/materials/{material_id}/mask", files={"file": ("mask.png", png(mask), "image/png")})
    assert masked.status_code == 200 and masked.json()["mask_url"], masked.text

    lora = alice.http.post("/loras", files={"file": ("alice-style.safetensors", tiny_lora(models_dir), "application/octet-stream")},
                           data={"name": f"{WORD} style"})
    assert lora.status_code == 202, lora.text

    # Three jobs waiting or running are alice's limit too: the avatar's check waits for room.
    job = succeeded(alice, generated.json()["id"])
    photos = [("photos", (f"me-{i}.png", png(photo), "image/png"))
              for i, photo in enumerate(person_photos(PERSON_A, 5, seed=31, size=(256, 320)))]
    avatar = alice.http.post("/avatars", files=photos, data={"name": f"{WORD} me", "subject": "a woman"})
    assert avatar.status_code == 202, (avatar.text, alice.http.get("/jobs").json())
    chat_job = succeeded(alice, chat.json()["id"])
    succeeded(alice, lora.json()["job"]["id"])
    succeeded(alice, avatar.json()["job"]["id"])
    lora_id, avatar_id = lora.json()["lora"]["id"], avatar.json()["avatar"]["id"]
    assert alice.http.get(f"/loras/{lora_id}").json()["state"] == "ready"
    checked = alice.http.get(f"/avatars/{avatar_id}").json()
    photo = next(p for p in checked["photos"] if p["verdict"] == "usable")

    assert len(job["asset_ids"]) == 2
    template = alice.http.post("/templates", json={"asset_id": job["asset_ids"][1], "title": f"{WORD} template"})
    assert template.status_code == 201, template.text
    assert template.json()["shared"] is False
    asset_file = alice.http.get(f"/assets/{job['asset_ids'][0]}/file")
    assert asset_file.status_code == 200
    return Work(job=job["id"], assets=job["asset_ids"], asset_file=asset_file.content,
                conversation=chat_job["params"]["conversation_id"], chat_job=chat_job["id"], material=material_id,
                lora=lora_id, avatar=avatar_id, photo=photo["id"], template=template.json()["key"])


def refused(user: Account, method: str, path: str, **kwargs) -> None:
    """Another user's thing is as missing as no thing: 404, and the answer names nothing of it."""
    response = user.http.request(method, path, **kwargs)
    assert response.status_code == 404, f"{method} {path}: {response.status_code} {response.text[:300]}"
    assert WORD not in response.text


def refused_job(user: Account, kind: str, params: dict, names: str) -> None:
    """A job naming another user's thing is refused (422, saying which is not theirs) and no job row is made."""
    before = job_ids(user)
    response = submit(user, kind, params)
    assert response.status_code == 422, f"{kind}: {response.status_code} {response.text[:300]}"
    assert names in detail(response), detail(response)
    assert WORD not in response.text
    assert job_ids(user) == before


# --- signing in: tokens ---------------------------------------------------------------------------------------


def openapi_routes(studio) -> list[tuple[str, str]]:
    with studio.anonymous() as client:
        schema = client.get("/api/v1/openapi.json").json()
    return [(method.upper(), path) for path, methods in schema["paths"].items() for method in methods]


def test_without_a_token_every_route_but_health_is_401_with_how_to_sign_in(studio):
    routes = openapi_routes(studio)
    assert len(routes) > 40
    with studio.anonymous() as client:
        for method, path in routes:
            concrete = path.replace("{", "").replace("}", "")  # /assets/asset_id: a made-up id
            response = client.request(method, concrete)
            if path == "/api/v1/health":
                assert response.status_code == 200 and response.json()["workers"]
                continue
            assert response.status_code == 401, f"{method} {path}: {response.status_code} {response.text[:200]}"
            assert NOT_SIGNED_IN in detail(response) and "users token" in detail(response)
            assert response.headers["www-authenticate"] == "Bearer"
        # Gradio's own routes ask for a signed-in user too.
        for path in ("/config", "/gradio_api/info", "/gradio_api/openapi.json", "/gradio_api/queue/data"):
            assert client.get(path).status_code == 401, path
        upload = client.post("/gradio_api/upload", files={"files": ("x.png", png(Image.new("RGB", (8, 8))), "image/png")})
        assert upload.status_code == 401


def test_a_wrong_or_malformed_token_is_401(studio):
    token = studio["alice"].token
    with studio.anonymous() as client:
        for header in (f"Bearer {token}x", f"Bearer {token[:-1]}", "Bearer studio_", f"Bearer {token.removeprefix('studio_')}",
                       f"Bearer {sha256(token.encode())}", "Bearer", f"Basic {token}", token):
            response = client.get("/api/v1/me", headers={"Authorization": header})
            assert response.status_code == 401, header
            assert NOT_SIGNED_IN in detail(response)
        assert client.get("/api/v1/me", headers={"Authorization": f"bearer {token}"}).json()["name"] == "alice"


def test_a_revoked_token_is_401_at_once_and_the_users_other_tokens_go_on(studio):
    second = new_token(studio.env, "dave", "laptop")
    headers = {"Authorization": f"Bearer {second}"}
    with studio.anonymous() as client:
        assert client.get("/api/v1/me", headers=headers).json()["name"] == "dave"
        token_id = next(line.split()[0] for line in users_command(studio.env, "tokens", "dave").splitlines() if "laptop" in line)
        assert users_command(studio.env, "revoke", "dave", token_id) == f"token {token_id} revoked\n"
        response = client.get("/api/v1/me", headers=headers)
        assert response.status_code == 401 and NOT_SIGNED_IN in detail(response)
    assert studio["dave"].http.get("/me").json()["name"] == "dave"


def test_a_user_disabled_from_the_command_line_is_401_at_once_and_back_when_enabled(studio):
    dave = studio["dave"]
    session = studio.browser("dave")
    try:
        assert dave.http.get("/me").status_code == 200
        assert session.get("/api/v1/me").json()["name"] == "dave"
        users_command(studio.env, "disable", "dave")
        for client, path in ((dave.http, "/me"), (dave.http, "/jobs"), (session, "/api/v1/me")):
            response = client.get(path)
            assert response.status_code == 401, path
            assert NOT_SIGNED_IN in detail(response)
        assert session.get("/", headers={"accept": "text/html"}).status_code == 303  # back to the sign-in page
        with studio.anonymous() as client:
            page = client.post("/login", data={"username": "dave", "password": PASSWORDS["dave"]})
            assert page.status_code == 401 and "the account is disabled" in page.text
    finally:
        users_command(studio.env, "enable", "dave")
    assert dave.http.get("/me").json()["name"] == "dave"
    assert session.get("/api/v1/me").json()["name"] == "dave"
    session.close()


# --- signing in: the browser's page and cookie --------------------------------------------------------------


def test_the_app_sends_a_browser_to_the_sign_in_page_and_serves_it_once_signed_in(studio):
    with studio.anonymous() as client:
        redirect = client.get("/", headers={"accept": "text/html"})
        assert redirect.status_code == 303 and redirect.headers["location"] == "/login?next=/"
        page = client.get("/login")
        assert page.status_code == 200 and 'name="password"' in page.text and 'action="/login"' in page.text
        assert client.get("/config").status_code == 401

        wrong = client.post("/login", data={"username": "alice", "password": "not her password", "next": "/"})
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text and 'value="alice"' in wrong.text
        assert "studio_session" not in client.cookies
        unknown = client.post("/login", data={"username": "<b>nobody</b>", "password": "whatever1"})
        assert unknown.status_code == 401 and "&lt;b&gt;nobody&lt;/b&gt;" in unknown.text and "<b>nobody" not in unknown.text

        right = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"], "next": "/"})
        assert right.status_code == 303 and right.headers["location"] == "/"
        cookie = right.headers["set-cookie"].lower()
        assert "studio_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert PASSWORDS["alice"] not in right.headers["set-cookie"]

        app = client.get("/", headers={"accept": "text/html"})
        assert app.status_code == 200 and "<html" in app.text.lower()
        config = client.get("/config")
        assert config.status_code == 200 and config.json()["components"]
        assert client.get("/api/v1/me").json()["name"] == "alice"  # the REST API takes the session too
        assert client.get("/login").status_code == 303  # signed in already

        out = client.get("/logout")
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert "studio_session" not in client.cookies
        assert client.get("/", headers={"accept": "text/html"}).status_code == 303
        assert client.get("/config").status_code == 401
        assert client.get("/api/v1/me").status_code == 401


def test_a_forged_or_foreign_cookie_is_no_session(studio):
    with closing(studio.browser("alice")) as client:
        cookie = client.cookies["studio_session"]
    alice_id = studio["alice"].http.get("/me").json()["id"]
    # Signed with another studio's key (every studio makes its own unless STUDIO_SECRET_KEY is given).
    foreign = URLSafeTimedSerializer("another studio's key", salt="studio-session").dumps(alice_id)
    with studio.anonymous() as client:
        for forged in (cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), "alice", alice_id, foreign,
                       cookie.split(".")[0]):
            response = client.get("/api/v1/me", cookies={"studio_session": forged})
            assert response.status_code == 401, forged
        assert client.get("/api/v1/me", cookies={"studio_session": cookie}).json()["name"] == "alice"


def on_site(studio, location: str) -> bool:
    """Whether a browser following this Location stays on the studio (browsers drop tabs and newlines from URLs,
    and read a backslash as a slash)."""
    followed = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/")
    return httpx.URL(studio.url + "/login").join(followed).host == httpx.URL(studio.url).host


@pytest.mark.parametrize("target", ["//evil.com", "http://evil.com", "https://evil.com/x", "/\\evil.com", "\\\\evil.com",
                                    "evil.com", "javascript:alert(1)", "///evil.com", "/\t/evil.com", "/%2F/evil.com",
                                    "/\r\n/evil.com", "//evil.com/%2F.."])
def test_signing_in_never_redirects_off_site(studio, target):
    with studio.anonymous() as client:
        page = client.get("/login", params={"next": target})
        kept = re.search(r'name="next" value="([^"]*)"', page.text)  # a path on this site, posted back with the form
        assert page.status_code == 200 and kept and re.match(r"/(?![/\\])", html.unescape(kept.group(1))), kept
        response = client.post("/login", data={"username": "bob", "password": PASSWORDS["bob"], "next": target})
        assert response.status_code == 303 and on_site(studio, response.headers["location"]), response.headers["location"]
        assert "\n" not in response.headers["location"] and "set-cookie" in response.headers
        again = client.get("/login", params={"next": target})  # signed in: straight on
        assert again.status_code == 303 and on_site(studio, again.headers["location"]), again.headers["location"]


def test_signing_in_goes_on_to_a_page_of_the_studio(studio):
    with studio.anonymous() as client:
        response = client.post("/login", data={"username": "bob", "password": PASSWORDS["bob"], "next": "/?view=assets"})
        assert response.status_code == 303 and response.headers["location"] == "/?view=assets"


# --- one user's things are not another's ----------------------------------------------------------------------


def test_jobs(studio, alice_work):
    bob, job = studio["bob"], alice_work.job
    for method in ("GET", "DELETE"):
        refused(bob, method, f"/jobs/{job}")
        refused(bob, method, f"/jobs/{alice_work.chat_job}")
    assert job not in job_ids(bob) and alice_work.chat_job not in job_ids(bob)
    running = bob.http.get("/jobs", params=[("state", "queued"), ("state", "running"), ("state", "succeeded")])
    assert job not in [j["id"] for j in running.json()]


def test_results(studio, alice_work):
    bob, asset = studio["bob"], alice_work.assets[0]
    refused(bob, "GET", f"/assets/{asset}")
    refused(bob, "GET", f"/assets/{asset}/file")
    refused(bob, "GET", f"/assets/{asset}/layers")
    refused(bob, "PATCH", f"/assets/{asset}", json={"favourite": True})
    refused(bob, "DELETE", f"/assets/{asset}")
    refused(bob, "POST", f"/assets/{asset}/rerun", json={"canvas_format": "9:16"})
    for params in ({}, {"search": WORD}, {"include_stages": "true"}, {"origin": "api"}, {"limit": 500}):
        listed = bob.http.get("/assets", params=params)
        assert listed.status_code == 200 and not set(alice_work.assets) & {a["id"] for a in listed.json()}, params
    refused_job(bob, "img2img", dict(FAST, source_asset_id=asset, prompt="a boat"), asset)
    edit = bob.http.post(f"/portraits/{asset}/edit", json={"edits": {"glasses": "round"}})
    assert edit.status_code in (404, 422) and WORD not in edit.text
    saved = bob.http.post("/templates", json={"asset_id": asset, "title": "stolen"})
    assert saved.status_code in (404, 422) and asset in detail(saved) and WORD not in saved.text


def test_conversations(studio, alice_work):
    bob, conversation = studio["bob"], alice_work.conversation
    refused(bob, "GET", f"/conversations/{conversation}")
    refused(bob, "PATCH", f"/conversations/{conversation}", json={"title": "mine now"})
    refused(bob, "POST", f"/conversations/{conversation}/undo")
    refused(bob, "DELETE", f"/conversations/{conversation}")
    assert conversation not in [c["id"] for c in bob.http.get("/conversations").json()]
    refused_job(bob, "chat_turn", {"text": "make it blue", "conversation_id": conversation, "count": 1}, conversation)


def test_materials(studio, alice_work):
    bob, material = studio["bob"], alice_work.material
    refused(bob, "GET", f"/materials/{material}")
    refused(bob, "GET", f"/materials/{material}/file")
    refused(bob, "GET", f"/materials/{material}/mask")
    refused(bob, "PATCH", f"/materials/{material}", json={"name": "mine now"})
    refused(bob, "PUT", f"/materials/{material}/mask", files={"file": ("mask.png", png(Image.new("L", (96, 64), 255)), "image/png")})
    refused(bob, "DELETE", f"/materials/{material}")
    for params in ({}, {"search": WORD}, {"kind": "product"}):
        assert material not in [m["id"] for m in bob.http.get("/materials", params=params).json()], params
    refused_job(bob, "img2img", dict(FAST, source_material_id=material, prompt="a boat"), material)
    refused_job(bob, "cutout", {"material_id": material}, material)
    refused_job(bob, "product", dict(FAST, material_id=material, scenes=list(load_scenes())[:1]), material)


def test_loras(studio, alice_work):
    bob, lora = studio["bob"], alice_work.lora
    refused(bob, "GET", f"/loras/{lora}")
    refused(bob, "GET", f"/loras/{lora}/file")
    refused(bob, "PATCH", f"/loras/{lora}", json={"name": "mine now"})
    refused(bob, "DELETE", f"/loras/{lora}")
    for params in ({}, {"usable": "true"}):
        assert lora not in [item["id"] for item in bob.http.get("/loras", params=params).json()], params
    refused_job(bob, "generate", dict(FAST, prompt="a boat", loras=[{"lora_id": lora, "weight": 1.0}]), lora)
    refused_job(bob, "lora_check", {"lora_id": lora}, lora)
    refused_job(bob, "train_lora", {"lora_id": lora, "steps": 10}, lora)


def test_avatars(studio, alice_work):
    bob, avatar = studio["bob"], alice_work.avatar
    refused(bob, "GET", f"/avatars/{avatar}")
    refused(bob, "GET", f"/avatars/{avatar}/photos/{alice_work.photo}/crop")
    refused(bob, "POST", f"/avatars/{avatar}/train", json={"steps": 2})
    refused(bob, "DELETE", f"/avatars/{avatar}")
    assert avatar not in [a["id"] for a in bob.http.get("/avatars").json()]
    refused_job(bob, "face_check", {"avatar_id": avatar}, avatar)
    refused_job(bob, "photo_template", {"avatar_id": avatar, "templates": ["linkedin"]}, avatar)


def test_face_photos(studio, alice_work):
    """A face photo in alice's library cannot be named in bob's portrait job."""
    alice, bob = studio["alice"], studio["bob"]
    face = alice.http.post("/materials", files={"file": ("face.png", png(person_photos(PERSON_A, 1, seed=41, size=(256, 320))[0]),
                                                         "image/png")}, data={"kind": "face", "name": f"{WORD} face"})
    assert face.status_code == 201, face.text
    photo = face.json()["id"]
    refused_job(bob, "identity", dict(FAST, prompt="a woman on a beach", photos=[photo], count=1), photo)


def test_templates(studio, alice_work):
    alice, bob, key = studio["alice"], studio["bob"], alice_work.template
    refused(bob, "GET", f"/templates/{key}")
    refused(bob, "GET", f"/templates/{key}/preview")
    refused(bob, "PATCH", f"/templates/{key}", json={"shared": True})
    refused(bob, "DELETE", f"/templates/{key}")
    for source in ("all", "mine", "shared"):
        assert key not in [t["key"] for t in bob.http.get("/templates", params={"source": source}).json()], source
    assert alice.http.get(f"/templates/{key}").json()["shared"] is False  # bob's PATCH did not share it

    # Shared, it is shown to bob, still not his to change.
    assert alice.http.patch(f"/templates/{key}", json={"shared": True}).json()["shared"] is True
    try:
        shared = {t["key"]: t for t in bob.http.get("/templates", params={"source": "shared"}).json()}
        assert key in shared and shared[key]["source"] == "shared"
        assert bob.http.get(f"/templates/{key}/preview").status_code == 200
        refused(bob, "PATCH", f"/templates/{key}", json={"shared": False})
        refused(bob, "DELETE", f"/templates/{key}")
    finally:
        assert alice.http.patch(f"/templates/{key}", json={"shared": False}).json()["shared"] is False
    refused(bob, "GET", f"/templates/{key}")


def test_alice_still_has_everything_after_bobs_attempts(studio, alice_work):
    alice = studio["alice"]
    job = alice.http.get(f"/jobs/{alice_work.job}").json()
    assert job["state"] == "succeeded" and job["asset_ids"] == alice_work.assets
    for asset in alice_work.assets:
        got = alice.http.get(f"/assets/{asset}")
        assert got.status_code == 200 and got.json()["favourite"] is False
    assert alice.http.get(f"/assets/{alice_work.assets[0]}/file").content == alice_work.asset_file
    assert set(alice_work.assets) <= {a["id"] for a in alice.http.get("/assets", params={"search": WORD}).json()}
    conversation = alice.http.get(f"/conversations/{alice_work.conversation}").json()
    assert WORD in conversation["title"] and len(conversation["path"]) == 1
    material = alice.http.get(f"/materials/{alice_work.material}").json()
    assert material["name"] == f"{WORD} bottle" and material["mask_url"]
    for path in (f"/materials/{alice_work.material}/file", f"/materials/{alice_work.material}/mask",
                 f"/loras/{alice_work.lora}/file", f"/templates/{alice_work.template}/preview",
                 f"/avatars/{alice_work.avatar}/photos/{alice_work.photo}/crop"):
        response = alice.http.get(path)
        assert response.status_code == 200 and response.content, path
    mask = Image.open(io.BytesIO(alice.http.get(f"/materials/{alice_work.material}/mask").content))
    assert mask.getextrema()[0] == 0  # not bob's all-white mask
    lora = alice.http.get(f"/loras/{alice_work.lora}").json()
    assert lora["name"] == f"{WORD} style" and lora["state"] == "ready"
    avatar = alice.http.get(f"/avatars/{alice_work.avatar}").json()
    assert avatar["name"] == f"{WORD} me" and avatar["usable_photos"] == 5
    template = alice.http.get(f"/templates/{alice_work.template}").json()
    assert template["title"] == f"{WORD} template" and template["shared"] is False


# --- Gradio's file route ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browsers(studio):
    """alice and bob signed in on the sign-in page, each holding their session cookie."""
    clients = {name: studio.browser(name) for name in ("alice", "bob")}
    yield clients
    for client in clients.values():
        client.close()


def store_path(studio, digest: str, extension: str = "png") -> Path:
    return studio.files_root / digest[:2] / digest[2:4] / f"{digest}.{extension}"


def test_gradio_serves_a_stored_file_to_its_owner_only(studio, alice_work, browsers):
    digest = sha256(alice_work.asset_file)
    path = store_path(studio, digest)
    assert path.read_bytes() == alice_work.asset_file
    # In Gradio's cache, where it copies the files it shows, under a folder of its own.
    cached = studio.data_dir / "gradio-tmp" / uuid.uuid4().hex / f"{digest}.png"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(path, cached)
    alice, bob = browsers["alice"], browsers["bob"]
    with studio.anonymous() as nobody:
        for where in (path, cached):
            for route in (f"/gradio_api/file={where}", f"/gradio_api/file/{where}"):
                served = alice.get(route)
                assert served.status_code == 200 and served.content == alice_work.asset_file, route
                assert bob.get(route).status_code == 404, route
                assert nobody.get(route).status_code in (401, 404), route
                headers = {"Authorization": f"Bearer {studio['bob'].token}"}
                assert nobody.get(route, headers=headers).status_code == 404, route
                headers = {"Authorization": f"Bearer {studio['alice'].token}"}
                assert nobody.get(route, headers=headers).status_code == 200, route


@pytest.mark.parametrize("suffix", ["/", "/.", "//", "/x/..", "/%2e", "/./", "/x/../", "/%3F/..", "/%23/.."])
def test_gradio_serves_no_stored_file_to_another_user_by_a_path_spelled_differently(studio, alice_work, browsers, suffix):
    """Gradio normalises the path it is given (``os.path.abspath``): a trailing slash or a dot segment names
    the same file, which bob must not get all the same."""
    path = store_path(studio, sha256(alice_work.asset_file))
    relative = path.relative_to(studio.data_dir.resolve())  # the studio runs in its data folder
    routes = [f"/gradio_api/file={path}{suffix}", f"/gradio_api/file={str(path).replace('/files/', '/files//./')}{suffix}",
              f"/gradio_api/file/{path}{suffix}", f"/gradio_api/file=%3F/../{relative}{suffix}"]
    for route in routes:
        served = send_as_written(browsers["alice"], route)
        assert served.status_code == 200 and served.content == alice_work.asset_file, route
        assert send_as_written(browsers["bob"], route).status_code == 404, route


def send_as_written(client: httpx.Client, route: str) -> httpx.Response:
    """GET the route exactly as written (no dot segments removed, no escapes undone), with the client's cookies."""
    connection = http.client.HTTPConnection(client.base_url.host, client.base_url.port, timeout=30)
    try:
        cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        connection.request("GET", route, headers={"Cookie": cookies} if cookies else {})
        answer = connection.getresponse()
        return httpx.Response(answer.status, content=answer.read())
    finally:
        connection.close()


# --- admin routes ----------------------------------------------------------------------------------------------


def test_only_an_admin_manages_users(studio):
    alice, root, bob = studio["alice"], studio["root"], studio["bob"]
    for method, path, body in (("GET", "/users", None), ("POST", "/users", {"name": "mallory", "password": "mallory-pass-1"}),
                               ("PATCH", "/users/bob", {"disabled": True}), ("PATCH", "/users/alice", {"password": "taken-over-1"})):
        response = alice.http.request(method, path, json=body)
        assert response.status_code == 403 and "Only an admin" in detail(response), (method, path)
    assert bob.http.get("/me").status_code == 200  # alice could not disable him
    assert "mallory" not in [u["name"] for u in root.http.get("/users").json()]

    listed = {u["name"]: u for u in root.http.get("/users").json()}
    assert set(PASSWORDS) <= set(listed)
    assert listed["root"]["role"] == "admin" and listed["alice"]["role"] == "member"
    assert all("password" not in key for user in listed.values() for key in user)

    name = f"erin{uuid.uuid4().hex[:4]}"
    created = root.http.post("/users", json={"name": name, "password": "erin-password-1"})
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["role"], created.json()["disabled"]) == (name, "member", False)
    assert root.http.post("/users", json={"name": name, "password": "erin-password-2"}).status_code == 422
    assert root.http.post("/users", json={"name": "bad name", "password": "erin-password-2"}).status_code == 422
    assert root.http.post("/users", json={"name": "short", "password": "short"}).status_code == 422
    assert root.http.post("/users", json={"name": "boss", "password": "boss-password", "role": "owner"}).status_code == 422
    assert root.http.patch("/users/ghost", json={"disabled": True}).status_code == 404
    with studio.anonymous() as client:
        signed_in = client.post("/login", data={"username": name, "password": "erin-password-1"})
        assert signed_in.status_code == 303
        assert client.get("/api/v1/me").json()["name"] == name

    try:
        disabled = root.http.patch("/users/bob", json={"disabled": True})
        assert disabled.status_code == 200 and disabled.json()["disabled"] is True
        response = bob.http.get("/me")
        assert response.status_code == 401 and NOT_SIGNED_IN in detail(response)
        assert submit(bob, "generate", dict(FAST, prompt="a boat")).status_code == 401
    finally:
        assert root.http.patch("/users/bob", json={"disabled": False}).json()["disabled"] is False
    assert bob.http.get("/me").json()["name"] == "bob"


# --- /me -------------------------------------------------------------------------------------------------------


def test_me_shows_the_user_their_limits_and_storage_used_growing_with_a_job(studio):
    bob = studio["bob"]
    me = bob.http.get("/me").json()
    assert (me["name"], me["role"], me["disabled"], me["can_sign_in"]) == ("bob", "member", False, True)
    assert me["limits"] == {"max_queued_jobs": MAX_QUEUED_JOBS, "max_images_per_job": MAX_IMAGES_PER_JOB,
                            "max_upload_bytes": MAX_UPLOAD_MB * 1_000_000, "quota_bytes": QUOTA_MB * 1_000_000}
    assert studio["root"].http.get("/me").json()["role"] == "admin"
    before = me["storage_used_bytes"]
    job = succeeded(bob, submit(bob, "generate", dict(FAST, prompt="a boat", count=2)).json()["id"])
    sizes = [len(bob.http.get(f"/assets/{asset}/file").content) for asset in job["asset_ids"]]
    assert bob.http.get("/me").json()["storage_used_bytes"] == before + sum(sizes)


# --- limits ----------------------------------------------------------------------------------------------------


SLOW = {"prompt": "a slow boat", "steps": 150, "width": 256, "height": 256, "count": MAX_IMAGES_PER_JOB}


def test_too_many_jobs_at_once_is_429_and_makes_no_job(studio):
    carol, bob = studio["carol"], studio["bob"]
    accepted = []
    try:
        for _ in range(MAX_QUEUED_JOBS):
            response = submit(carol, "generate", SLOW)
            assert response.status_code == 202, response.text
            accepted.append(response.json()["id"])
        before = job_ids(carol)
        for _ in range(2):
            response = submit(carol, "generate", dict(FAST, prompt="one more"))
            assert response.status_code == 429, response.text
            assert "waiting or running" in detail(response) and str(MAX_QUEUED_JOBS) in detail(response)
        assert job_ids(carol) == before
        other = submit(bob, "generate", dict(FAST, prompt="bob is not held up"))  # another user's limit is his own
        assert other.status_code == 202, other.text
        accepted_by_bob = other.json()["id"]
    finally:
        for job in accepted:
            carol.http.delete(f"/jobs/{job}")
    assert [wait_job(carol, job, 60)["state"] for job in accepted] == ["cancelled"] * MAX_QUEUED_JOBS
    assert submit(carol, "generate", dict(FAST, prompt="room again")).status_code == 202  # cancelled ones leave room
    succeeded(bob, accepted_by_bob)


def test_too_many_pictures_in_one_job_is_422_and_makes_no_job(studio):
    carol = studio["carol"]
    before = job_ids(carol)
    response = submit(carol, "generate", dict(FAST, prompt="eight boats", count=8))
    assert response.status_code == 422
    assert f"one job makes at most {MAX_IMAGES_PER_JOB}" in detail(response)
    assert job_ids(carol) == before


def test_an_upload_over_the_size_limit_is_413(studio):
    carol = studio["carol"]
    big = noise_png(820)
    assert len(big) > 2_000_000
    before = carol.http.get("/materials").json()
    response = carol.http.post("/materials", files={"file": ("big.png", big, "image/png")})
    assert response.status_code == 413, response.text
    assert f"{MAX_UPLOAD_MB} MB" in detail(response)
    assert carol.http.get("/materials").json() == before


def test_over_the_quota_is_507_and_other_users_go_on(studio):
    carol, bob = studio["carol"], studio["bob"]
    # Uploads fill carol's storage as far as it goes: first big ones, then small ones.
    for side in (550, 180):
        for seed in range(20):
            response = carol.http.post("/materials", files={"file": (f"fill-{side}-{seed}.png", noise_png(side, seed), "image/png")})
            if response.status_code == 507:
                assert "storage is full" in detail(response)
                break
            assert response.status_code == 201, response.text
        else:
            pytest.fail(f"20 uploads of {side} px fitted a {QUOTA_MB} MB quota")
    used = carol.http.get("/me").json()["storage_used_bytes"]
    assert QUOTA_MB * 1_000_000 - 100_000 < used <= QUOTA_MB * 1_000_000
    # A job is refused only once the files are over: the results of jobs under way are kept.
    for _ in range(5):
        before = job_ids(carol)
        response = submit(carol, "generate", {"prompt": "a full store", "width": 256, "height": 256, "steps": 2, "count": 4})
        if response.status_code == 507:
            break
        assert response.status_code == 202, response.text
        succeeded(carol, response.json()["id"])
    else:
        pytest.fail("five jobs of four pictures did not fill the quota")
    assert "storage is full" in detail(response) and f"of your {QUOTA_MB} MB" in detail(response)
    assert carol.http.get("/me").json()["storage_used_bytes"] > QUOTA_MB * 1_000_000
    assert job_ids(carol) == before
    small = carol.http.post("/materials", files={"file": ("small.png", png(Image.new("RGB", (64, 64), "blue")), "image/png")})
    assert small.status_code == 507 and "storage is full" in detail(small)
    other = submit(bob, "generate", dict(FAST, prompt="bob has room"))
    assert other.status_code == 202, other.text
    succeeded(bob, other.json()["id"])
