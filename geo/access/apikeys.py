"""Long-lived API keys for integrations: shown once, stored as a hash, found by prefix, revocable.

A key reads ``ga_<prefix>_<secret>``: the 8-character prefix is stored in clear to find the row, the 43-character
secret (256 random bits) only as a SHA-256 digest. A fast digest suffices because the secret is random, not chosen
by a person; a slow hash would cost every API call tens of milliseconds for no gain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from geo.access.users import Principal, UnknownUser, UserError, principal_of
from geo.errors import NotFound
from geo.store.models import ApiKey, User

KEY_PATTERN = re.compile(r"^ga_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{43})$")
#: last_used_at is written at most this often per key, so reads do not turn into writes on every call.
LAST_USED_RESOLUTION = dt.timedelta(minutes=5)
_ALPHANUMERIC = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class UnknownKey(NotFound, LookupError):
    """No API key has this id, prefix or value."""


def _digest(secret: str) -> str:
    return "sha256$" + hashlib.sha256(secret.encode()).hexdigest()


def create_key(session: Session, user: User, name: str) -> tuple[ApiKey, str]:
    """A new key for `user`: (stored row, the full key to show once)."""
    if not name or len(name) > 100:
        raise UserError("a key needs a name of 1 to 100 characters (what the integration is)")
    if user.disabled:
        raise UserError(f"user {user.username!r} is disabled")
    while True:
        prefix = "".join(secrets.choice(_ALPHANUMERIC) for _ in range(8))
        if session.scalar(select(ApiKey.id).where(ApiKey.prefix == prefix)) is None:
            break
    secret = secrets.token_urlsafe(32)
    row = ApiKey(user_id=user.id, name=name, prefix=prefix, key_hash=_digest(secret))
    session.add(row)
    session.flush()
    return row, f"ga_{prefix}_{secret}"


def find_key(session: Session, key_or_prefix: str | int) -> ApiKey:
    """The key with this id, prefix or full value; UnknownKey otherwise."""
    ref = str(key_or_prefix)
    match = KEY_PATTERN.match(ref)
    if match:
        ref = match.group(1)
    row = (session.get(ApiKey, int(ref)) if ref.isdigit()
           else session.scalar(select(ApiKey).where(ApiKey.prefix == ref)))
    if row is None:
        raise UnknownKey(f"there is no API key {key_or_prefix!r}")
    return row


def revoke_key(session: Session, row: ApiKey) -> bool:
    """Revoke a key (kept for the record); False when it was revoked already."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = dt.datetime.now(dt.UTC)
    session.flush()
    return True


def key_owner(session: Session, row: ApiKey) -> User:
    """The user a key acts as."""
    owner = session.get(User, row.user_id)
    if owner is None:  # user_id is a NOT NULL foreign key: only a broken database gets here
        raise UnknownUser(f"the owner of API key {row.prefix} does not exist")
    return owner


def list_keys(session: Session, username: str | None = None) -> list[tuple[ApiKey, str]]:
    """(key, owner's username) pairs, newest first, optionally of one user."""
    query = select(ApiKey, User.username).join(User, User.id == ApiKey.user_id).order_by(ApiKey.id.desc())
    if username:
        if session.scalar(select(User.id).where(User.username == username)) is None:
            raise UnknownUser(f"there is no user {username!r}")
        query = query.where(User.username == username)
    return [(row, name) for row, name in session.execute(query)]


def key_summary(row: ApiKey, username: str | None = None) -> dict:
    """What may be shown about a key (never its hash)."""
    return {
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "username": username,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


def principal_for_key(session: Session, key: str) -> Principal | None:
    """The Principal a presented key acts as; None when malformed, unknown, wrong, revoked or its user disabled."""
    match = KEY_PATTERN.match(key.strip())
    if not match:
        return None
    prefix, secret = match.groups()
    found = session.execute(
        select(ApiKey, User).join(User, User.id == ApiKey.user_id).where(ApiKey.prefix == prefix)
    ).first()
    # digest compared even when the prefix is unknown, so timing does not tell which prefixes exist
    expected = found[0].key_hash if found else _digest("")
    if not hmac.compare_digest(expected, _digest(secret)) or found is None:
        return None
    row, user = found
    if row.revoked_at is not None or user.disabled:
        return None
    now = dt.datetime.now(dt.UTC)
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return principal_of(user, via=f"api_key:{prefix}")
