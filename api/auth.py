"""Authentication, authorisation and auditing dependencies used by every router.

Who may call a route is declared by the dependencies it uses, nothing else:

- no credentials at all: only the (method, path) pairs in `PUBLIC_ROUTES`;
- `CurrentUser` (alias `Reader`): any signed-in role;  `Planner`, `Admin`, `require_roles(...)`: those roles;
- `ScopedUser`, `ScopedPlanner`, `scoped(*roles)`: those roles AND every unit the request names in its path or
  query (a parameter listed in `geo.access.scope.SCOPE_PARAMS`, e.g. ``{grid_code}``, ``{building_id}``,
  ``{incident_id}``) must lie in the caller's jurisdiction, else 403 problem+json naming the jurisdiction needed;
- targets only known inside the handler (a point in the body, rows of a list) are checked there with
  `ensure_covers(principal, code)` (i.e. `Principal.ensure_covers`) or filtered with `principal.code_filter(column)`.

`route_access(route, method)` reads that rule back; tests/test_access.py walks every route with it, so a route
without a rule fails the test. Writes are audited through `AuditDep`; a write request that succeeded without an
explicit entry still gets one from the principal dependency (see `_principal_context`).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jwt
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session

from api.deps import SessionDep
from api.problems import Problem
from geo.access import audit, sessions
from geo.access.apikeys import principal_for_key
from geo.access.scope import SCOPE_PARAMS, unit_code
from geo.access.users import Principal, principal_of, user_for_token
from geo.errors import DomainError
from geo.settings import Settings, get_settings
from geo.store.models import User

log = logging.getLogger("gridatlas.auth")

#: The only routes anyone may call without credentials (method, path template). Keep it short.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/favicon.ico"),
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/auth/device"),
        ("GET", "/login"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/locate"),
        ("GET", "/v1/locate/outlines"),
        ("GET", "/m"),
        ("GET", "/m/sw.js"),
        ("GET", "/open311/v2/discovery.{format}"),
        ("GET", "/open311/v2/services.{format}"),
        ("GET", "/open311/v2/services/{service_code}.{format}"),
    }
)

ALGORITHM = "HS256"
ISSUER = "gridatlas"
#: The browser session cookie set by the login page (HttpOnly: scripts cannot read it).
COOKIE_NAME = "gridatlas_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOGIN_PATH = "/login"

_oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False,
                               description="OAuth2 password flow: POST /v1/auth/token returns a bearer token")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False,
                        description="Long-lived key for integrations (`gridatlas keys create`)")


# --------------------------------------------------------------------------------------------------- tokens

@lru_cache
def _signing_key(secret: str | None, var_dir: str) -> str:
    if secret:
        return secret
    path = Path(var_dir) / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def signing_key(settings: Settings | None = None) -> str:
    """The JWT signing secret: GRIDATLAS_JWT_SECRET, else a random one kept in var/jwt_secret (mode 0600)."""
    settings = settings or get_settings()
    return _signing_key(settings.jwt_secret, str(settings.var_dir))


def token_lifetime(kind: str, settings: Settings | None = None) -> dt.timedelta:
    """How long a fresh access or refresh token lives (GRIDATLAS_ACCESS_TOKEN_MINUTES / _REFRESH_TOKEN_DAYS)."""
    settings = settings or get_settings()
    return (dt.timedelta(minutes=settings.access_token_minutes) if kind == "access"
            else dt.timedelta(days=settings.refresh_token_days))


def issue_token(user: User, kind: str = "access", settings: Settings | None = None,
                lifetime: dt.timedelta | None = None, family: str | None = None, jti: str | None = None) -> str:
    """A signed token for a user: short-lived access, or longer-lived refresh; `family` names the login session
    (`geo.access.sessions`) it belongs to, which logout or a reused refresh token revokes."""
    if kind not in ("access", "refresh"):
        raise ValueError(f"unknown token kind {kind!r}")
    settings = settings or get_settings()
    now = dt.datetime.now(dt.UTC)
    life = lifetime if lifetime is not None else token_lifetime(kind, settings)
    claims = {"sub": user.username, "kind": kind, "tv": user.token_version or 0, "iss": ISSUER,
              "iat": now, "exp": now + life, "jti": jti or secrets.token_urlsafe(9)}
    if family:
        claims["fam"] = family
    return jwt.encode(claims, signing_key(settings), algorithm=ALGORITHM)


def unauthorised(detail: str) -> Problem:
    """A 401 problem asking for bearer credentials."""
    return Problem(401, detail, type="unauthorised", headers={"WWW-Authenticate": "Bearer"})


_unauthorised = unauthorised  # older name


def decode_token(token: str, kind: str = "access") -> dict:
    """The claims of a valid token of this kind; Problem 401 otherwise."""
    try:
        claims = jwt.decode(token, signing_key(), algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"require": ["exp", "iat", "sub", "iss"]})
    except jwt.ExpiredSignatureError:
        raise unauthorised("the token has expired; log in again or use the refresh token") from None
    except jwt.InvalidTokenError:
        raise unauthorised("the token is not valid") from None
    if claims.get("kind") != kind:
        raise unauthorised(f"a {claims.get('kind')} token cannot be used here")
    return claims


def user_for_claims(session: Session, claims: dict) -> User:
    """The live user a token names; refused when disabled or when the token predates a reset or revocation."""
    user = user_for_token(session, claims["sub"], claims.get("tv"))
    if user is None:
        raise unauthorised("the token is no longer valid (revoked, password changed or user disabled)")
    family = claims.get("fam")
    if family is not None and (not isinstance(family, str) or not sessions.is_active(session, family)):
        raise unauthorised("the token is no longer valid (its session was logged out or revoked)")
    return user


# ------------------------------------------------------------------------------------------ request info

def client_address(request: Request) -> str | None:
    """The caller's address: the peer's, or the one a trusted proxy put in X-Forwarded-For (`api.proxies`
    rewrites the peer only when it is one of GRIDATLAS_TRUSTED_PROXIES)."""
    return request.client.host if request.client else None


def request_info(request: Request) -> audit.RequestInfo:
    """Method, path and client address of a request, for the audit log."""
    return audit.RequestInfo(request.method, request.url.path, client_address(request))


def is_https(request: Request) -> bool:
    """Whether the caller reached us over https (directly, or through a trusted proxy's X-Forwarded-Proto)."""
    return request.url.scheme == "https"


def route_template(request: Request) -> str:
    """The matched route's full path template (``/v1/grids/{code}``, router prefix included), or the raw path."""
    context = None
    try:  # FastAPI >= 0.16x keeps the prefixed route in an "effective context"; scope["route"] lacks the prefix
        from fastapi.routing import _get_scope_effective_route_context

        context = _get_scope_effective_route_context(request.scope)
    except ImportError:
        pass
    return (getattr(context, "path", None) or getattr(request.scope.get("route"), "path", None)
            or request.url.path)


def _same_origin(request: Request) -> bool:
    """False when a browser says the request comes from another site (Origin or Referer host differs)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return source is None
    # behind a reverse proxy the public host arrives as X-Forwarded-Host (a page cannot forge it cross-site)
    hosts = {request.headers.get("host", request.url.netloc), request.headers.get("x-forwarded-host")}
    return urlsplit(source).netloc in hosts


# ---------------------------------------------------------------------------------- jurisdiction targets

@dataclass(frozen=True)
class Target:
    """A unit a request names: the parameter, its value, and the code of the unit (None = district-wide)."""

    param: str
    value: str
    code: str | None


def request_targets(session: Session, request: Request) -> list[Target]:
    """The units named by the request's path and query parameters (see SCOPE_PARAMS); 404 for unknown ids."""
    found = []
    params = {**request.query_params, **request.path_params}  # the path wins on a clash
    for name, sql in SCOPE_PARAMS.items():
        raw = params.get(name)
        if raw is None or raw == "":
            continue
        value = str(raw)
        if sql is not None and not value.isdigit():
            raise Problem(422, f"{name}: {value!r} is not an id", type="validation-error", title="Invalid request")
        found.append(Target(name, value, unit_code(session, name, value)))  # NotFound (404) for unknown ids
    return found


def ensure_covers(principal: Principal, code: str | None, what: str = "this unit") -> None:
    """403 problem+json (OutOfJurisdiction) unless `code` lies in the caller's jurisdiction, naming the one needed."""
    principal.ensure_covers(code, what)


# ------------------------------------------------------------------------------------------- principals

def authenticate_request(request: Request, session: Session, bearer: str | None,
                         api_key: str | None) -> Principal | None:
    """The caller named by an API key or bearer token (None without credentials); 401 problem when invalid."""
    if api_key:
        principal = principal_for_key(session, api_key)
        if principal is None:
            raise unauthorised("the API key is not valid (unknown, revoked, or its user is disabled)")
        return principal
    if bearer:
        claims = decode_token(bearer)
        principal = principal_of(user_for_claims(session, claims), via="token")
        request.state.token_claims = claims
        return principal
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        try:
            claims = decode_token(cookie)
            principal = principal_of(user_for_claims(session, claims), via="cookie")
        except Problem:
            return None  # a stale browser session counts as none: pages send the visitor to log in again
        request.state.token_claims = claims
        if request.method not in SAFE_METHODS and not _same_origin(request):
            raise Problem(403, "a cross-site request cannot use the browser session", type="cross-site-request")
        return principal
    return None


def _principal_context(
    request: Request,
    session: SessionDep,
    bearer: Annotated[str | None, Depends(_oauth2)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Iterator[Principal | None]:
    """Authenticate the caller; after a write that succeeded without an audit entry, record a fallback one."""
    principal = authenticate_request(request, session, bearer, api_key)
    request.state.principal = principal
    recorded = audit.recorded_count(session)
    yield principal
    # reached only when the endpoint returned normally; an exception skips this and rolls the write back
    if request.method not in SAFE_METHODS and audit.recorded_count(session) == recorded:
        Auditor(request, session, principal).record_fallback()


def get_optional_principal(
    principal: Annotated[Principal | None, Depends(_principal_context, scope="function")],
) -> Principal | None:
    """The caller when credentials are given (bearer JWT, X-API-Key or the login cookie), else None."""
    return principal


def get_principal(request: Request,
                  principal: Annotated[Principal | None, Depends(get_optional_principal)]) -> Principal:
    """The authenticated caller; 401 problem+json without credentials (a browser page is sent to /login)."""
    if principal is None:
        if request.method == "GET" and request.headers.get("accept", "").startswith("text/html"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise Problem(303, "log in first", type="login-required",
                          headers={"Location": f"{LOGIN_PATH}?next={quote(target, safe='')}"})
        raise unauthorised("authentication required: send 'Authorization: Bearer <token>' or 'X-API-Key'")
    return principal


def _check_role(principal: Principal, roles: frozenset[str] | None) -> None:
    if roles and principal.role not in roles:
        raise Problem(403, f"this needs the role {' or '.join(sorted(roles))}; you are {principal.role}",
                      type="forbidden-role", required_roles=sorted(roles), your_role=principal.role)


def _declare(dependency: Callable[..., Principal], name: str, roles: frozenset[str] | None,
             is_scoped: bool) -> Callable[..., Principal]:
    """Mark an access dependency with the rule `route_access` reads back (roles admitted, jurisdiction-scoped)."""
    dependency.__name__ = name
    # plain function attributes: vars() because a function type declares no such members
    vars(dependency).update(access_roles=roles, access_scoped=is_scoped)
    return dependency


def require_roles(*roles: str) -> Callable[..., Principal]:
    """A dependency admitting only callers with one of `roles`."""
    allowed = frozenset(roles)

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        _check_role(principal, allowed)
        return principal

    return _declare(dependency, f"require_{'_or_'.join(sorted(roles))}", allowed, False)


def scoped(*roles: str) -> Callable[..., Principal]:
    """A dependency admitting `roles` (all when none given) only for units of the request inside their jurisdiction."""
    allowed = frozenset(roles) or None

    def dependency(request: Request, session: SessionDep,
                   principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        _check_role(principal, allowed)
        # a request naming no unit (an optional query parameter left out) passes: the handler filters its rows
        # with principal.code_filter; tests/test_access.py checks each scoped route declares such a parameter
        for target in request_targets(session, request):
            principal.ensure_covers(target.code, f"{target.param.replace('_', ' ')} {target.value}")
        return principal

    return _declare(dependency, f"scoped_{'_or_'.join(sorted(roles)) or 'any'}", allowed, True)


# ------------------------------------------------------------------------------------------------ audit

class Auditor:
    """Records audit entries for one request, filling who (the caller) and where (method, path, address)."""

    def __init__(self, request: Request, session: Session, principal: Principal | None):
        self.request = request
        self.session = session
        self.principal = principal

    @property
    def info(self) -> audit.RequestInfo:
        return request_info(self.request)

    def default_jurisdiction(self) -> str | None:
        """The first unit the request names, else the caller's own jurisdiction."""
        try:
            targets = request_targets(self.session, self.request)
        except (Problem, DomainError):  # a malformed or unknown id: the entry falls back to the caller's own
            targets = []
        for target in targets:  # a parameter called "code" may name something else (an incident class)
            if target.code is None or (target.code.isdigit() and 9 <= len(target.code) <= 18):
                return target.code
        return self.principal.jurisdiction_code if self.principal else None

    def __call__(self, action: str, target_type: str | None = None, target_id: Any = None,
                 jurisdiction_code: str | None = None, before: Any = None, after: Any = None,
                 actor: Any = None):
        """Append an entry, e.g. ``audit("grid.redraw", "grid", code, code, before=old, after=new)``."""
        return audit.record(
            self.session, actor if actor is not None else (self.principal or "anonymous"), action,
            target_type, target_id,
            jurisdiction_code if jurisdiction_code is not None else self.default_jurisdiction(),
            before, after, self.info,
        )

    def record_fallback(self):
        """The entry for a write that recorded none itself: the route, its parameters, no before/after."""
        request = self.request
        return self(
            f"{request.method} {route_template(request)}",
            after={"path_params": dict(request.path_params), "query": dict(request.query_params),
                   "recorded_by": "fallback"},
        )


def get_auditor(request: Request, session: SessionDep,
                principal: Annotated[Principal | None, Depends(get_optional_principal)]) -> Auditor:
    """The request's auditor: `audit(action, target_type, target_id, jurisdiction_code, before, after)`."""
    return Auditor(request, session, principal)


OptionalUser = Annotated[Principal | None, Depends(get_optional_principal)]
CurrentUser = Annotated[Principal, Depends(get_principal)]
Reader = CurrentUser
Planner = Annotated[Principal, Depends(require_roles("planner", "admin"))]
Admin = Annotated[Principal, Depends(require_roles("admin"))]
ScopedUser = Annotated[Principal, Depends(scoped())]
ScopedPlanner = Annotated[Principal, Depends(scoped("planner", "admin"))]
AuditDep = Annotated[Auditor, Depends(get_auditor)]


# --------------------------------------------------------------------------------- declared access rules

@dataclass(frozen=True)
class AccessRule:
    """Who may call a route, as its dependencies declare it."""

    public: bool
    authenticated: bool
    roles: frozenset[str] | None  # None: every role
    scoped: bool
    #: the route's path and query parameters that name a unit (SCOPE_PARAMS), checked when scoped
    scope_params: tuple[str, ...] = ()

    def admits(self, role: str | None) -> bool:
        """Whether a caller with this role (None: no credentials) passes the role check."""
        if role is None:
            return self.public
        return self.public or not self.roles or role in self.roles


def _calls(dependant) -> list:
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(_calls(sub))
    return found


def _param_names(dependant) -> list[str]:
    names = [p.alias for p in (*dependant.path_params, *dependant.query_params)]
    for sub in dependant.dependencies:
        names.extend(_param_names(sub))
    return names


def iter_routes(app) -> Iterator[tuple[str, str, Any]]:
    """(method, full path template, route) for every route of the app, routers' prefixes included.

    Mounts (static files, sub-applications) come as method "MOUNT".
    """
    try:
        from fastapi.routing import iter_route_contexts

        routes = list(iter_route_contexts(app.routes))
    except ImportError:  # FastAPI before included routers kept their own context
        routes = list(app.routes)
    for route in routes:
        methods = getattr(route, "methods", None)
        if not methods:
            yield "MOUNT", getattr(route, "path", None) or "", route
            continue
        for method in sorted(methods):
            yield method, route.path or "", route


def _is_api_route(route) -> bool:
    return isinstance(getattr(route, "original_route", route), APIRoute)


def route_access(route, method: str) -> AccessRule | None:
    """The access rule of `method` on `route`; None when the route declares none (no auth, not public)."""
    path = getattr(route, "path", None)
    public = (method, path) in PUBLIC_ROUTES or (method == "HEAD" and ("GET", path) in PUBLIC_ROUTES)
    if not _is_api_route(route):
        return AccessRule(True, False, None, False) if public else None
    calls = _calls(route.dependant)
    authenticated = get_principal in calls or any(getattr(c, "access_authenticated", False) for c in calls)
    role_sets = [c.access_roles for c in calls if getattr(c, "access_roles", None)]
    roles = frozenset.intersection(*role_sets) if role_sets else None
    is_scoped = any(getattr(c, "access_scoped", False) for c in calls)
    if not public and not authenticated:
        return None
    names = set(_param_names(route.dependant)) | set(getattr(route, "param_convertors", {}) or {})
    return AccessRule(public, authenticated, roles, is_scoped, tuple(n for n in SCOPE_PARAMS if n in names))
