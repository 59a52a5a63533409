"""Response and request bodies of access control: tokens, the caller, users, API keys, audit entries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from geo.access.users import ROLES

ROLE_PATTERN = "^(" + "|".join(ROLES) + ")$"


# ------------------------------------------------------------------------------------------------ logging in

class TokenPair(BaseModel):
    """Bearer tokens: a short-lived access token and, on login, a longer-lived refresh token."""

    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")
    refresh_token: str | None = None
    refresh_expires_in: int | None = None


class RefreshRequest(BaseModel):
    """A refresh token to exchange for a new access token."""

    refresh_token: str


class PasswordChange(BaseModel):
    """A caller's change of their own password."""

    current_password: str
    new_password: str


class Me(BaseModel):
    """Who the credentials belong to."""

    username: str
    role: str
    jurisdiction_code: str | None
    jurisdiction_level: str | None
    jurisdiction_name: str | None
    via: str | None


# ----------------------------------------------------------------------------------------------------- users

class UserOut(BaseModel):
    """A user as shown to admins (never a password hash)."""

    username: str
    role: str
    jurisdiction_code: str | None
    jurisdiction_level: str | None
    disabled: bool
    created_at: str | None


class UserCreate(BaseModel):
    """A new user."""

    username: str = Field(min_length=1, max_length=100)
    role: str = Field(pattern=ROLE_PATTERN)
    jurisdiction_code: str | None = Field(default=None, description="9-digit street, 12 community, 15 grid")
    password: str | None = Field(default=None, description="omit to have a random one generated and shown once")


class UserCreated(UserOut):
    """A user just created, with the generated password when none was given."""

    password: str | None = Field(default=None, description="the generated password, shown this once")


class UserChange(BaseModel):
    """Changes to a user: only the members sent are changed."""

    role: str | None = Field(default=None, pattern=ROLE_PATTERN)
    jurisdiction_code: str | None = Field(default=None, description="send null to clear (admins only)")
    disabled: bool | None = None


class PasswordReset(BaseModel):
    """An admin's reset of a user's password."""

    password: str | None = Field(default=None, description="omit to have a random one generated and shown once")


class PasswordOut(BaseModel):
    """The outcome of a password reset."""

    username: str
    password: str | None = Field(default=None, description="the generated password, shown this once")


class UnlockOut(BaseModel):
    """The outcome of clearing a user's failed logins."""

    username: str
    address: str | None = Field(default=None, description="the address whose failures were cleared too, if any")
    cleared: int = Field(description="how many failed login attempts were forgotten")


# -------------------------------------------------------------------------------------------------- API keys

class KeyCreate(BaseModel):
    """A new API key for an integration."""

    username: str = Field(description="the user the key acts as (its role and jurisdiction)")
    name: str = Field(min_length=1, max_length=100, description="what the integration is")


class KeyOut(BaseModel):
    """An API key as shown (never the key or its hash)."""

    id: int
    name: str
    prefix: str
    username: str | None
    created_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreated(KeyOut):
    """A key just created: the full key, this once."""

    key: str = Field(description="the full key, shown this once: send it as the X-API-Key header")


# ------------------------------------------------------------------------------------------------- audit log

class AuditEntryOut(BaseModel):
    """One audit entry (审计记录): who did what to which target, from where, with the state before and after."""

    id: int
    at: str | None
    actor: str | None
    action: str
    method: str | None
    path: str | None
    remote_addr: str | None
    target_type: str | None
    target_id: str | None
    jurisdiction_code: str | None
    before: Any = Field(default=None, description="the target's state before (any JSON value)")
    after: Any = Field(default=None, description="the target's state after (any JSON value)")


class AuditPage(BaseModel):
    """A page of audit entries, newest first."""

    items: list[AuditEntryOut]
    next_before_id: int | None = None


class DeviceSession(BaseModel):
    """A login session: a phone's browser (`device`) or an API login (no device)."""

    id: str
    username: str
    device: str | None = Field(None, description="what the browser says it is (User-Agent), for a device session")
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    revoked_reason: str | None


class DeviceSessionList(BaseModel):
    """Login sessions, newest first."""

    items: list[DeviceSession]
