"""User and API-key administration (admins only): list, create, change, disable; keys shown once, revocable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.auth import Admin, AuditDep
from api.deps import SessionDep
from api.problems import Problem
from geo.access import apikeys
from geo.store.models import User
from geo.access.users import (
    ROLES,
    UNCHANGED,
    UnknownUser,
    UserError,
    check_jurisdiction,
    check_password_policy,
    create_user,
    generate_password,
    get_user,
    list_users,
    revoke_tokens,
    set_disabled,
    set_password,
    update_user,
    user_summary,
)

router = APIRouter(tags=["users"])

_ROLE_PATTERN = "^(" + "|".join(ROLES) + ")$"


class UserOut(BaseModel):
    username: str
    role: str
    jurisdiction_code: str | None
    jurisdiction_level: str | None
    disabled: bool
    created_at: str | None


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    role: str = Field(pattern=_ROLE_PATTERN)
    jurisdiction_code: str | None = Field(default=None, description="9-digit street, 12 community, 15 grid")
    password: str | None = Field(default=None, description="omit to have a random one generated and shown once")


class UserCreated(UserOut):
    password: str | None = Field(default=None, description="the generated password, shown this once")


class UserChange(BaseModel):
    role: str | None = Field(default=None, pattern=_ROLE_PATTERN)
    jurisdiction_code: str | None = Field(default=None, description="send null to clear (admins only)")
    disabled: bool | None = None


class PasswordReset(BaseModel):
    password: str | None = Field(default=None, description="omit to have a random one generated and shown once")


class PasswordOut(BaseModel):
    username: str
    password: str | None = Field(default=None, description="the generated password, shown this once")


class KeyCreate(BaseModel):
    username: str = Field(description="the user the key acts as (its role and jurisdiction)")
    name: str = Field(min_length=1, max_length=100, description="what the integration is")


class KeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    username: str | None
    created_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="the full key, shown this once: send it as the X-API-Key header")


def _user(session, username: str):
    try:
        return get_user(session, username)
    except UnknownUser as exc:
        raise Problem(404, str(exc), type="not-found")


def _refused(exc: UserError) -> Problem:
    status = 409 if "exists already" in str(exc) or "last active admin" in str(exc) else 422
    return Problem(status, str(exc), type="user-refused")


@router.get("/v1/users", response_model=list[UserOut])
def users(admin: Admin, session: SessionDep,
          role: Annotated[str | None, Query(pattern=_ROLE_PATTERN)] = None,
          within: Annotated[str | None, Query(description="only users whose jurisdiction lies in this code")] = None):
    """Every user with role and jurisdiction (never a password hash)."""
    return [user_summary(u) for u in list_users(session, within) if role is None or u.role == role]


@router.get("/v1/users/{username}", response_model=UserOut)
def one_user(username: str, admin: Admin, session: SessionDep):
    """One user."""
    return user_summary(_user(session, username))


@router.post("/v1/users", response_model=UserCreated, status_code=201)
def add_user(body: UserCreate, admin: Admin, session: SessionDep, audit: AuditDep):
    """Create a user; without a password one is generated and returned once."""
    password = body.password or generate_password()
    try:
        check_password_policy(password)
        check_jurisdiction(session, body.role, body.jurisdiction_code)
        created = create_user(session, body.username, password, body.role, body.jurisdiction_code)
    except UserError as exc:
        raise _refused(exc)
    summary = user_summary(created)
    audit("user.create", "user", created.username, created.jurisdiction_code, after=summary)
    return {**summary, "password": None if body.password else password}


@router.patch("/v1/users/{username}", response_model=UserOut)
def change_user(username: str, body: UserChange, admin: Admin, session: SessionDep, audit: AuditDep):
    """Change role or jurisdiction, disable (live tokens and keys stop at once) or re-enable a user."""
    target = _user(session, username)
    before = user_summary(target)
    given = body.model_fields_set
    try:
        if "role" in given or "jurisdiction_code" in given:
            update_user(session, target, body.role,
                        body.jurisdiction_code if "jurisdiction_code" in given else UNCHANGED)
        if body.disabled is not None:
            set_disabled(session, target, body.disabled)
    except UserError as exc:
        raise _refused(exc)
    after = user_summary(target)
    if before["disabled"] != after["disabled"]:
        action = "user.disable" if after["disabled"] else "user.enable"
    else:
        action = "user.update"
    audit(action, "user", target.username, target.jurisdiction_code or before["jurisdiction_code"],
          before=before, after=after)
    return after


@router.post("/v1/users/{username}/reset-password", response_model=PasswordOut)
def reset_password(username: str, body: PasswordReset, admin: Admin, session: SessionDep, audit: AuditDep):
    """Set a new password (generated when none is given, returned once); the user's tokens stop working."""
    target = _user(session, username)
    password = body.password or generate_password()
    try:
        set_password(session, target, password)
    except UserError as exc:
        raise _refused(exc)
    audit("user.reset_password", "user", target.username, target.jurisdiction_code)
    return {"username": target.username, "password": None if body.password else password}


@router.post("/v1/users/{username}/revoke-tokens", status_code=204)
def revoke_user_tokens(username: str, admin: Admin, session: SessionDep, audit: AuditDep) -> None:
    """Make every token issued to the user so far invalid (API keys are revoked one by one)."""
    target = _user(session, username)
    revoke_tokens(target)
    session.flush()
    audit("user.revoke_tokens", "user", target.username, target.jurisdiction_code)


@router.get("/v1/keys", response_model=list[KeyOut])
def keys(admin: Admin, session: SessionDep, username: Annotated[str | None, Query()] = None):
    """API keys (prefix, owner, dates; never the key or its hash), newest first."""
    try:
        return [apikeys.key_summary(row, name) for row, name in apikeys.list_keys(session, username)]
    except UnknownUser as exc:
        raise Problem(404, str(exc), type="not-found")


@router.post("/v1/keys", response_model=KeyCreated, status_code=201)
def add_key(body: KeyCreate, admin: Admin, session: SessionDep, audit: AuditDep):
    """Create an API key acting as `username`; the full key is in this answer only."""
    owner = _user(session, body.username)
    try:
        row, key = apikeys.create_key(session, owner, body.name)
    except UserError as exc:
        raise _refused(exc)
    summary = apikeys.key_summary(row, owner.username)
    audit("apikey.create", "api_key", row.prefix, owner.jurisdiction_code, after=summary)
    return {**summary, "key": key}


@router.delete("/v1/keys/{key_id}", response_model=KeyOut)
def revoke_key(key_id: int, admin: Admin, session: SessionDep, audit: AuditDep):
    """Revoke an API key (kept on record with its revocation time)."""
    try:
        row = apikeys.find_key(session, key_id)
    except LookupError as exc:
        raise Problem(404, str(exc), type="not-found")
    before = apikeys.key_summary(row)
    apikeys.revoke_key(session, row)
    owner = session.get(User, row.user_id)
    after = apikeys.key_summary(row, owner.username)
    audit("apikey.revoke", "api_key", row.prefix, owner.jurisdiction_code, before=before, after=after)
    return after
