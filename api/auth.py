"""Authentication (signed JWT bearer tokens) and authorisation dependencies used by every router.

Every route either depends on `CurrentUser` (or a role alias built from it) or is listed in `PUBLIC_ROUTES`;
a test walks the OpenAPI schema to keep it that way.
"""

from __future__ import annotations

import datetime as dt
import secrets
from functools import lru_cache
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from api.deps import SessionDep, SettingsDep
from api.problems import Problem
from geo.models import User
from geo.settings import Settings, get_settings
from geo.users import Principal, principal_of

#: The only routes anyone may call without credentials (method, path template).
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/refresh"),
    }
)

ALGORITHM = "HS256"
_bearer = HTTPBearer(auto_error=False)


@lru_cache
def signing_key(settings: Settings | None = None) -> str:
    """The JWT signing secret: GRIDATLAS_JWT_SECRET, else a random one kept in var/jwt_secret (mode 0600)."""
    settings = settings or get_settings()
    if settings.jwt_secret:
        return settings.jwt_secret
    path = settings.var_dir / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def issue_token(user: User, kind: str = "access", settings: Settings | None = None) -> str:
    """A signed token for a user: short-lived access, or longer-lived refresh."""
    settings = settings or get_settings()
    now = dt.datetime.now(dt.timezone.utc)
    life = (dt.timedelta(minutes=settings.access_token_minutes) if kind == "access"
            else dt.timedelta(days=settings.refresh_token_days))
    claims = {"sub": user.username, "kind": kind, "tv": user.token_version, "iat": now, "exp": now + life}
    return jwt.encode(claims, signing_key(settings), algorithm=ALGORITHM)


def decode_token(token: str, kind: str = "access") -> dict:
    """The claims of a valid token of this kind; Problem 401 otherwise."""
    try:
        claims = jwt.decode(token, signing_key(), algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorised("the token has expired; log in again or use the refresh token")
    except jwt.InvalidTokenError:
        raise _unauthorised("the token is not valid")
    if claims.get("kind") != kind:
        raise _unauthorised(f"a {claims.get('kind')} token cannot be used here")
    return claims


def _unauthorised(detail: str) -> Problem:
    return Problem(401, detail, type="unauthorised", headers={"WWW-Authenticate": "Bearer"})


def user_for_claims(session, claims: dict) -> User:
    """The live user a token names; refused when disabled or when the token predates a reset."""
    user = session.scalar(select(User).where(User.username == claims["sub"]))
    if user is None or user.disabled or user.token_version != claims.get("tv"):
        raise _unauthorised("the token is no longer valid")
    return user


def get_optional_principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller when credentials are given (bearer JWT or X-API-Key), else None."""
    api_key = request.headers.get("X-API-Key")
    if api_key:
        from geo.apikeys import principal_for_key  # API keys live in the domain layer

        principal = principal_for_key(session, api_key)
        if principal is None:
            raise _unauthorised("the API key is not valid")
        request.state.principal = principal
        return principal
    if credentials is None:
        return None
    principal = principal_of(user_for_claims(session, decode_token(credentials.credentials)))
    request.state.principal = principal
    return principal


def get_principal(principal: Annotated[Principal | None, Depends(get_optional_principal)]) -> Principal:
    """The authenticated caller; 401 problem+json without credentials."""
    if principal is None:
        raise _unauthorised("authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    return principal


def require_roles(*roles: str):
    """A dependency admitting only callers with one of `roles`."""

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if principal.role not in roles:
            raise Problem(403, f"this needs the role {' or '.join(roles)}; you are {principal.role}",
                          type="forbidden-role", required_roles=list(roles))
        return principal

    return dependency


def ensure_covers(principal: Principal, code: str | None, what: str = "this unit") -> None:
    """403 problem+json unless `code` lies in the caller's jurisdiction, naming the jurisdiction needed."""
    if not principal.covers(code):
        raise Problem(403, f"{what} ({code}) lies outside your jurisdiction ({principal.jurisdiction_code})",
                      type="out-of-jurisdiction", required_jurisdiction=code,
                      your_jurisdiction=principal.jurisdiction_code)


OptionalUser = Annotated[Principal | None, Depends(get_optional_principal)]
CurrentUser = Annotated[Principal, Depends(get_principal)]
Reader = CurrentUser
Planner = Annotated[Principal, Depends(require_roles("planner", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
