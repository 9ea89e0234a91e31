"""The user store (argon2 passwords, roles, disabling, API tokens), ``python app.py users``, when sign-in is
required, and the studio refusing to serve when sign-in is required but nobody can sign in."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from settings import Settings
from storage import repo
from storage.models import ApiToken, User
from storage.users import MIN_PASSWORD, TOKEN_PREFIX, UnknownUser, UserError, UserStore
from tests.support import ROOT, free_port

PASSWORD = "correct horse battery"


@pytest.fixture
def store(db) -> UserStore:
    return UserStore(db)


def database_bytes(db) -> bytes:
    """Everything SQLite holds on disk for the database, its write-ahead log included."""
    db.dispose()  # checkpoint nothing away: just close, so the files are complete on disk
    path = Path(db.url.removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


# --- adding users ---------------------------------------------------------------------------------------


BAD_NAMES = ["", " alice", "alice smith", "-alice", ".alice", "alice/../root", "a" * 81, "ali\nce", "名字", "alice;drop"]
GOOD_NAMES = ["a", "alice", "Alice.Smith", "mei_li-2", "ops@studio", "7", "b" * 80]


def test_a_bad_name_is_refused_with_what_a_name_may_be(store):
    for name in BAD_NAMES:
        with pytest.raises(UserError, match="A user name is 1-80 letters, digits"):
            store.add(name, PASSWORD)
    assert store.list() == []


def test_good_names_are_accepted(store):
    for name in GOOD_NAMES:
        assert store.add(name, PASSWORD).name == name
    assert [u.name for u in store.list()] == GOOD_NAMES


def test_a_short_password_is_refused(store):
    with pytest.raises(UserError, match=f"at least {MIN_PASSWORD} characters"):
        store.add("alice", "x" * (MIN_PASSWORD - 1))
    assert store.list() == []
    assert store.add("alice", "x" * MIN_PASSWORD).can_sign_in


def test_a_duplicate_name_is_refused_and_the_first_user_keeps_their_password(store):
    store.add("alice", PASSWORD)
    with pytest.raises(UserError, match="already a user called 'alice'"):
        store.add("alice", "another password", "admin")
    assert [(u.name, u.role) for u in store.list()] == [("alice", "member")]
    assert store.authenticate("alice", PASSWORD) is not None
    assert store.authenticate("alice", "another password") is None


def test_roles_member_by_default_admin_when_asked_and_no_other(store):
    member, admin = store.add("mei", PASSWORD), store.add("root", PASSWORD, "admin")
    assert (member.role, member.is_admin) == ("member", False)
    assert (admin.role, admin.is_admin) == ("admin", True)
    with pytest.raises(UserError, match="Unknown role 'owner'"):
        store.add("boss", PASSWORD, "owner")
    assert [u.name for u in store.list()] == ["mei", "root"]


# --- passwords ------------------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2_hashes_never_as_the_text(db, store):
    secret = "plain-text-canary-7f3a"
    store.add("alice", secret)
    store.set_password("alice", secret + "-new")
    with db.session() as session:
        stored = session.scalar(select(User.password_hash).where(User.name == "alice"))
    assert stored.startswith("$argon2id$")
    assert secret not in stored
    assert PasswordHasher().verify(stored, secret + "-new")
    assert secret.encode() not in database_bytes(db)


def test_two_users_with_one_password_get_different_hashes(db, store):
    store.add("alice", PASSWORD)
    store.add("bob", PASSWORD)
    with db.session() as session:
        hashes = set(session.scalars(select(User.password_hash)))
    assert len(hashes) == 2  # salted


def test_authenticate_right_wrong_unknown_and_disabled(store):
    store.add("alice", PASSWORD)
    assert store.get("alice").last_login_at is None
    user = store.authenticate("alice", PASSWORD)
    assert user is not None and user.name == "alice" and user.last_login_at is not None
    assert store.authenticate("alice", PASSWORD + "!") is None
    assert store.authenticate("alice", "") is None
    assert store.authenticate("Alice", PASSWORD) is None  # names are exact
    assert store.authenticate("nobody", PASSWORD) is None
    store.set_disabled("alice")
    assert store.authenticate("alice", PASSWORD) is None
    assert store.active(user.id) is None  # a disabled user's session stops at once
    store.set_disabled("alice", False)
    assert store.authenticate("alice", PASSWORD) is not None
    assert store.active(user.id).name == "alice"


def test_a_new_password_replaces_the_old_one(store):
    store.add("alice", PASSWORD)
    with pytest.raises(UserError, match="at least"):
        store.set_password("alice", "short")
    store.set_password("alice", "a brand new one")
    assert store.authenticate("alice", PASSWORD) is None
    assert store.authenticate("alice", "a brand new one") is not None


def test_the_local_user_cannot_sign_in(db, store):
    with db.session() as session:
        local = repo.ensure_user(session)
    assert store.get(repo.LOCAL_USER).can_sign_in is False
    assert store.authenticate(repo.LOCAL_USER, "") is None
    assert store.authenticate(repo.LOCAL_USER, PASSWORD) is None
    assert store.active(local.id).name == repo.LOCAL_USER


def test_changing_an_unknown_user_says_so(store):
    for change in (lambda: store.set_disabled("ghost"), lambda: store.set_password("ghost", PASSWORD),
                   lambda: store.get("ghost"), lambda: store.create_token("ghost", "x"), lambda: store.tokens("ghost")):
        with pytest.raises(UnknownUser, match="No user called 'ghost'"):
            change()


# --- API tokens -----------------------------------------------------------------------------------------


def test_a_token_is_shown_once_resolves_to_its_user_and_only_its_sha256_is_stored(db, store):
    alice = store.add("alice", PASSWORD)
    secret, token = store.create_token("alice", "ci")
    assert secret.startswith(TOKEN_PREFIX) and len(secret) > 40
    assert (token.name, token.user_name) == ("ci", "alice")
    assert store.user_for_token(secret).id == alice.id
    assert [t.id for t in store.tokens("alice")] == [token.id]
    assert store.tokens("alice")[0].last_used_at is not None  # the use above was recorded
    with db.session() as session:
        row = session.get(ApiToken, token.id)
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in (row.token_hash, row.name)
    assert secret.encode() not in database_bytes(db)
    assert secret[len(TOKEN_PREFIX):].encode() not in database_bytes(db)


def test_each_token_is_different_and_wrong_tokens_resolve_to_nobody(store):
    store.add("alice", PASSWORD)
    first, _ = store.create_token("alice", "one")
    second, _ = store.create_token("alice", "two")
    assert first != second
    assert len(store.tokens("alice")) == 2
    for wrong in ("", TOKEN_PREFIX, first[:-1], first + "x", first.upper(), first[len(TOKEN_PREFIX):],
                  hashlib.sha256(first.encode()).hexdigest(), PASSWORD):
        assert store.user_for_token(wrong) is None, wrong


def test_a_revoked_token_stops_and_the_others_go_on(store):
    store.add("alice", PASSWORD)
    kept, _ = store.create_token("alice", "laptop")
    revoked, token = store.create_token("alice", "old script")
    store.revoke_token("alice", token.id)
    assert store.user_for_token(revoked) is None
    assert store.user_for_token(kept).name == "alice"
    assert [t.name for t in store.tokens("alice")] == ["laptop"]


def test_a_user_cannot_revoke_another_users_token(store):
    store.add("alice", PASSWORD)
    store.add("bob", PASSWORD)
    secret, token = store.create_token("alice", "ci")
    with pytest.raises(UserError, match=f"bob has no token {token.id}"):
        store.revoke_token("bob", token.id)
    with pytest.raises(UserError, match="has no token"):
        store.revoke_token("alice", "no-such-token")
    assert store.user_for_token(secret).name == "alice"


def test_a_disabled_users_token_is_refused_until_they_are_enabled(store):
    store.add("alice", PASSWORD)
    secret, _ = store.create_token("alice", "ci")
    store.set_disabled("alice")
    assert store.user_for_token(secret) is None
    store.set_disabled("alice", False)
    assert store.user_for_token(secret).name == "alice"


# --- python app.py users --------------------------------------------------------------------------------


def studio_environ(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any STUDIO_* setting of the machine, pointed at a fresh data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_MODELS_DIR=str(data_dir / "models"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT), **extra)
    return env


def run_app(tmp_path: Path, *args: str, stdin: str | None = None, timeout: float = 60, **extra: str):
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path, env=studio_environ(tmp_path / "data", **extra))


def users_cli(tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    result = run_app(tmp_path, "users", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_users_command_adds_lists_disables_and_makes_tokens(tmp_path):
    assert users_cli(tmp_path, "add", "root", "--role", "admin", "--password-stdin",
                     stdin=PASSWORD + "\n") == "added root (admin)\n"
    assert users_cli(tmp_path, "add", "mei", "--password-stdin", stdin=PASSWORD + "\n") == "added mei (member)\n"
    duplicate = run_app(tmp_path, "users", "add", "mei", "--password-stdin", stdin=PASSWORD + "\n")
    assert duplicate.returncode == 1 and "There is already a user called 'mei'" in duplicate.stderr
    short = run_app(tmp_path, "users", "add", "kai", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and f"at least {MIN_PASSWORD} characters" in short.stderr
    nameless = run_app(tmp_path, "users", "add", "--password-stdin", stdin=PASSWORD + "\n")
    assert nameless.returncode == 2 and "users add needs a user name" in nameless.stderr

    listing = users_cli(tmp_path, "list").splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in listing[1:]}
    assert rows == {"root": ["admin", "active"], "mei": ["member", "active"]}

    users_cli(tmp_path, "disable", "mei")
    rows = {line.split()[0]: line.split()[1:3] for line in users_cli(tmp_path, "list").splitlines()[1:]}
    assert rows["mei"] == ["member", "disabled"]
    unknown = run_app(tmp_path, "users", "disable", "ghost")
    assert unknown.returncode == 1 and "No user called 'ghost'" in unknown.stderr

    out = users_cli(tmp_path, "token", "root", "--token-name", "deploy")
    assert "shown only this once" in out
    secret = out.strip().splitlines()[-1]
    assert secret.startswith(TOKEN_PREFIX)
    token_id = users_cli(tmp_path, "tokens", "root").split()[0]
    assert token_id in out

    from storage.db import Database

    db = Database(f"sqlite:///{tmp_path / 'data' / 'studio.sqlite'}")
    try:
        store = UserStore(db)
        assert store.authenticate("root", PASSWORD).is_admin
        assert store.authenticate("mei", PASSWORD) is None  # disabled from the command line
        assert store.user_for_token(secret).name == "root"
        assert users_cli(tmp_path, "revoke", "root", token_id) == f"token {token_id} revoked\n"
        assert store.user_for_token(secret) is None
        users_cli(tmp_path, "enable", "mei")
        assert store.authenticate("mei", PASSWORD).name == "mei"
        users_cli(tmp_path, "password", "mei", "--password-stdin", stdin="a new password\n")
        assert store.authenticate("mei", PASSWORD) is None
        assert store.authenticate("mei", "a new password") is not None
        assert PASSWORD.encode() not in database_bytes(db)
    finally:
        db.dispose()


# --- when sign-in is required ---------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "auth", "required"), [
    ("127.0.0.1", "auto", False), ("localhost", "auto", False), ("::1", "auto", False),
    ("0.0.0.0", "auto", True), ("192.168.1.20", "auto", True), ("studio.lan", "auto", True), ("::", "auto", True),
    ("127.0.0.1", "on", True), ("localhost", "on", True),
    ("0.0.0.0", "off", False), ("192.168.1.20", "off", False),
])
def test_sign_in_is_required_beyond_this_machine_or_when_turned_on(host, auth, required):
    assert Settings(_env_file=None, host=host, auth=auth).auth_required is required


def test_the_session_key_is_made_once_kept_private_and_a_given_one_wins(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    key = settings.session_secret()
    assert len(key) >= 32 and Settings(_env_file=None, data_dir=tmp_path / "data").session_secret() == key
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
    assert Settings(_env_file=None, data_dir=tmp_path / "other").session_secret() != key
    assert Settings(_env_file=None, data_dir=tmp_path / "data", secret_key="given").session_secret() == "given"


NOBODY_CAN_SIGN_IN = "so users must sign in, but no user can: add one with `python app.py users add NAME --role admin`"


def serve(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return run_app(tmp_path, "--profile", "tiny", "--port", str(free_port()), "--no-worker", *args, timeout=90, **extra)


def test_serving_beyond_this_machine_with_no_user_refuses_to_start(tmp_path):
    result = serve(tmp_path, "--host", "0.0.0.0")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"error: the studio listens on 0.0.0.0, {NOBODY_CAN_SIGN_IN}" in result.stderr
    assert "AI Creative Studio on" not in result.stdout  # it never started listening


def test_sign_in_turned_on_with_only_a_disabled_user_refuses_to_start(tmp_path):
    users_cli(tmp_path, "add", "mei", "--password-stdin", stdin=PASSWORD + "\n")
    users_cli(tmp_path, "disable", "mei")
    result = serve(tmp_path, STUDIO_AUTH="on")
    assert result.returncode == 1, result.stdout + result.stderr
    assert NOBODY_CAN_SIGN_IN in result.stderr
