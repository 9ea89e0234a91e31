"""The studio's one user store: accounts with argon2 password hashes, roles, disabling, and API tokens.

The web sign-in, the REST API and ``python app.py users`` all go through it.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from storage.db import Database
from storage.models import ApiToken, Role, User, utcnow

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,79}")
MIN_PASSWORD = 8
TOKEN_PREFIX = "studio_"


class UserError(ValueError):
    """A request about users that cannot be done, with what to correct."""


class UnknownUser(UserError):
    pass


@dataclass(frozen=True)
class UserView:
    id: str
    name: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    can_sign_in: bool

    @classmethod
    def of(cls, user: User) -> "UserView":
        return cls(user.id, user.name, user.role, user.disabled, user.created_at, user.last_login_at,
                   user.password_hash is not None)

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


@dataclass(frozen=True)
class TokenView:
    id: str
    name: str
    user_name: str
    created_at: datetime
    last_used_at: datetime | None


def _token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class UserStore:
    def __init__(self, db: Database, hasher: PasswordHasher | None = None):
        self.db = db
        self.hasher = hasher or PasswordHasher()
        # Verified when a name is unknown, so a wrong name takes as long as a wrong password.
        self._decoy = self.hasher.hash(secrets.token_hex(16))

    def add(self, name: str, password: str, role: str = Role.MEMBER) -> UserView:
        if not NAME_PATTERN.fullmatch(name):
            raise UserError(f"A user name is 1-80 letters, digits and _ . @ - (starting with a letter or digit); {name!r} is not.")
        if role not in Role.ALL:
            raise UserError(f"Unknown role {role!r}; a user is one of: {', '.join(Role.ALL)}.")
        self._check_password(password)
        with self.db.session() as session:
            user = User(name=name, password_hash=self.hasher.hash(password), role=role)
            session.add(user)
            try:
                session.commit()
            except IntegrityError:
                raise UserError(f"There is already a user called {name!r}.") from None
            return UserView.of(user)

    @staticmethod
    def _check_password(password: str) -> None:
        if len(password) < MIN_PASSWORD:
            raise UserError(f"A password needs at least {MIN_PASSWORD} characters.")

    def list(self) -> list[UserView]:
        with self.db.session() as session:
            return [UserView.of(u) for u in session.scalars(select(User).order_by(User.created_at))]

    def _named(self, session, name: str) -> User:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise UnknownUser(f"No user called {name!r}.")
        return user

    def get(self, name: str) -> UserView:
        with self.db.session() as session:
            return UserView.of(self._named(session, name))

    def set_disabled(self, name: str, disabled: bool = True) -> UserView:
        """A disabled user cannot sign in, and their sessions and tokens stop working at once."""
        with self.db.session() as session:
            user = self._named(session, name)
            user.disabled = disabled
            session.commit()
            return UserView.of(user)

    def set_password(self, name: str, password: str) -> UserView:
        self._check_password(password)
        with self.db.session() as session:
            user = self._named(session, name)
            user.password_hash = self.hasher.hash(password)
            session.commit()
            return UserView.of(user)

    def authenticate(self, name: str, password: str) -> UserView | None:
        """The user when the name and password match an enabled account, else None."""
        with self.db.session() as session:
            user = session.scalar(select(User).where(User.name == name))
            stored = user.password_hash if user is not None and user.password_hash else self._decoy
            try:
                self.hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
            if user is None or user.password_hash is None or user.disabled:
                return None
            if self.hasher.check_needs_rehash(user.password_hash):
                user.password_hash = self.hasher.hash(password)
            user.last_login_at = utcnow()
            session.commit()
            return UserView.of(user)

    def active(self, user_id: str) -> UserView | None:
        """The user with this id unless they were disabled (checked on every request)."""
        with self.db.session() as session:
            user = session.get(User, user_id)
            return UserView.of(user) if user is not None and not user.disabled else None

    def create_token(self, user_name: str, token_name: str) -> tuple[str, TokenView]:
        """A new API token; the secret is shown once and only its digest is kept."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.db.session() as session:
            user = self._named(session, user_name)
            token = ApiToken(user_id=user.id, name=token_name[:80] or "token", token_hash=_token_digest(secret))
            session.add(token)
            session.commit()
            return secret, TokenView(token.id, token.name, user.name, token.created_at, None)

    def tokens(self, user_name: str) -> list[TokenView]:
        with self.db.session() as session:
            user = self._named(session, user_name)
            rows = session.scalars(select(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked.is_(False))
                                   .order_by(ApiToken.created_at))
            return [TokenView(t.id, t.name, user.name, t.created_at, t.last_used_at) for t in rows]

    def revoke_token(self, user_name: str, token_id: str) -> None:
        with self.db.session() as session:
            user = self._named(session, user_name)
            revoked = session.execute(update(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user.id)
                                      .values(revoked=True)).rowcount
            session.commit()
        if not revoked:
            raise UserError(f"{user_name} has no token {token_id}.")

    def user_for_token(self, secret: str) -> UserView | None:
        if not secret.startswith(TOKEN_PREFIX):
            return None
        with self.db.session() as session:
            token = session.scalar(select(ApiToken).where(ApiToken.token_hash == _token_digest(secret),
                                                          ApiToken.revoked.is_(False)))
            if token is None:
                return None
            user = session.get(User, token.user_id)
            if user is None or user.disabled:
                return None
            now = utcnow()
            # A write per request would contend with the workers' writes; a minute's precision is enough.
            if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
                token.last_used_at = now
                session.commit()
            return UserView.of(user)
