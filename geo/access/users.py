"""Users (用户), their roles and jurisdictions (辖区), password hashing (Argon2id via argon2-cffi).

`Principal` is who calls (role, jurisdiction; `covers`, `ensure_covers`, `code_filter` decide what they reach).
The numbers (password length, throttling) are `geo.settings.AuthSettings` (``get_settings().auth``).
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import ColumnElement, func, select, text, true
from sqlalchemy.orm import Session

from geo.errors import DomainError, NotFound, OutOfJurisdiction
from geo.settings import get_settings
from geo.store.models import User

ROLES = ("admin", "planner", "leader", "worker")
#: Jurisdiction level by code length: codes are hierarchical prefixes (street 9 → community 12 → grid 15).
LEVEL_BY_CODE_LENGTH = {9: "street", 12: "community", 15: "grid",
                        10: "community", 16: "grid"}  # villages and dedicated grids of declared code schemes
TABLE_BY_LEVEL = {"street": "streets", "community": "communities", "grid": "grids"}

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so a wrong username costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(DomainError, ValueError):
    """A user or key operation refused (unknown role, bad jurisdiction, weak password, bad key name)."""

    slug = "user-refused"  # kind: "invalid" (422), the default


class UserConflict(UserError):
    """Refused by the state of things: the name is taken, or the user is the last active admin."""

    kind = "conflict"


class WeakPassword(UserError):
    """A user's own new password breaks the policy (an admin's choice is refused as `UserError`)."""

    slug = "weak-password"


class UnknownUser(NotFound, LookupError):
    """No user has this name."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user's name, role and jurisdiction (None = the whole district, for admins)."""

    username: str
    role: str
    jurisdiction_code: str | None = None
    user_id: int | None = None
    #: How the caller proved who they are: "token", "cookie", "api_key:<prefix>" (None outside HTTP).
    via: str | None = None

    @property
    def jurisdiction_level(self) -> str | None:
        return LEVEL_BY_CODE_LENGTH.get(len(self.jurisdiction_code)) if self.jurisdiction_code else None

    @property
    def actor(self) -> str:
        """The name written to the audit log (with the API key's prefix when a key was used)."""
        if self.via and self.via.startswith("api_key:"):
            return f"{self.username} [key {self.via.split(':', 1)[1]}]"
        return self.username

    @property
    def unrestricted(self) -> bool:
        """Whether the caller sees the whole district (admins, or a user without jurisdiction)."""
        return self.role == "admin" or self.jurisdiction_code is None

    def covers(self, code: str | None) -> bool:
        """Whether a unit with this code (street, community, grid, micro-grid) lies inside the jurisdiction."""
        if self.jurisdiction_code is None or self.role == "admin":
            return True
        return code is not None and code.startswith(self.jurisdiction_code)

    def overlaps(self, code: str | None) -> bool:
        """Whether the jurisdiction and a unit with this code share any land (either contains the other)."""
        if self.covers(code):
            return True
        return code is not None and self.jurisdiction_code is not None and self.jurisdiction_code.startswith(code)

    def code_filter(self, column) -> ColumnElement[bool]:
        """A SQL condition keeping rows whose unit code `column` lies in the jurisdiction (true for admins)."""
        if self.jurisdiction_code is None or self.role == "admin":
            return true()
        return func.starts_with(column, self.jurisdiction_code)

    def ensure_covers(self, code: str | None, what: str = "this unit") -> None:
        """OutOfJurisdiction (403) unless `code` lies in the jurisdiction, naming the jurisdiction needed."""
        if not self.covers(code):
            needed = code if code else "the whole district (admin)"
            raise OutOfJurisdiction(f"{what} lies in {needed}, outside your jurisdiction ({self.jurisdiction_code})",
                                    required_jurisdiction=code, your_jurisdiction=self.jurisdiction_code)


