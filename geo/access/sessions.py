"""Login sessions (登录会话): the refresh-token families behind access and refresh tokens.

Every password login starts a family (`token_families`, migration 0015). Its tokens carry the family's id; the
family remembers which refresh token is current. Using the current refresh token rotates it (the old one is
spent); presenting a spent one again means it was copied, so the whole family is revoked — the thief's tokens
and the owner's alike (the owner logs in again). Logging out revokes the family, so the access token of that
session stops working at once, not when it expires. Expired families are pruned at login.

A device session (设备登录) is a family started by a browser login that names its `device` (its User-Agent): it
lives `Settings.device_session_days` and its refresh token, kept in an HttpOnly cookie, is rotated whenever the
page needs a fresh access token, so a phone stays signed in for weeks; `list_sessions` and `revoke` let an admin
see and end it (API and `gridatlas sessions`).
"""

from __future__ import annotations

import datetime as dt
import enum
import secrets

from sqlalchemy import DateTime, Index, String, delete, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from geo.store.models import Base


class TokenFamily(Base):
    """One login session: its user, its current refresh token, and whether (and why) it was revoked."""

    __tablename__ = "token_families"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(100))
    current_jti: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_reason: Mapped[str | None] = mapped_column(String(40))
    #: A device session (a phone's browser, migration 0019): what the browser says it is, and its last refresh.
    device: Mapped[str | None] = mapped_column(String(200))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("ix_token_families_username", "username"),
        Index("ix_token_families_expires_at", "expires_at"),
    )


class Rotation(enum.Enum):
    """What presenting a refresh token led to."""

    ROTATED = "rotated"  # it was the current one: a new one is current now
    REUSED = "reused"  # a spent one: the family is revoked now
    REVOKED = "revoked"  # the family was revoked (logout, reuse) or has expired
    UNKNOWN = "unknown"  # no such family, or it belongs to someone else


def new_id() -> str:
    """A random identifier for a family or a token (128 bits, URL-safe), never starting with "-" (a command line
    would read it as an option: `gridatlas sessions revoke -x…`)."""
    while True:
        found = secrets.token_urlsafe(16)
        if not found.startswith("-"):
            return found


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def start(session: Session, username: str, lifetime: dt.timedelta, now: dt.datetime | None = None,
          device: str | None = None) -> TokenFamily:
    """A new family for a login (its first refresh token's id is `current_jti`); prunes long-expired families.
    `device` (a browser's description) makes it a device session."""
    now = _now(now)
    session.execute(delete(TokenFamily).where(TokenFamily.expires_at < now - dt.timedelta(days=1)))
    family = TokenFamily(id=new_id(), username=username, current_jti=new_id(), created_at=now,
                         expires_at=now + lifetime, device=(device or None) and device[:200],
                         last_used_at=now if device else None)
    session.add(family)
    session.flush()
    return family


def is_active(session: Session, family_id: str, now: dt.datetime | None = None) -> bool:
    """Whether the family exists, is not revoked and has not expired (its access tokens still count)."""
    row = session.execute(select(TokenFamily.revoked_at, TokenFamily.expires_at)
                          .where(TokenFamily.id == family_id)).first()
    return row is not None and row.revoked_at is None and row.expires_at > _now(now)


def rotate(session: Session, family_id: str, jti: str, username: str, lifetime: dt.timedelta,
           now: dt.datetime | None = None) -> tuple[Rotation, str | None]:
    """Spend refresh token `jti` of the family: (ROTATED, the new current id), or why not (the family row is
    locked meanwhile, so two concurrent uses of one token cannot both rotate: the second is a reuse)."""
    now = _now(now)
    family = session.scalar(select(TokenFamily).where(TokenFamily.id == family_id).with_for_update())
    if family is None or family.username != username:
        return Rotation.UNKNOWN, None
    if family.revoked_at is not None or family.expires_at <= now:
        return Rotation.REVOKED, None
    if family.current_jti != jti:
        family.revoked_at, family.revoked_reason = now, "refresh token reused"
        session.flush()
        return Rotation.REUSED, None
    family.current_jti = new_id()
    family.expires_at = max(family.expires_at, now + lifetime)
    family.last_used_at = now
    session.flush()
    return Rotation.ROTATED, family.current_jti


def revoke(session: Session, family_id: str, reason: str, now: dt.datetime | None = None) -> bool:
    """End a family (logout); whether it was still active."""
    result = session.execute(update(TokenFamily)
                             .where(TokenFamily.id == family_id, TokenFamily.revoked_at.is_(None))
                             .values(revoked_at=_now(now), revoked_reason=reason[:40]))
    return bool(getattr(result, "rowcount", 0))


def revoke_user(session: Session, username: str, reason: str, now: dt.datetime | None = None) -> int:
    """End every family of a user (logout everywhere, disable, password reset); how many."""
    result = session.execute(update(TokenFamily)
                             .where(TokenFamily.username == username, TokenFamily.revoked_at.is_(None))
                             .values(revoked_at=_now(now), revoked_reason=reason[:40]))
    return int(getattr(result, "rowcount", 0) or 0)


def list_sessions(session: Session, username: str | None = None, active_only: bool = True,
                  now: dt.datetime | None = None) -> list[TokenFamily]:
    """Login sessions, newest first: a user's (or everyone's), only the active ones unless `active_only` is off."""
    q = select(TokenFamily).order_by(TokenFamily.created_at.desc(), TokenFamily.id)
    if username is not None:
        q = q.where(TokenFamily.username == username)
    if active_only:
        q = q.where(TokenFamily.revoked_at.is_(None), TokenFamily.expires_at > _now(now))
    return list(session.scalars(q))


def get_session(session: Session, family_id: str) -> TokenFamily | None:
    """One login session by id, or None."""
    return session.get(TokenFamily, family_id)
