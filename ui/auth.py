"""Who is asking: signed session cookies for the browser, API tokens for scripts, one user store for both.

Gradio asks ``Authenticator.user_id`` through its ``auth_dependency`` (so ``gr.Request.username`` is the
signed-in user's id in every handler); the REST routes ask it through the ``current_owner`` dependency. With
sign-in off (a single local user on this machine) every request is the local user's.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool

from storage.users import UserStore, UserView

SESSION_COOKIE = "studio_session"
# Gradio serves pictures by path; the studio's files are named by their SHA-256, in its store and in Gradio's cache.
STORED_FILE_NAME = re.compile(r"([0-9a-f]{64})\.[A-Za-z0-9]+")
GRADIO_FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/", "/file=")
NOT_SIGNED_IN = ("Sign in first: send an API token as 'Authorization: Bearer <token>' "
                 "(`python app.py users token NAME` makes one), or sign in at /login.")


@dataclass
class Authenticator:
    users: UserStore
    secret: str
    required: bool
    local_user_id: str | None = None  # every request's user when sign-in is off
    max_age_s: float = 14 * 24 * 3600

    @property
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="studio-session")

    def user(self, request: Request) -> UserView | None:
        """The user a request comes from: its API token, else (sign-in off) the local user, else its session."""
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self.users.user_for_token(header[7:].strip())
        if not self.required:
            return self.users.active(self.local_user_id) if self.local_user_id else None
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            user_id = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        return self.users.active(user_id) if isinstance(user_id, str) else None

    def user_id(self, request: Request) -> str | None:
        user = self.user(request)
        return user.id if user is not None else None

    async def gradio_user_id(self, request: Request) -> str | None:
        """Gradio's ``auth_dependency``: the user id becomes ``gr.Request.username`` (off the event loop: it reads the database)."""
        return await run_in_threadpool(self.user_id, request)

    def session_cookie(self, user: UserView) -> str:
        return self._serializer.dumps(user.id)


def current_user(request: Request) -> UserView:
    """FastAPI dependency: the signed-in user, or 401 with how to sign in."""
    user = request.app.state.auth.user(request)
    if user is None:
        raise HTTPException(401, NOT_SIGNED_IN, headers={"WWW-Authenticate": "Bearer"})
    return user


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an address elsewhere (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · AI Creative Studio</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f4f4f7; display: grid; place-items: center; min-height: 100vh; margin: 0; }}
form {{ background: white; padding: 2rem 2.2rem; border-radius: 10px; box-shadow: 0 2px 12px #0002; width: 19rem; }}
h1 {{ font-size: 1.3rem; margin: 0 0 1.2rem; }}
label {{ display: block; margin: .8rem 0 .3rem; font-size: .9rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; border: 1px solid #bbb; border-radius: 6px; font-size: 1rem; }}
button {{ margin-top: 1.3rem; width: 100%; padding: .6rem; border: 0; border-radius: 6px; background: #ea580c; color: white; font-size: 1rem; cursor: pointer; }}
.error {{ color: #b91c1c; font-size: .9rem; margin: 0; }}
</style></head>
<body><form method="post" action="/login">
<h1>AI Creative Studio<br><small>登录 · Sign in</small></h1>
{message}
<label for="username">User name · 用户名</label><input id="username" name="username" autocomplete="username" required autofocus value="{username}">
<label for="password">Password · 密码</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in · 登录</button>
</form></body></html>
"""


def login_page(next_path: str, message: str = "", username: str = "", status: int = 200) -> HTMLResponse:
    notice = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(LOGIN_PAGE.format(message=notice, username=html.escape(username), next=html.escape(next_path)),
                        status_code=status)


router = APIRouter(include_in_schema=False)


@router.get("/login")
def show_login(request: Request, next: str = "/") -> Response:
    auth: Authenticator = request.app.state.auth
    if not auth.required or auth.user(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return login_page(_safe_next(next))


@router.post("/login")
def sign_in(request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")) -> Response:
    auth: Authenticator = request.app.state.auth
    user = auth.users.authenticate(username.strip(), password)
    if user is None:
        return login_page(_safe_next(next), "Wrong user name or password, or the account is disabled.", username, 401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, auth.session_cookie(user), max_age=int(auth.max_age_s), httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")
    return response


@router.get("/logout")
def sign_out() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def gradio_file_digest(path: str) -> str | None:
    """The content hash a Gradio file route names, when it names one of the studio's stored files."""
    for prefix in GRADIO_FILE_ROUTES:
        if path.startswith(prefix):
            # The file Gradio will serve: the route's path as it reads it (decoded once, already) and normalised
            # as it normalises it (os.path.abspath), so "<sha>.png/", "<sha>.png/." or "<sha>.png/x/.." name it too.
            match = STORED_FILE_NAME.fullmatch(os.path.basename(os.path.abspath(path[len(prefix):])))
            return match.group(1) if match else None
    return None


def guard(may_read_file):
    """HTTP middleware: the sign-in page for a browser that is not signed in, and no stored file through
    Gradio's file routes to anyone but its owners. ``may_read_file(user_id, digest) -> bool``."""

    async def middleware(request: Request, call_next):
        auth: Authenticator = request.app.state.auth
        # The path as the routes match it (request.url.path re-escapes "?", "#" and "\\" in it).
        path = request.scope["path"]
        digest = gradio_file_digest(path)
        if digest is not None:
            user_id = await run_in_threadpool(auth.user_id, request)
            if user_id is None or not await run_in_threadpool(may_read_file, user_id, digest):
                return Response("No such file.", status_code=404)
        elif (auth.required and request.method == "GET" and path == "/"
              and "text/html" in request.headers.get("accept", "")
              and await run_in_threadpool(auth.user_id, request) is None):
            return RedirectResponse(f"/login?next={quote(path)}", status_code=303)
        return await call_next(request)

    return middleware