def hash_password(password: str) -> str:
    """An Argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; constant work whether or not the hash exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    """A random password (16 URL-safe characters, ~96 bits) to hand over once."""
    return secrets.token_urlsafe(12)


def check_password_policy(password: str) -> None:
    """UserError unless the password is long enough (GRIDATLAS_AUTH_PASSWORD_MIN_LENGTH)."""
    problem = password_problem(password)
    if problem:
        raise UserError(problem)


def password_problem(password: str) -> str | None:
    """Why the password breaks the policy (GRIDATLAS_AUTH_PASSWORD_MIN_LENGTH), or None when it does not."""
    minimum = get_settings().auth.password_min_length
    return f"the password needs at least {minimum} characters" if len(password) < minimum else None


#: Unicode categories refused in a username: controls, format characters (zero-width spaces and joiners,
#: bidirectional overrides, soft hyphens), surrogates, private use, unassigned; line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def normalise_username(username: str) -> str:
    """The stored form of a username: NFKC (full-width letters and compatibility forms folded), 1 to 100
    characters, no surrounding spaces, no invisible or control characters (UserError naming the first)."""
    name = unicodedata.normalize("NFKC", username)
    for char in name:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            raise UserError(f"a username cannot contain U+{ord(char):04X} ({unicodedata.name(char, 'unnamed')}, "
                            f"category {category}): invisible and control characters are refused")
    if not name or len(name) > 100 or name != name.strip():
        raise UserError("a username has 1 to 100 characters and no surrounding spaces")
    return name


def jurisdiction_name(session: Session, code: str) -> str | None:
    """The name of the street, community or grid with this code, or None when there is none."""
    level = LEVEL_BY_CODE_LENGTH.get(len(code or ""))
    if level is None:
        return None
    return session.execute(text(f"SELECT name FROM {TABLE_BY_LEVEL[level]} WHERE code = :c"), {"c": code}).scalar()


def check_jurisdiction(session: Session, role: str, jurisdiction_code: str | None) -> None:
    """UserError unless the jurisdiction suits the role and names an existing street, community or grid."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "admin" and not jurisdiction_code:
        raise UserError(f"a {role} needs a jurisdiction (a 9-digit street, 12-digit community or 15-digit grid code)")
    if jurisdiction_code:
        if len(jurisdiction_code) not in LEVEL_BY_CODE_LENGTH or not jurisdiction_code.isdigit():
            raise UserError(f"jurisdiction {jurisdiction_code!r} is not a 9-, 12- or 15-digit code")
        if jurisdiction_name(session, jurisdiction_code) is None:
            level = LEVEL_BY_CODE_LENGTH[len(jurisdiction_code)]
            raise UserError(f"there is no {level} with code {jurisdiction_code}")


