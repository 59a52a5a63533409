"""Login throttling: failed logins slow further attempts down exponentially, without locking the owner out.

Attempts are kept in `login_attempts` (migration 0002), so the limits hold across server processes and restarts.
Accounts are keyed by the (normalised) name typed, whether or not such a user exists, so throttling reveals
nothing about which names are real. Three counters, each over `window_seconds`:

- the pair (account, address): after `max_failures_per_pair` failures since that pair's last success, the next
  attempt from that address for that account waits `backoff_base_seconds`, doubling with every further failure
  (up to `backoff_max_seconds`). Nothing is locked: the owner at another address is not affected;
- the account from every address (a guess spread over many addresses) and the address over every account
  (password spraying): past `max_failures_per_account` / `max_failures_per_address` the same backoff applies,
  but only to pairs that have not logged in successfully within `known_address_days` — the owner's usual
  address keeps working, so an attacker cannot lock an admin out by failing on purpose.

An admin clears an account's (or an address's) failures with `unlock` (`gridatlas users unlock`,
``POST /v1/users/{username}/unlock``). The numbers are `geo.settings.AuthSettings` (GRIDATLAS_AUTH_*).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import unicodedata
from dataclasses import dataclass

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, and_, delete, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from geo.settings import AuthSettings, get_settings
from geo.store.models import Base

log = logging.getLogger("gridatlas.auth")
#: Failures older than this are pruned (well beyond any sensible window); successes live `known_address_days`.
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
    reason: str | None = None  # "pair" (this account from this address), "account" or "address"
    failures: int = 0

    @property
    def allowed(self) -> bool:
        return self.retry_after <= 0


def key(username: str) -> str:
    """The throttle's key for a typed name: NFKC-normalised, case-folded, trimmed (so look-alikes share one)."""
    return unicodedata.normalize("NFKC", username).strip().casefold()[:100]


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def backoff_seconds(failures: int, limit: int, settings: AuthSettings) -> float:
    """The wait after the last failure once `failures` reached `limit`: base, doubling per further failure."""
    if limit <= 0 or failures < limit:
        return 0.0
    exponent = min(failures - limit, 40)  # 2**40 s is far beyond any cap
    return float(min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** exponent))


def _failures(session: Session, condition, since: dt.datetime) -> tuple[int, dt.datetime | None]:
    """(how many failures match `condition` after `since`, when the latest was)."""
    count, latest = session.execute(
        select(func.count(), func.max(LoginAttempt.at))
        .where(condition, LoginAttempt.success.is_(False), LoginAttempt.at > since)
    ).one()
    return int(count or 0), latest


def _last_success(session: Session, condition, since: dt.datetime) -> dt.datetime | None:
    return session.scalar(
        select(func.max(LoginAttempt.at)).where(condition, LoginAttempt.success.is_(True), LoginAttempt.at > since)
    )


def check(session: Session, username: str, remote_addr: str | None, now: dt.datetime | None = None,
          settings: AuthSettings | None = None) -> Verdict:
    """Whether a login for `username` from `remote_addr` may be tried now, and if not how long to wait."""
    settings = settings or get_settings().auth
    now = _now(now)
    window_start = now - dt.timedelta(seconds=settings.window_seconds)
    name = key(username)
    account = LoginAttempt.username == name
    pair = and_(account, LoginAttempt.remote_addr == remote_addr) if remote_addr else account
    counters: list[tuple[str, object, int, dt.datetime]] = []
    # failures before the pair's last success do not count against it
    counters.append(("pair", pair, settings.max_failures_per_pair,
                     max(window_start, _last_success(session, pair, window_start) or window_start)))
    known_since = now - dt.timedelta(days=settings.known_address_days)
    usual = remote_addr is not None and _last_success(session, pair, known_since) is not None
    if not usual:
        counters.append(("account", account, settings.max_failures_per_account,
                         max(window_start, _last_success(session, account, window_start) or window_start)))
        if remote_addr:
            counters.append(("address", LoginAttempt.remote_addr == remote_addr, settings.max_failures_per_address,
                             window_start))
    worst = Verdict()
    for reason, condition, limit, since in counters:
        if limit <= 0:
            continue
        count, latest = _failures(session, condition, since)
        wait = backoff_seconds(count, limit, settings)
        if latest is None or wait <= 0:
            continue
        remaining = (latest + dt.timedelta(seconds=wait) - now).total_seconds()
        if remaining > 0 and math.ceil(remaining) > worst.retry_after:
            worst = Verdict(max(1, math.ceil(remaining)), reason, count)
    return worst


def record_attempt(session: Session, username: str, remote_addr: str | None, success: bool,
                   now: dt.datetime | None = None, settings: AuthSettings | None = None) -> Verdict:
    """Store an attempt; for a failure, return the verdict it leads to (refused from now on = the limit tripped)."""
    settings = settings or get_settings().auth
    now = _now(now)
    session.add(LoginAttempt(at=now, username=key(username), remote_addr=remote_addr, success=success))
    session.flush()
    if success:
        return Verdict()
    session.execute(delete(LoginAttempt).where(or_(
        and_(LoginAttempt.success.is_(False),
             LoginAttempt.at < now - max(RETENTION, dt.timedelta(seconds=settings.window_seconds))),
        and_(LoginAttempt.success.is_(True), LoginAttempt.at < now - dt.timedelta(days=settings.known_address_days)),
    )))
    return check(session, username, remote_addr, now, settings)


def unlock(session: Session, username: str | None = None, remote_addr: str | None = None) -> int:
    """Forget the failed logins of an account (every address) and/or of an address (every account); how many."""
    if not username and not remote_addr:
        raise ValueError("unlock needs an account or an address")
    conditions = []
    if username:
        conditions.append(LoginAttempt.username == key(username))
    if remote_addr:
        conditions.append(LoginAttempt.remote_addr == remote_addr)
    result = session.execute(delete(LoginAttempt).where(LoginAttempt.success.is_(False), or_(*conditions)))
    session.flush()
    return int(getattr(result, "rowcount", 0) or 0)
