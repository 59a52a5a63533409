"""Users, their roles and jurisdictions, password hashing (Argon2 via argon2-cffi)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from geo.models import User

ROLES = ("admin", "planner", "leader", "worker")
#: Jurisdiction level by code length: codes are hierarchical prefixes (street 9 → community 12 → grid 15).
LEVEL_BY_CODE_LENGTH = {9: "street", 12: "community", 15: "grid"}

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A user operation refused (unknown role, bad jurisdiction, duplicate name)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's name, role and jurisdiction (None = the whole district, for admins)."""

    username: str
    role: str
    jurisdiction_code: str | None = None
    user_id: int | None = None

    @property
    def jurisdiction_level(self) -> str | None:
        return LEVEL_BY_CODE_LENGTH.get(len(self.jurisdiction_code)) if self.jurisdiction_code else None

    def covers(self, code: str | None) -> bool:
        """Whether a unit with this code (street, community, grid, micro-grid) lies inside the jurisdiction."""
        if self.role == "admin" or self.jurisdiction_code is None:
            return True
        return code is not None and code.startswith(self.jurisdiction_code)

    def overlaps(self, code: str | None) -> bool:
        """Whether the jurisdiction and a unit with this code share any land (either contains the other)."""
        if self.covers(code):
            return True
        return code is not None and self.jurisdiction_code.startswith(code)


def hash_password(password: str) -> str:
    """An Argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; constant work whether or not the hash exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def create_user(session: Session, username: str, password: str, role: str,
                jurisdiction_code: str | None = None) -> User:
    """Add a user; non-admins need a street, community or grid code as jurisdiction."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "admin" and not jurisdiction_code:
        raise UserError(f"a {role} needs a jurisdiction (a 9-digit street, 12-digit community or 15-digit grid code)")
    if jurisdiction_code and len(jurisdiction_code) not in LEVEL_BY_CODE_LENGTH:
        raise UserError(f"jurisdiction {jurisdiction_code!r} is not a 9-, 12- or 15-digit code")
    if session.scalar(select(User.id).where(User.username == username)):
        raise UserError(f"user {username!r} exists already")
    user = User(
        username=username,
        password_hash=hash_password(password),
        role=role,
        jurisdiction_level=LEVEL_BY_CODE_LENGTH.get(len(jurisdiction_code)) if jurisdiction_code else None,
        jurisdiction_code=jurisdiction_code,
        disabled=False,
        token_version=0,
    )
    session.add(user)
    session.flush()
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None (the same answer for unknown user and wrong password)."""
    user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(user.password_hash if user else None, password)
    return user if ok and user is not None and not user.disabled else None


def principal_of(user: User) -> Principal:
    """The Principal a stored user acts as."""
    return Principal(user.username, user.role, user.jurisdiction_code, user.id)


def ensure_first_admin(engine, username: str = "admin") -> tuple[str, str] | None:
    """Create an admin with a random password when there are no users; return (name, password) once."""
    from geo.db import session_scope

    with session_scope(engine) as session:
        if session.scalar(select(User.id).limit(1)) is not None:
            return None
        password = secrets.token_urlsafe(12)
        create_user(session, username, password, "admin")
    return username, password