def create_user(session: Session, username: str, password: str, role: str,
                jurisdiction_code: str | None = None) -> User:
    """Add a user; non-admins need a street, community or grid code as jurisdiction."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if role != "admin" and not jurisdiction_code:
        raise UserError(f"a {role} needs a jurisdiction (a 9-digit street, 12-digit community or 15-digit grid code)")
    if jurisdiction_code and len(jurisdiction_code) not in LEVEL_BY_CODE_LENGTH:
        raise UserError(f"jurisdiction {jurisdiction_code!r} is not a 9-, 12- or 15-digit code")
    username = normalise_username(username)
    if session.scalar(select(User.id).where(User.username == username)):
        raise UserConflict(f"user {username!r} exists already")
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


def get_user(session: Session, username: str) -> User:
    """The user with this name (NFKC-normalised as stored); UnknownUser otherwise."""
    user = session.scalar(select(User).where(User.username == unicodedata.normalize("NFKC", username)))
    if user is None:
        raise UnknownUser(f"there is no user {username!r}")
    return user


def list_users(session: Session, within: str | None = None) -> list[User]:
    """All users by name, optionally only those whose jurisdiction lies inside `within`."""
    query = select(User).order_by(User.username)
    if within:
        query = query.where(func.starts_with(User.jurisdiction_code, within))
    return list(session.scalars(query))


def user_summary(user: User) -> dict:
    """The public description of a user (never the hash)."""
    return {
        "username": user.username,
        "role": user.role,
        "jurisdiction_code": user.jurisdiction_code,
        "jurisdiction_level": user.jurisdiction_level,
        "disabled": bool(user.disabled),
        "created_at": user.created_at.isoformat() if user.created_at else None,
    }


def _active_admins(session: Session) -> int:
    count = session.scalar(select(func.count()).select_from(User).where(User.role == "admin",
                                                                        User.disabled.is_(False)))
    return count or 0


def _guard_last_admin(session: Session, user: User) -> None:
    if user.role == "admin" and not user.disabled and _active_admins(session) <= 1:
        raise UserConflict(f"{user.username!r} is the last active admin; create another admin first")


def revoke_tokens(user: User) -> None:
    """Make every token issued to the user so far invalid (the token version moves on)."""
    user.token_version = (user.token_version or 0) + 1


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    """Disable (its live tokens and API keys stop working at once) or re-enable a user."""
    if disabled and not user.disabled:
        _guard_last_admin(session, user)
        revoke_tokens(user)
    user.disabled = disabled
    session.flush()


UNCHANGED = object()


def update_user(session: Session, user: User, role: str | None = None, jurisdiction_code=UNCHANGED) -> None:
    """Change a user's role and/or jurisdiction (None clears it; checked against the database)."""
    new_role = role or user.role
    new_code = user.jurisdiction_code if jurisdiction_code is UNCHANGED else (jurisdiction_code or None)
    check_jurisdiction(session, new_role, new_code)
    if user.role == "admin" and new_role != "admin":
        _guard_last_admin(session, user)
    user.role = new_role
    user.jurisdiction_code = new_code
    user.jurisdiction_level = LEVEL_BY_CODE_LENGTH.get(len(new_code)) if new_code else None
    session.flush()


def set_password(session: Session, user: User, password: str) -> None:
    """Replace the password (policy checked); tokens issued before stop working."""
    check_password_policy(password)
    user.password_hash = hash_password(password)
    revoke_tokens(user)
    session.flush()


def change_own_password(session: Session, user: User, password: str) -> None:
    """A user's change of their own password: WeakPassword when it breaks the policy; tokens issued before stop."""
    problem = password_problem(password)
    if problem:
        raise WeakPassword(problem)
    set_password(session, user, password)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with these credentials, or None (the same answer for unknown user and wrong password).

    The typed name is NFKC-normalised like stored names; one with invisible or control characters names no one.
    """
    try:
        name: str | None = normalise_username(username)
    except UserError:
        name = None
    user = session.scalar(select(User).where(User.username == name)) if name is not None else None
    ok = verify_password(user.password_hash if user else None, password)
    return user if ok and user is not None and not user.disabled else None


def user_for_token(session: Session, username: str, token_version: object) -> User | None:
    """The live user a token names, or None when unknown, disabled, or the token predates a reset or revocation."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None or user.disabled or (user.token_version or 0) != token_version:
        return None
    return user


def principal_of(user: User, via: str | None = None) -> Principal:
    """The Principal a stored user acts as."""
    return Principal(user.username, user.role, user.jurisdiction_code, user.id, via)


def ensure_first_admin(engine, username: str = "admin") -> tuple[str, str] | None:
    """Create an admin with a random password when there are no users; return (name, password) once."""
    from geo.access import audit
    from geo.store.db import session_scope

    with session_scope(engine) as session:
        if session.scalar(select(User.id).limit(1)) is not None:
            return None
        password = generate_password()
        user = create_user(session, username, password, "admin")
        audit.record(session, "system", "user.create", "user", user.username,
                     after=user_summary(user), request_info=audit.LOCAL)
    return username, password
