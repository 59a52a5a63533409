"""Authentication, authorisation and auditing dependencies used by every router.

Who may call a route is declared by the dependencies it uses, nothing else:

- no credentials at all: only the (method, path) pairs in `PUBLIC_ROUTES`;
- `CurrentUser` (alias `Reader`): any signed-in role;  `Planner`, `Admin`, `require_roles(...)`: those roles;
- `ScopedUser`, `ScopedPlanner`, `scoped(*roles)`: those roles AND every unit the request names in its path or
  query (a parameter listed in `SCOPE_PARAMS`, e.g. ``{grid_code}``, ``{building_id}``, ``{incident_id}``)
  must lie in the caller's jurisdiction, else 403 problem+json naming the jurisdiction needed;
- targets only known inside the handler (a point in the body, rows of a list) are checked there with
  `ensure_covers(principal, code)` or filtered with `principal.code_filter(column)`.

`route_access(route, method)` reads that rule back; tests/test_access.py walks every route with it, so a route
without a rule fails the test. Writes are audited through `AuditDep`; a write request that succeeded without an
explicit entry still gets one from the principal dependency (see `_principal_context`).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import jwt
from fastapi import Depends, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from api.deps import SessionDep
from api.problems import Problem
from geo.access import audit
from geo.store.models import User
from geo.settings import Settings, get_settings
from geo.access.users import Principal, principal_of

log = logging.getLogger("gridatlas.auth")

#: The only routes anyone may call without credentials (method, path template). Keep it short.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/favicon.ico"),
        ("POST", "/v1/auth/token"),
        ("POST", "/v1/auth/refresh"),
        ("GET", "/login"),
        ("GET", "/docs"),
        ("GET", "/openapi.json"),
        ("GET", "/v1/locate"),
        ("GET", "/v1/locate/outlines"),
        ("GET", "/m"),
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
    from pathlib import Path

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
                lifetime: dt.timedelta | None = None) -> str:
    """A signed token for a user: short-lived access, or longer-lived refresh."""
    if kind not in ("access", "refresh"):
        raise ValueError(f"unknown token kind {kind!r}")
    settings = settings or get_settings()
    now = dt.datetime.now(dt.timezone.utc)
    life = lifetime if lifetime is not None else token_lifetime(kind, settings)
    claims = {"sub": user.username, "kind": kind, "tv": user.token_version or 0, "iss": ISSUER,
              "iat": now, "exp": now + life, "jti": secrets.token_urlsafe(9)}
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
        raise unauthorised("the token has expired; log in again or use the refresh token")
    except jwt.InvalidTokenError:
        raise unauthorised("the token is not valid")
    if claims.get("kind") != kind:
        raise unauthorised(f"a {claims.get('kind')} token cannot be used here")
    return claims


def user_for_claims(session: Session, claims: dict) -> User:
    """The live user a token names; refused when disabled or when the token predates a reset or revocation."""
    user = session.scalar(select(User).where(User.username == claims["sub"]))
    if user is None or user.disabled or (user.token_version or 0) != claims.get("tv"):
        raise unauthorised("the token is no longer valid (revoked, password changed or user disabled)")
    return user


# ------------------------------------------------------------------------------------------ request info

def request_info(request: Request) -> audit.RequestInfo:
    """Method, path and client address of a request, for the audit log."""
    return audit.RequestInfo(request.method, request.url.path, request.client.host if request.client else None)


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

_BUILDING_CODE = """
    coalesce(
        (SELECT g.code FROM current_grids g
          WHERE ST_Covers(g.geom, ST_PointOnSurface(b.geom)) ORDER BY g.code LIMIT 1),
        (SELECT c.code FROM communities c WHERE c.id = b.community_id))
