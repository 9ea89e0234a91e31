"""The REST API's OpenAPI schema, fuzzed by schemathesis against a studio of its own (``python app.py``, tiny
profile, with its worker): for every operation, valid and invalid requests made from the schema must never
get a 5xx, and every answer (its status, content type and body) must match what the operation documents.

The schema is built at collection from the routes the web process mounts (so each operation is a test of its
own: ``test_api[POST /api/v1/jobs]``), and the first test checks the running studio serves that very schema.
A few examples per operation, derandomized with a fixed seed, keep it to well under two minutes. The studio is
this module's alone, so the fuzzer may create and delete whatever it likes.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import StudioServer, studio_env
from ui.api import public_router, router

pytestmark = pytest.mark.integration

EXAMPLES_PER_OPERATION = 15
SEED = 20240601
CONFIG = {
    "seed": SEED,
    # Valid and invalid data alike, after the examples the schema gives (a real prompt for POST /jobs).
    "generation": {"mode": "all", "max-examples": EXAMPLES_PER_OPERATION, "deterministic": True},
    # Chains of calls (stateful) and the exhaustive boundary values (coverage) would take many minutes.
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
    "request-timeout": 60,
}


def served_schema() -> dict:
    """The OpenAPI document of the REST routes, as ``ui.web.create_app`` mounts them (Gradio adds none)."""
    app = FastAPI(title="AI Creative Studio API", version="1", openapi_url="/api/v1/openapi.json")
    app.include_router(router)
    app.include_router(public_router)
    return app.openapi()


# No 5xx; every status, content type and body as the operation documents it.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SPEC = served_schema()
schema = schemathesis.openapi.from_dict(SPEC, config=SchemathesisConfig.from_dict(CONFIG))


@pytest.fixture(scope="module")
def fuzzed_studio(tmp_path_factory, models_dir):
    root = tmp_path_factory.mktemp("fuzzed-studio")
    server = StudioServer(studio_env(root / "data", models_dir), root / "studio.log")
    try:
        server.wait_ready(timeout=150)
        server.headers = {}
        if httpx.get(f"{server.url}/api/v1/me").status_code == 401:  # sign-in on: fuzz as a member with a token
            server.headers["authorization"] = f"Bearer {_member_token(root)}"
        yield server
        assert server.alive(), f"the web process died under the fuzzer:\n{server.output()[-3000:]}"
        assert server.health()["workers"], "the worker died under the fuzzer"
    finally:
        server.stop()


def _member_token(root) -> str:
    from storage.db import Database
    from storage.users import UserStore

    db = Database(f"sqlite:///{root / 'data' / 'studio.sqlite'}")
    try:
        store = UserStore(db)
        store.add("fuzzer", "a long enough password", "member")
        return store.create_token("fuzzer", "openapi fuzz")[0]
    finally:
        db.dispose()


def test_the_studio_serves_the_schema_that_is_fuzzed(fuzzed_studio):
    served = httpx.get(f"{fuzzed_studio.url}/api/v1/openapi.json", headers=fuzzed_studio.headers).json()
    assert served["paths"] == SPEC["paths"]
    assert served.get("components") == SPEC.get("components")


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_api(case, fuzzed_studio):
    case.call_and_validate(base_url=fuzzed_studio.url, headers=fuzzed_studio.headers, checks=CHECKS)
