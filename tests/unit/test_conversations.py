"""Conversations as the web side stores them: the turn tree, undo, branch, rename, and bad requests.
Jobs go to a real (SQLite) broker with no worker, so these tests see what the web process does alone."""

from __future__ import annotations

import pytest

from engine.profiles import load_profiles
from engine.styles import load_styles
from settings import Settings
from storage import repo
from storage.db import Database
from tasks.celery_app import create_celery
from tasks.client import InvalidRequest, QueueUnavailable, StudioClient
from tests.support import free_port


def make_client(tmp_path, **settings_overrides) -> tuple[StudioClient, str]:
    settings = Settings(data_dir=tmp_path, **settings_overrides)
    db = Database(settings.database)
    db.migrate()
    with db.session() as session:
        owner = repo.ensure_user(session).id
    return StudioClient(db, create_celery(settings), load_profiles()["tiny"], load_styles()), owner


@pytest.fixture
def client(tmp_path):
    client, owner = make_client(tmp_path)
    yield client, owner
    client.db.dispose()


def say(client: StudioClient, owner: str, text: str, **extra):
    return client.submit(owner, "chat_turn", dict(text=text, **extra), origin="chat")


def test_turns_chain_into_a_conversation_titled_by_its_first_message(client):
    client, owner = client
    first = say(client, owner, "a lighthouse on a cliff at dusk")
    conv = first.params["conversation_id"]
    second = say(client, owner, "make it night", conversation_id=conv)
    view = client.conversations.get(owner, conv)
    assert view.title == "a lighthouse on a cliff at dusk"
    assert view.path == [first.params["turn_id"], second.params["turn_id"]]
    assert view.turn(second.params["turn_id"]).parent_id == first.params["turn_id"]
    assert view.turn(second.params["turn_id"]).job.id == second.id
    assert view.turn(first.params["turn_id"]).settings == {"count": 4, "aspect": "1:1"}
    assert [c["id"] for c in client.conversations.list(owner)] == [conv]


def test_undo_then_branch_keeps_every_turn_in_the_tree(client):
    client, owner = client
    a = say(client, owner, "a fox in snow")
    conv = a.params["conversation_id"]
    b = say(client, owner, "make it dusk", conversation_id=conv)
    view = client.conversations.undo(owner, conv)
    assert view.path == [a.params["turn_id"]]
    c = say(client, owner, "make it night", conversation_id=conv)  # a new branch after the undo
    view = client.conversations.get(owner, conv)
    assert view.turn(c.params["turn_id"]).parent_id == a.params["turn_id"]
    assert {t.id for t in view.turns} == {a.params["turn_id"], b.params["turn_id"], c.params["turn_id"]}
    view = client.conversations.branch(owner, conv, b.params["turn_id"])  # back to the first branch
    assert view.path == [a.params["turn_id"], b.params["turn_id"]]
    d = say(client, owner, "add a cabin", conversation_id=conv, parent_turn_id=a.params["turn_id"])
    assert client.conversations.get(owner, conv).path == [a.params["turn_id"], d.params["turn_id"]]
    client.conversations.undo(owner, conv)
    client.conversations.undo(owner, conv)
    with pytest.raises(InvalidRequest, match="nothing to undo"):
        client.conversations.undo(owner, conv)


def test_rename_delete_and_other_users(client):
    client, owner = client
    conv = say(client, owner, "a fox").params["conversation_id"]
    assert client.conversations.rename(owner, conv, "  Winter   fox ").title == "Winter fox"
    with pytest.raises(InvalidRequest, match="needs a title"):
        client.conversations.rename(owner, conv, "   ")
    with client.db.session() as session:
        stranger = repo.ensure_user(session, "stranger").id
    assert client.conversations.get(stranger, conv) is None
    with pytest.raises(InvalidRequest, match="no conversation"):
        say(client, stranger, "add a hat", conversation_id=conv)
    assert client.conversations.delete(owner, conv)
    assert client.conversations.get(owner, conv) is None and client.conversations.list(owner) == []


@pytest.mark.parametrize("params, message", [
    ({"text": "   "}, "message is empty"),
    ({"text": "x" * 10_001}, "limit is 10000"),
    ({"text": "a fox", "count": 0}, "Candidate count 0 is out of range"),
    ({"text": "a fox", "aspect": "5:1"}, "Unknown aspect ratio"),
    ({"tweak": {"kind": "sharpen", "asset_id": "a"}, "parent_turn_id": "t"}, "Unknown tweak"),
    ({"tweak": {"kind": "style", "asset_id": "a", "style": "nope"}, "parent_turn_id": "t"}, "Unknown style"),
    ({"tweak": {"kind": "upscale"}, "parent_turn_id": "t"}, "Pick the image"),
    ({"tweak": {"kind": "upscale", "asset_id": "a"}}, "parent_turn_id"),
    ({"text": "a fox", "parent_turn_id": "missing"}, "not part of this conversation"),
])
def test_bad_turns_are_refused_with_a_message_and_leave_nothing_behind(client, params, message):
    client, owner = client
    with pytest.raises(InvalidRequest, match=message):
        client.submit(owner, "chat_turn", params)
    assert client.conversations.list(owner) == []


def test_a_turn_the_queue_cannot_take_is_withdrawn(tmp_path):
    client, owner = make_client(tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(QueueUnavailable):
        say(client, owner, "a fox")
    assert client.conversations.list(owner) == []
    client.db.dispose()
