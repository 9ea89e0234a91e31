"""Refuse, before any route runs, REST requests whose text no database column can hold the same everywhere,
and JSON bodies far larger than any request of the API.

JSON lets a client escape a lone UTF-16 surrogate ("\\ud800"), which is no character: UTF-8 cannot encode it,
so storing it (SQLite, PostgreSQL) or answering it back as JSON fails half-way, after rows were written.
PostgreSQL's text columns refuse NUL, and no other control character belongs in a name, tag, title, search or
prompt (tabs and line breaks do). Uploaded files are bytes and are not looked at here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import HTTPException, Request
from starlette.datastructures import UploadFile

MAX_JSON_BYTES = 1_000_000
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
SURROGATE = re.compile("[\ud800-\udfff]")
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,60}")


def text_problem(value: Any, where: str) -> str | None:
    """Why ``value`` (a string, or JSON made of them) cannot be stored, naming ``where`` it is; None when it can."""
    if isinstance(value, str):
        if SURROGATE.search(value):
            return (f"The text of {where} holds an unpaired surrogate escape (such as \\ud800), which is no character: "
                    "send it as valid Unicode text.")
        control = CONTROL.search(value)
        if control:
            return (f"The text of {where} holds the control character U+{ord(control.group()):04X}, which the studio "
                    "does not store: remove it and try again.")
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = text_problem(key, f"a field name in {where}") or text_problem(item, _field(where, key))
            if problem:
                return problem
    elif isinstance(value, list):
        for item in value:
            problem = text_problem(item, where)
            if problem:
                return problem
    return None


def _field(where: str, key: Any) -> str:
    name = key if isinstance(key, str) and PLAIN_NAME.fullmatch(key) else "…"
    return f"{where}.{name}" if where != "the request" else f"'{name}'"


def _json_or_text(value: str) -> Any:
    """A form field as the route will read it: some fields (a LoRA's captions and settings) carry JSON, whose
    escapes can spell a NUL or a lone surrogate in plain ASCII."""
    if value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            pass
    return value


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def refuse_unstorable_text(request: Request) -> None:
    """FastAPI dependency of the REST routes: 413 for a JSON body over MAX_JSON_BYTES, 422 for text (in the
    path, the query, a JSON body or a form's text fields) holding NUL, another control character or a lone
    surrogate. Runs before the route, so nothing is stored."""
    problem = text_problem(dict(request.path_params), "the address") or \
        text_problem([value for _, value in request.query_params.multi_items()], "the query")
    if problem is None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if _is_json(request):
            body = await request.body()  # FastAPI has read it already: this is its copy
            if len(body) > MAX_JSON_BYTES:
                raise HTTPException(413, f"The request is {len(body) / 1e6:.1f} MB of JSON; the API takes at most "
                                         f"{MAX_JSON_BYTES / 1e6:.0f} MB. Upload pictures and model files as files "
                                         "(multipart form data), not inside JSON.")
            try:
                problem = text_problem(json.loads(body), "the request") if body else None
            except (ValueError, RecursionError):
                problem = None  # FastAPI answers a body that is not JSON itself
        elif request.headers.get("content-type", "").startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()  # the form FastAPI parsed, with its limits
            fields = {key: _json_or_text(value) for key, value in form.multi_items() if not isinstance(value, UploadFile)}
            problem = text_problem(fields, "the request")
    if problem:
        raise HTTPException(422, problem)
