"""Login throttling: a burst of failed logins for one account or from one address is refused for a while.

Attempts are kept in `login_attempts` (migration 0002), so the limits hold across server processes and restarts.
Accounts are keyed by the name typed, whether or not such a user exists, so throttling reveals nothing about which
names are real. The numbers are `geo.settings.AuthSettings` (GRIDATLAS_AUTH_*).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, delete, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from geo.settings import AuthSettings, get_settings
from geo.store.models import Base

log = logging.getLogger("gridatlas.auth")
#: Attempts older than this are pruned (well beyond any sensible window).
RETENTION = dt.timedelta(days=2)


class LoginAttempt(Base):
    """One login attempt (登录尝试): the name typed, the address, the outcome."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    username: Mapped[str] = mapped_column(String(100))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    success: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (
        Index("ix_login_attempts_username_at", "username", "at"),
        Index("ix_login_attempts_remote_addr_at", "remote_addr", "at"),
    )


@dataclass(frozen=True)
class Verdict:
    """Whether a login may be tried now; if not, for how many seconds it stays refused and why."""

    retry_after: int = 0
    reason: str | None = None  # "account" or "address"

    @property
    def allowed(self) -> bool:
        return self.retry_after <= 0


def _key(username: str) -> str:
    return username.strip().lower()[:100]


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _blocked_until(session: Session, condition, limit: int, window: dt.timedelta,
                   now: dt.datetime) -> dt.datetime | None:
    """When the `limit`-th most recent failure matching `condition` leaves the window, if there are that many."""
    if limit <= 0:
        return None
    nth = session.scalar(
        select(LoginAttempt.at)
        .where(condition, LoginAttempt.success.is_(False), LoginAttempt.at > now - window)
        .order_by(LoginAttempt.at.desc())
        .offset(limit - 1)
        .limit(1)
    )
    return nth + window if nth is not None else None


def _last_success(session: Session, username: str, since: dt.datetime) -> dt.datetime | None:
    return session.scalar(
        select(func.max(LoginAttempt.at)).where(
            LoginAttempt.username == username, LoginAttempt.success.is_(True), LoginAttempt.at > since
        )
    )


def check(session: Session, username: str, remote_addr: str | None, now: dt.datetime | None = None,
          settings: AuthSettings | None = None) -> Verdict:
    """Whether a login for `username` from `remote_addr` may be tried now."""
    settings = settings or get_settings().auth
    now = _now(now)
    window = dt.timedelta(seconds=settings.window_seconds)
    name = _key(username)
    # failures before the account's last success do not count against it
    since = _last_success(session, name, now - window)
    account_condition = LoginAttempt.username == name
    if since is not None:
        account_condition = account_condition & (LoginAttempt.at > since)
    candidates = [("account", _blocked_until(session, account_condition, settings.max_failures_per_account,
                                             window, now))]
    if remote_addr:
        candidates.append(("address", _blocked_until(session, LoginAttempt.remote_addr == remote_addr,
                                                     settings.max_failures_per_address, window, now)))
    blocked = [(until, reason) for reason, until in candidates if until is not None and until > now]
    if not blocked:
        return Verdict()
    until, reason = max(blocked)
    return Verdict(max(1, math.ceil((until - now).total_seconds())), reason)


def record_attempt(session: Session, username: str, remote_addr: str | None, success: bool,
                   now: dt.datetime | None = None, settings: AuthSettings | None = None) -> Verdict:
    """Store an attempt; for a failure, return the verdict it leads to (refused from now on = the limit tripped)."""
    now = _now(now)
    session.add(LoginAttempt(at=now, username=_key(username), remote_addr=remote_addr, success=success))
    session.flush()
    if success:
        return Verdict()
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < now - RETENTION))
    return check(session, username, remote_addr, now, settings)