"""

#: Request parameters (path or query) that name a unit, and how to find the code whose jurisdiction contains it.
#: None: the value is itself a unit code. A query returning no row means the unit does not exist (404).
SCOPE_PARAMS: dict[str, str | None] = {
    "street_code": None,
    "community_code": None,
    "grid_code": None,
    "micro_grid_code": None,
    "code": None,
    "street_id": "SELECT code FROM streets WHERE id = :v",
    "community_id": "SELECT code FROM communities WHERE id = :v",
    "grid_id": "SELECT code FROM grids WHERE id = :v",
    "micro_grid_id": "SELECT code FROM micro_grids WHERE id = :v",
    "building_id": f"SELECT {_BUILDING_CODE} FROM buildings b WHERE b.id = :v",
    "unit_id": f"SELECT {_BUILDING_CODE} FROM units u JOIN buildings b ON b.id = u.building_id WHERE u.id = :v",
    "compound_id": "SELECT c.code FROM compounds k LEFT JOIN communities c ON c.id = k.community_id "
                   "WHERE k.id = :v",
    "incident_id": "SELECT coalesce(mg.code, g.code, c.code, s.code) FROM incidents i "
                   "LEFT JOIN micro_grids mg ON mg.id = i.micro_grid_id LEFT JOIN grids g ON g.id = i.grid_id "
                   "LEFT JOIN communities c ON c.id = i.community_id LEFT JOIN streets s ON s.id = i.street_id "
                   "WHERE i.id = :v",
    "assignment_id": f"SELECT coalesce(mg.code, g.code, (SELECT {_BUILDING_CODE} FROM buildings b "
                     "WHERE b.id = coalesce(a.building_id, u.building_id))) FROM staff_assignments a "
                     "LEFT JOIN micro_grids mg ON mg.id = a.micro_grid_id LEFT JOIN grids g ON g.id = a.grid_id "
                     "LEFT JOIN units u ON u.id = a.unit_id WHERE a.id = :v",
}


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
        value = params.get(name)
        if value is None or value == "":
            continue
        value = str(value)
        if sql is None:
            found.append(Target(name, value, value))
            continue
        if not value.isdigit():
            raise Problem(422, f"{name}: {value!r} is not an id", type="validation-error", title="Invalid request")
        # ids beyond the integer range cannot exist (and would make the query fail)
        row = session.execute(text(sql), {"v": int(value)}).first() if int(value) < 2**31 else None
        if row is None:
            raise Problem(404, f"there is no {name.removesuffix('_id').replace('_', ' ')} {value}",
                          type="not-found")
        found.append(Target(name, value, row[0]))
    return found


def ensure_covers(principal: Principal, code: str | None, what: str = "this unit") -> None:
    """403 problem+json unless `code` lies in the caller's jurisdiction, naming the jurisdiction needed."""
    if not principal.covers(code):
        needed = code if code else "the whole district (admin)"
        raise Problem(403, f"{what} lies in {needed}, outside your jurisdiction ({principal.jurisdiction_code})",
                      type="out-of-jurisdiction", required_jurisdiction=code,
                      your_jurisdiction=principal.jurisdiction_code)


# ------------------------------------------------------------------------------------------- principals

def authenticate_request(request: Request, session: Session, bearer: str | None, api_key: str | None) -> Principal | None:
    """The caller named by an API key or bearer token (None without credentials); 401 problem when invalid."""
    if api_key:
        from geo.access.apikeys import principal_for_key  # API keys live in the domain layer

        principal = principal_for_key(session, api_key)
        if principal is None:
            raise unauthorised("the API key is not valid (unknown, revoked, or its user is disabled)")
        return principal
    if bearer:
        return principal_of(user_for_claims(session, decode_token(bearer)), via="token")
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        try:
            principal = principal_of(user_for_claims(session, decode_token(cookie)), via="cookie")
        except Problem:
            return None  # a stale browser session counts as none: pages send the visitor to log in again
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


def require_roles(*roles: str):
    """A dependency admitting only callers with one of `roles`."""
    allowed = frozenset(roles)

    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        _check_role(principal, allowed)
        return principal

    dependency.access_roles = allowed
    dependency.__name__ = f"require_{'_or_'.join(sorted(roles))}"
    return dependency


def scoped(*roles: str):
    """A dependency admitting `roles` (all when none given) only for units of the request inside their jurisdiction."""
    allowed = frozenset(roles) or None

    def dependency(request: Request, session: SessionDep,
                   principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        _check_role(principal, allowed)
        # a request naming no unit (an optional query parameter left out) passes: the handler filters its rows
        # with principal.code_filter; tests/test_access.py checks each scoped route declares such a parameter
        for target in request_targets(session, request):
            ensure_covers(principal, target.code, f"{target.param.replace('_', ' ')} {target.value}")
        return principal

    dependency.access_roles = allowed
    dependency.access_scoped = True
    dependency.__name__ = f"scoped_{'_or_'.join(sorted(roles)) or 'any'}"
    return dependency


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
        except Problem:
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
            yield method, route.path, route


def _is_api_route(route) -> bool:
    return isinstance(getattr(route, "original_route", route), APIRoute)


def route_access(route, method: str) -> AccessRule | None:
    """The access rule of `method` on `route`; None when the route declares none (no auth, not public)."""
    path = getattr(route, "path", None)
    public = (method, path) in PUBLIC_ROUTES or (method == "HEAD" and ("GET", path) in PUBLIC_ROUTES)
    if not _is_api_route(route):
        return AccessRule(True, False, None, False) if public else None
    calls = _calls(route.dependant)
    authenticated = get_principal in calls
    role_sets = [c.access_roles for c in calls if getattr(c, "access_roles", None)]
    roles = frozenset.intersection(*role_sets) if role_sets else None
    is_scoped = any(getattr(c, "access_scoped", False) for c in calls)
    if not public and not authenticated:
        return None
    names = set(_param_names(route.dependant)) | set(getattr(route, "param_convertors", {}) or {})
    return AccessRule(public, authenticated, roles, is_scoped, tuple(n for n in SCOPE_PARAMS if n in names))
