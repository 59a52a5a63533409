"""User and API-key administration (admins only): list, create, change, disable; keys shown once, revocable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.auth import Admin, AuditDep
from api.deps import SessionDep
from api.problems import problem_responses
from api.schemas.access import (
    ROLE_PATTERN,
    KeyCreate,
    KeyCreated,
    KeyOut,
    PasswordOut,
    PasswordReset,
    UnlockOut,
    UserChange,
    UserCreate,
    UserCreated,
    UserOut,
)
from geo.access import apikeys, throttle
from geo.access.users import (
    UNCHANGED,
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

#: Every admin route may answer: no credentials, not an admin, a parameter that does not validate.
_AUTH = (401, 403, 422)


@router.get("/v1/users", response_model=list[UserOut], responses=problem_responses(*_AUTH))
def users(admin: Admin, session: SessionDep,
          role: Annotated[str | None, Query(pattern=ROLE_PATTERN)] = None,
          within: Annotated[str | None, Query(description="only users whose jurisdiction lies in this code")] = None):
    """Every user with role and jurisdiction (never a password hash)."""
    return [user_summary(u) for u in list_users(session, within) if role is None or u.role == role]


@router.get("/v1/users/{username}", response_model=UserOut, responses=problem_responses(*_AUTH, 404))
def one_user(username: str, admin: Admin, session: SessionDep):
    """One user."""
    return user_summary(get_user(session, username))


@router.post("/v1/users", response_model=UserCreated, status_code=201,
             responses=problem_responses(*_AUTH, 409))
def add_user(body: UserCreate, admin: Admin, session: SessionDep, audit: AuditDep):
    """Create a user; without a password one is generated and returned once."""
    password = body.password or generate_password()
    check_password_policy(password)
    check_jurisdiction(session, body.role, body.jurisdiction_code)
    created = create_user(session, body.username, password, body.role, body.jurisdiction_code)
    summary = user_summary(created)
    audit("user.create", "user", created.username, created.jurisdiction_code, after=summary)
    return {**summary, "password": None if body.password else password}


@router.patch("/v1/users/{username}", response_model=UserOut, responses=problem_responses(*_AUTH, 404, 409))
def change_user(username: str, body: UserChange, admin: Admin, session: SessionDep, audit: AuditDep):
    """Change role or jurisdiction, disable (live tokens and keys stop at once) or re-enable a user."""
    target = get_user(session, username)
    before = user_summary(target)
    given = body.model_fields_set
    if "role" in given or "jurisdiction_code" in given:
        update_user(session, target, body.role,
                    body.jurisdiction_code if "jurisdiction_code" in given else UNCHANGED)
    if body.disabled is not None:
        set_disabled(session, target, body.disabled)
    after = user_summary(target)
    if before["disabled"] != after["disabled"]:
        action = "user.disable" if after["disabled"] else "user.enable"
    else:
        action = "user.update"
    audit(action, "user", target.username, target.jurisdiction_code or before["jurisdiction_code"],
          before=before, after=after)
    return after


@router.post("/v1/users/{username}/reset-password", response_model=PasswordOut,
             responses=problem_responses(*_AUTH, 404))
def reset_password(username: str, body: PasswordReset, admin: Admin, session: SessionDep, audit: AuditDep):
    """Set a new password (generated when none is given, returned once); the user's tokens stop working."""
    target = get_user(session, username)
    password = body.password or generate_password()
    set_password(session, target, password)
    audit("user.reset_password", "user", target.username, target.jurisdiction_code)
    return {"username": target.username, "password": None if body.password else password}


@router.post("/v1/users/{username}/revoke-tokens", status_code=204, responses=problem_responses(*_AUTH, 404))
def revoke_user_tokens(username: str, admin: Admin, session: SessionDep, audit: AuditDep) -> None:
    """Make every token issued to the user so far invalid (API keys are revoked one by one)."""
    target = get_user(session, username)
    revoke_tokens(target)
    session.flush()
    audit("user.revoke_tokens", "user", target.username, target.jurisdiction_code)


@router.post("/v1/users/{username}/unlock", response_model=UnlockOut,
             responses=problem_responses(*_AUTH, 404, 422))
def unlock_user(username: str, admin: Admin, session: SessionDep, audit: AuditDep,
                address: Annotated[str | None, Query(max_length=64, description="also forget this address's "
                                                     "failures (every account)")] = None):
    """Forget the user's failed logins (from every address), so the login delay they built up ends now."""
    target = get_user(session, username)
    cleared = throttle.unlock(session, target.username)
    if address:
        cleared += throttle.unlock(session, remote_addr=address)
    audit("user.unlock", "user", target.username, target.jurisdiction_code,
          after={"cleared": cleared, "address": address})
    return {"username": target.username, "address": address, "cleared": cleared}


@router.get("/v1/keys", response_model=list[KeyOut], responses=problem_responses(*_AUTH, 404))
def keys(admin: Admin, session: SessionDep, username: Annotated[str | None, Query()] = None):
    """API keys (prefix, owner, dates; never the key or its hash), newest first."""
    return [apikeys.key_summary(row, name) for row, name in apikeys.list_keys(session, username)]


@router.post("/v1/keys", response_model=KeyCreated, status_code=201, responses=problem_responses(*_AUTH, 404))
def add_key(body: KeyCreate, admin: Admin, session: SessionDep, audit: AuditDep):
    """Create an API key acting as `username`; the full key is in this answer only."""
    owner = get_user(session, body.username)
    row, key = apikeys.create_key(session, owner, body.name)
    summary = apikeys.key_summary(row, owner.username)
    audit("apikey.create", "api_key", row.prefix, owner.jurisdiction_code, after=summary)
    return {**summary, "key": key}


@router.delete("/v1/keys/{key_id}", response_model=KeyOut, responses=problem_responses(*_AUTH, 404))
def revoke_key(key_id: Annotated[int, Path(ge=1, le=2**31 - 1)], admin: Admin, session: SessionDep,
               audit: AuditDep):
    """Revoke an API key (kept on record with its revocation time)."""
    row = apikeys.find_key(session, key_id)
    before = apikeys.key_summary(row)
    apikeys.revoke_key(session, row)
    owner = apikeys.key_owner(session, row)
    after = apikeys.key_summary(row, owner.username)
    audit("apikey.revoke", "api_key", row.prefix, owner.jurisdiction_code, before=before, after=after)
    return after
