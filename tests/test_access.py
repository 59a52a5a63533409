"""Access control: every route walked with every role, tokens and API keys refused when they should be, the login
flow with throttling and no user enumeration, the browser cookie, and the jurisdiction 403s."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import statistics
import time
import uuid

import jwt
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from sqlalchemy import text
from starlette.staticfiles import StaticFiles

from api.auth import (
    COOKIE_NAME,
    PUBLIC_ROUTES,
    AuditDep,
    Planner,
    ScopedPlanner,
    ScopedUser,
    ensure_covers,
    issue_token,
    iter_routes,
    route_access,
)
from api.problems import PROBLEM_MEDIA_TYPE
from geo.access import apikeys, throttle
from geo.access.scope import SCOPE_PARAMS
from geo.access.users import Principal, create_user, ensure_first_admin
from geo.settings import AuthSettings, get_settings
from geo.store.models import ApiKey, User
from tests.access_helpers import *  # noqa: F403 (the shared fixtures: audit_guard, world, engine)
from tests.access_helpers import client_with

ROLES = ("admin", "planner", "leader", "worker")


def _user(db_session, role: str, jurisdiction: str | None, name: str | None = None) -> User:
    user = create_user(db_session, name or f"{role}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, role, jurisdiction)
    db_session.flush()
    return user


def _bearer(user: User, **kwargs) -> dict:
    return {"Authorization": f"Bearer {issue_token(user, **kwargs)}"}


def _is_problem(response) -> bool:
    return response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE)


# ============================================================================================= the route walker

def _callers(db_session, world) -> dict[str, User | None]:
    """Every role in the home jurisdiction, and the jurisdiction-bound roles in another one."""
    return {
        "anonymous": None,
        "admin": _user(db_session, "admin", None),
        "planner": _user(db_session, "planner", world.street),
        "leader": _user(db_session, "leader", world.community),
        "worker": _user(db_session, "worker", world.grid),
        "planner@other": _user(db_session, "planner", world.other_street),
        "leader@other": _user(db_session, "leader", world.other_community),
        "worker@other": _user(db_session, "worker", world.other_grid),
    }


#: id parameter → the table its ids come from (the resolver in SCOPE_PARAMS finds the unit code)
_ID_TABLES = {"street_id": "streets", "community_id": "communities", "grid_id": "grids",
              "micro_grid_id": "micro_grids", "building_id": "buildings", "unit_id": "units",
              "compound_id": "compounds", "incident_id": "incidents", "assignment_id": "staff_assignments"}


def _fill_values(db_session, world, victim: User, victim_key: ApiKey) -> dict[str, str]:
    """A value for each parameter name the walker knows, inside the home grid where the data allows."""
    values = {"street_code": world.street, "community_code": world.community, "grid_code": world.grid,
              "code": world.grid, "username": victim.username, "key_id": str(victim_key.id), "format": "json"}
    micro = db_session.execute(text("SELECT code FROM micro_grids ORDER BY starts_with(code, :g) DESC, code "
                                    "LIMIT 1"), {"g": world.grid}).scalar()
    if micro:
        values["micro_grid_code"] = micro
    for param, table in _ID_TABLES.items():
        resolver = SCOPE_PARAMS[param].replace(":v", "t.id")
        # the innermost unit that holds one: the grid, else the community, the street, anything
        for prefix in (world.grid, world.community, world.street, ""):
            found = db_session.execute(
                text(f"SELECT t.id FROM {table} t WHERE starts_with(coalesce(({resolver}), ''), :p) "
                     "ORDER BY t.id LIMIT 1"), {"p": prefix}).scalar()
            if found is not None:
                values[param] = str(found)
                break
    return values


def _target_codes(db_session, params: dict[str, str]) -> list[str | None]:
    codes = []
    for name, value in params.items():
        sql = SCOPE_PARAMS.get(name, "absent")
        if sql == "absent":
            continue
        codes.append(value if sql is None else db_session.execute(text(sql), {"v": int(value)}).scalar())
    return codes


@pytest.fixture
def walk_client(engine, db_session):
    """A client whose requests each run in a savepoint rolled back afterwards, counting the audit rows they add."""
    from api.deps import session_dep
    from api.main import create_app

    application = create_app(engine)
    added: list[int] = []

    def _session():
        nested = db_session.begin_nested()
        before = db_session.execute(text("SELECT coalesce(max(id), 0) FROM audit_log")).scalar()
        try:
            yield db_session
            db_session.flush()
            added.append(db_session.execute(
                text("SELECT count(*) FROM audit_log WHERE id > :b"), {"b": before}).scalar())
        finally:
            if nested.is_active:
                nested.rollback()

    application.dependency_overrides[session_dep] = _session
    with TestClient(application, raise_server_exceptions=False) as c:
        c.audit_rows_added = added
        yield c


def test_every_route_declares_who_may_call_it(walk_client):
    """A route that neither depends on an auth dependency nor is listed in PUBLIC_ROUTES fails, named."""
    missing, contradictory, unscoped = [], [], []
    for method, path, route in iter_routes(walk_client.app):
        if method == "MOUNT":
            assert isinstance(getattr(route, "app", None), StaticFiles), f"mount {path} is not static files"
            continue
        rule = route_access(route, method)
        if rule is None:
            missing.append(f"{method} {path}")
        elif rule.public and rule.authenticated:
            contradictory.append(f"{method} {path}")
        elif rule.scoped and not rule.scope_params:
            unscoped.append(f"{method} {path}")
    assert not missing, ("routes without an access rule: use CurrentUser/Planner/Admin/ScopedUser/... or add "
                         f"them to api.auth.PUBLIC_ROUTES: {missing}")
    assert not contradictory, f"routes listed as public that still require credentials: {contradictory}"
    assert not unscoped, ("jurisdiction-scoped routes that declare no unit parameter (api.auth.SCOPE_PARAMS), so "
                          f"nothing would be checked: {unscoped}")
    known = {(m, p) for m, p, _ in iter_routes(walk_client.app)}
    assert known >= PUBLIC_ROUTES, f"PUBLIC_ROUTES names routes that do not exist: {PUBLIC_ROUTES - known}"
    schema_paths = set(walk_client.app.openapi()["paths"])
    assert schema_paths <= {p for _, p in known}


def test_walk_every_route_with_every_role(walk_client, db_session, world):
    """Each route × (no credentials, each role at home, each role in another jurisdiction) → 2xx / 401 / 403."""
    callers = _callers(db_session, world)
    victim = _user(db_session, "planner", world.street)
    victim_key, _ = apikeys.create_key(db_session, victim, "walker")
    db_session.flush()
    values = _fill_values(db_session, world, victim, victim_key)
    failures, placeholders, walked = [], set(), 0

    for method, path, route in iter_routes(walk_client.app):
        if method in ("MOUNT", "HEAD"):
            continue
        rule = route_access(route, method)
        assert rule is not None, f"{method} {path} has no access rule (see the test above)"
        names = re.findall(r"{([^}:]+)(?::[^}]*)?}", path)
        url = path
        for name in names:
            if name not in values:
                placeholders.add(f"{method} {path}: {{{name}}}")
            url = re.sub(r"{" + re.escape(name) + r"(?::[^}]*)?}", values.get(name, "1"), url)
        dependant = getattr(route, "dependant", None)
        query_names = {q.alias for q in _all_query_params(dependant)} if dependant else set()
        query = {n: values[n] for n in query_names if n in values and (rule.scoped or n in SCOPE_PARAMS)}
        used = {n: values[n] for n in names if n in values} | query
        codes = _target_codes(db_session, used) if rule.scoped else []

        for caller, user in callers.items():
            headers = _bearer(user) if user is not None else {}
            kwargs = {"json": {}} if method not in ("GET", "DELETE") else {}
            r = walk_client.request(method, url, params=query, headers=headers, **kwargs)
            walked += 1
            where = f"{method} {url} as {caller}: {r.status_code} {r.text[:160]}"
            if r.status_code >= 500:
                failures.append(f"server error: {where}")
                continue
            if r.status_code in (401, 403) and not _is_problem(r):
                failures.append(f"{r.status_code} without problem+json: {where}")
            if user is None:
                if not rule.public and r.status_code != 401:
                    failures.append(f"expected 401 without credentials: {where}")
                elif rule.public and r.status_code in (401, 403):
                    failures.append(f"public route refused: {where}")
                elif not rule.public and "Bearer" not in r.headers.get("www-authenticate", ""):
                    failures.append(f"401 without WWW-Authenticate: {where}")
                continue
            principal = Principal(user.username, user.role, user.jurisdiction_code)
            if r.status_code == 401:
                failures.append(f"valid token refused: {where}")
            elif not rule.admits(user.role):
                if r.status_code != 403 or r.json().get("type", "").split("/")[-1] != "forbidden-role":
                    failures.append(f"expected 403 forbidden-role for {user.role}: {where}")
            elif rule.scoped and not all(principal.covers(c) for c in codes):
                body = r.json() if _is_problem(r) else {}
                if r.status_code != 403 or "required_jurisdiction" not in body:
                    failures.append(f"expected 403 naming the jurisdiction needed: {where}")
            elif r.status_code == 403:
                # only a handler's own jurisdiction check may refuse here, and never an admin
                body = r.json() if _is_problem(r) else {}
                if user.role == "admin" or body.get("type", "").split("/")[-1] != "out-of-jurisdiction" \
                        or "required_jurisdiction" not in body:
                    failures.append(f"unexpected 403: {where}")
                elif caller in ("admin", "planner", "leader", "worker") and rule.scoped:
                    failures.append(f"403 although the target lies in the jurisdiction: {where}")
            if r.status_code < 400 and method not in ("GET", "HEAD", "OPTIONS") \
                    and walk_client.audit_rows_added and walk_client.audit_rows_added[-1] == 0:
                failures.append(f"write without an audit entry: {where}")

    print(f"walked {walked} calls; placeholder parameters: {sorted(placeholders)}")
    assert not failures, "\n".join(failures)


def _all_query_params(dependant):
    params = list(dependant.query_params)
    for sub in dependant.dependencies:
        params.extend(_all_query_params(sub))
    return params


def test_walker_fails_a_route_without_a_rule(engine, db_session):
    """The rule check itself: an unprotected, unlisted route is reported by route_access as having no rule."""
    from api.main import create_app

    application = create_app(engine)
    extra = APIRouter()

    @extra.get("/v1/forgotten")
    def forgotten() -> dict:
        return {"secret": 1}

    @extra.post("/v1/guarded/{grid_code}")
    def guarded(grid_code: str, principal: ScopedPlanner) -> dict:
        return {}

    @extra.get("/v1/misdeclared/{thing}")
    def misdeclared(thing: str, principal: ScopedUser) -> dict:
        return {}

    application.include_router(extra)
    rules = {(m, p): route_access(r, m) for m, p, r in iter_routes(application)}
    assert rules[("GET", "/v1/forgotten")] is None
    assert rules[("GET", "/v1/misdeclared/{thing}")].scoped and rules[("GET", "/v1/misdeclared/{thing}")] \
        .scope_params == ()
    guarded_rule = rules[("POST", "/v1/guarded/{grid_code}")]
    assert guarded_rule.scoped and guarded_rule.roles == {"planner", "admin"} and not guarded_rule.public
    assert guarded_rule.scope_params == ("grid_code",)


# ======================================================================================= jurisdiction 403s

@pytest.fixture
def scoped_client(engine, db_session):
    """The app plus test routes using each kind of dependency."""
    extra = APIRouter()

    @extra.get("/t/grids/{grid_code}")
    def read_grid(grid_code: str, principal: ScopedUser) -> dict:
        return {"grid": grid_code}

    @extra.post("/t/buildings/{building_id}")
    def write_building(building_id: int, principal: ScopedPlanner, audit: AuditDep) -> dict:
        audit("building.touch", "building", building_id)
        return {"ok": True}

    @extra.get("/t/incidents/{incident_id}")
    def read_incident(incident_id: int, principal: ScopedUser) -> dict:
        return {"incident": incident_id}

    @extra.get("/t/list")
    def listing(principal: ScopedUser, grid_code: str | None = None) -> dict:
        return {"filtered_by": grid_code}

    @extra.post("/t/points")
    def write_point(code: str, principal: Planner) -> dict:
        ensure_covers(principal, code, f"the point's grid {code}")
        return {"ok": True}

    yield from client_with(engine, db_session, extra)


def test_out_of_jurisdiction_is_a_403_naming_the_jurisdiction(scoped_client, db_session, world):
    home = _user(db_session, "worker", world.grid)
    other = _user(db_session, "planner", world.other_street)
    ok = scoped_client.get(f"/t/grids/{world.grid}", headers=_bearer(home))
    assert ok.status_code == 200 and ok.json() == {"grid": world.grid}
    r = scoped_client.get(f"/t/grids/{world.grid}", headers=_bearer(other))
    assert r.status_code == 403 and _is_problem(r)
    body = r.json()
    assert body["type"].endswith("/out-of-jurisdiction")
    assert body["required_jurisdiction"] == world.grid and body["your_jurisdiction"] == world.other_street
    assert world.grid in body["detail"] and "grid" not in body  # the answer carries no data
    # an optional unit in the query is checked when given; left out, the handler filters
    assert scoped_client.get("/t/list", headers=_bearer(other)).status_code == 200
    r = scoped_client.get("/t/list", params={"grid_code": world.grid}, headers=_bearer(other))
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == world.grid
    # the handler's own check (target in the body/query) answers the same way
    r = scoped_client.post("/t/points", params={"code": world.grid}, headers=_bearer(other))
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == world.grid


def test_scoped_ids_resolve_to_their_unit(scoped_client, db_session, world):
    building = db_session.execute(text(
        f"SELECT t.id, ({SCOPE_PARAMS['building_id'].replace(':v', 't.id')}) FROM buildings t "
        "ORDER BY t.id LIMIT 1")).first()
    assert building is not None and building[1] is not None
    code = building[1]
    inside = _user(db_session, "planner", code[:9])
    outsider_street = world.other_street if not code.startswith(world.other_street) else world.street
    outside = _user(db_session, "planner", outsider_street)
    leader = _user(db_session, "leader", code[:12])
    assert scoped_client.post(f"/t/buildings/{building[0]}", headers=_bearer(inside)).status_code == 200
    r = scoped_client.post(f"/t/buildings/{building[0]}", headers=_bearer(outside))
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == code
    assert scoped_client.post(f"/t/buildings/{building[0]}", headers=_bearer(leader)).json()["type"].endswith(
        "/forbidden-role")  # a leader reads but does not edit
    assert scoped_client.post("/t/buildings/999999999", headers=_bearer(inside)).status_code == 404
    assert scoped_client.post("/t/buildings/99999999999999999999", headers=_bearer(inside)).status_code == 404
    assert scoped_client.post("/t/buildings/abc", headers=_bearer(inside)).status_code == 422
    incident = db_session.execute(text("SELECT id FROM incidents ORDER BY id LIMIT 1")).scalar()
    if incident is not None:
        admin = _user(db_session, "admin", None)
        assert scoped_client.get(f"/t/incidents/{incident}", headers=_bearer(admin)).status_code == 200


def test_principal_covers_by_code_prefix():
    worker = Principal("w", "worker", "320505001001001")
    assert worker.covers("320505001001001") and worker.covers("32050500100100101")
    assert not worker.covers("320505001001") and not worker.covers("320505001001002") and not worker.covers(None)
    assert worker.overlaps("320505001001") and not worker.overlaps("320505002")
    admin = Principal("a", "admin", None)
    assert admin.covers(None) and admin.covers("999999999")


# ================================================================================ tokens: refused when due

def test_expired_tampered_and_wrong_kind_tokens_are_refused(client, db_session, world):
    user = _user(db_session, "planner", world.street)
    assert client.get("/v1/auth/me", headers=_bearer(user)).json()["username"] == user.username
    token = issue_token(user)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged_payload = base64.urlsafe_b64encode(
        json.dumps({**claims, "sub": "admin"}).encode()).rstrip(b"=").decode()
    bad_tokens = {
        "expired": issue_token(user, lifetime=dt.timedelta(seconds=-5)),
        "payload changed": f"{header}.{forged_payload}.{signature}",
        "signature changed": f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}",
        "other key": jwt.encode(claims, "not-the-server-secret", algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "refresh as access": issue_token(user, kind="refresh"),
        "garbage": "not-a-token",
    }
    for what, bad in bad_tokens.items():
        r = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, what
        assert _is_problem(r) and r.headers["www-authenticate"] == "Bearer", what
    assert "expired" in client.get("/v1/auth/me", headers={
        "Authorization": f"Bearer {bad_tokens['expired']}"}).json()["detail"]


def test_disabled_user_live_token_stops_working(client, db_session, world, admin_headers):
    user = _user(db_session, "worker", world.grid)
    headers = _bearer(user)
    refresh = issue_token(user, kind="refresh")
    assert client.get("/v1/auth/me", headers=headers).status_code == 200
    r = client.patch(f"/v1/users/{user.username}", json={"disabled": True}, headers=admin_headers)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    assert client.post("/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    # re-enabling does not revive the old token: the user logs in again
    client.patch(f"/v1/users/{user.username}", json={"disabled": False}, headers=admin_headers)
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    assert client.get("/v1/auth/me", headers=_bearer(user)).status_code == 200


def test_revoked_and_reset_tokens_are_refused(client, db_session, world, admin_headers):
    user = _user(db_session, "leader", world.community)
    headers = _bearer(user)
    assert client.post(f"/v1/users/{user.username}/revoke-tokens", headers=admin_headers).status_code == 204
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    headers = _bearer(user)
    r = client.post(f"/v1/users/{user.username}/reset-password", json={}, headers=admin_headers)
    assert r.status_code == 200 and len(r.json()["password"]) >= 12
    assert client.get("/v1/auth/me", headers=headers).status_code == 401
    new_password = r.json()["password"]
    login = client.post("/v1/auth/token", data={"username": user.username, "password": new_password})
    assert login.status_code == 200
    # logout everywhere revokes the caller's own tokens
    fresh = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert client.post("/v1/auth/logout", params={"everywhere": True}, headers=fresh).status_code == 204
    assert client.get("/v1/auth/me", headers=fresh).status_code == 401


# ================================================================================================ API keys

def test_api_keys_shown_once_hashed_and_revocable(client, db_session, world, admin_headers):
    owner = _user(db_session, "planner", world.street)
    r = client.post("/v1/keys", json={"username": owner.username, "name": "hotline bridge"}, headers=admin_headers)
    assert r.status_code == 201
    created = r.json()
    key = created["key"]
    assert key.startswith(f"ga_{created['prefix']}_")
    row = db_session.get(ApiKey, created["id"])
    assert key.split("_", 2)[2] not in row.key_hash and row.key_hash.startswith("sha256$")
    listed = client.get("/v1/keys", params={"username": owner.username}, headers=admin_headers).json()
    assert [k["prefix"] for k in listed] == [created["prefix"]] and all("key" not in k for k in listed)

    me = client.get("/v1/auth/me", headers={"X-API-Key": key})
    assert me.status_code == 200 and me.json()["username"] == owner.username
    assert me.json()["via"] == f"api_key:{created['prefix']}"
    # a key acts with its owner's role and jurisdiction
    assert client.get("/v1/users", headers={"X-API-Key": key}).status_code == 403

    secret = key.split("_", 2)[2]
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (tampered, f"ga_ZZZZZZZZ_{secret}", "ga_short", "", "Bearer " + key):
        if bad:
            assert client.get("/v1/auth/me", headers={"X-API-Key": bad}).status_code == 401, bad

    assert client.delete(f"/v1/keys/{created['id']}", headers=admin_headers).json()["revoked_at"]
    r = client.get("/v1/auth/me", headers={"X-API-Key": key})
    assert r.status_code == 401 and _is_problem(r)


def test_api_key_of_a_disabled_user_is_refused(client, db_session, world, admin_headers):
    owner = _user(db_session, "worker", world.grid)
    _, key = apikeys.create_key(db_session, owner, "sensor")
    db_session.flush()
    assert client.get("/v1/auth/me", headers={"X-API-Key": key}).status_code == 200
    client.patch(f"/v1/users/{owner.username}", json={"disabled": True}, headers=admin_headers)
    assert client.get("/v1/auth/me", headers={"X-API-Key": key}).status_code == 401


# ================================================================================ login, refresh, throttling

@pytest.fixture
def auth_settings(monkeypatch):
    """Throttling limits for a test: set GRIDATLAS_AUTH_* and clear the cached settings."""

    def _set(**values):
        for key, value in values.items():
            monkeypatch.setenv(f"GRIDATLAS_AUTH_{key.upper()}", str(value))
        get_settings.cache_clear()
        return get_settings().auth

    yield _set
    monkeypatch.undo()
    get_settings.cache_clear()


def test_password_login_refresh_and_me(client, db_session, world):
    user = create_user(db_session, "li.planner", "correct horse battery", "planner", world.street)
    db_session.flush()
    r = client.post("/v1/auth/token", data={"username": "li.planner", "password": "correct horse battery",
                                            "grant_type": "password"})
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] > 0 and tokens["refresh_token"]
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert me["username"] == "li.planner" and me["jurisdiction_code"] == world.street
    assert me["jurisdiction_level"] == "street" and me["jurisdiction_name"]
    # a refresh token is not an access token, and yields a fresh access token
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}).status_code \
        == 401
    r = client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).status_code \
        == 200
    assert client.post("/v1/auth/refresh", json={"refresh_token": tokens["access_token"]}).status_code == 401
    actions = db_session.scalars(
        text("SELECT action FROM audit_log WHERE target_id = 'li.planner' ORDER BY id")).all()
    assert actions[-2:] == ["auth.login", "auth.refresh"]
    assert user.id


def test_no_user_enumeration(client, db_session, world, auth_settings):
    auth_settings(max_failures_per_pair=1000, max_failures_per_account=1000, max_failures_per_address=1000)
    create_user(db_session, "wang.worker", "a long enough password", "worker", world.grid)
    disabled = create_user(db_session, "gone.worker", "a long enough password", "worker", world.grid)
    disabled.disabled = True
    db_session.flush()

    def attempt(username, password):
        started = time.perf_counter()
        r = client.post("/v1/auth/token", data={"username": username, "password": password})
        return r, time.perf_counter() - started

    wrong, _ = attempt("wang.worker", "not the password")
    unknown, _ = attempt("nobody-here", "not the password")
    off, _ = attempt("gone.worker", "a long enough password")
    for r in (wrong, unknown, off):
        assert r.status_code == 401 and _is_problem(r)
    strip = lambda r: {k: v for k, v in r.json().items() if k != "instance"}  # noqa: E731
    assert strip(wrong) == strip(unknown) == strip(off)
    assert wrong.headers.get("www-authenticate") == unknown.headers.get("www-authenticate")
    # similar timing: both verify an Argon2 hash (medians of 7, within a factor of 2)
    t_wrong = statistics.median(attempt("wang.worker", f"nope{i}")[1] for i in range(7))
    t_unknown = statistics.median(attempt(f"ghost{i}", "nope")[1] for i in range(7))
    assert 0.5 < t_wrong / t_unknown < 2.0, (t_wrong, t_unknown)


def test_login_throttled_per_account_with_retry_after(client, db_session, world, auth_settings, caplog):
    # the delay starts at 5 minutes here, so the next request comes within it however slow the machine
    settings = auth_settings(max_failures_per_pair=3, max_failures_per_account=100, max_failures_per_address=100,
                             window_seconds=600, backoff_base_seconds=300)
    create_user(db_session, "zhao.leader", "the right password", "leader", world.community)
    db_session.flush()
    caplog.set_level(logging.WARNING, logger="gridatlas.auth")
    for _ in range(settings.max_failures_per_pair):
        assert client.post("/v1/auth/token", data={"username": "zhao.leader", "password": "wrong"}).status_code \
            == 401
    r = client.post("/v1/auth/token", data={"username": "zhao.leader", "password": "the right password"})
    assert r.status_code == 429 and _is_problem(r)
    assert 0 < int(r.headers["retry-after"]) <= 600
    # an unknown name is throttled exactly the same way (no enumeration through the throttle)
    for _ in range(3):
        client.post("/v1/auth/token", data={"username": "no-such-user", "password": "wrong"})
    ghost = client.post("/v1/auth/token", data={"username": "no-such-user", "password": "wrong"})
    assert ghost.status_code == 429
    # reported: logged and audited
    assert any("throttle tripped" in m for m in caplog.messages)
    assert any("throttled" in m and "zhao.leader" in m for m in caplog.messages)
    tripped = db_session.scalars(text(
        "SELECT target_id FROM audit_log WHERE action = 'auth.throttled'")).all()
    assert "zhao.leader" in tripped and "no-such-user" in tripped
    # other accounts are unaffected; after the window the account may try again
    other = create_user(db_session, "qian.worker", "another good password", "worker", world.grid)
    db_session.flush()
    assert client.post("/v1/auth/token", data={"username": other.username,
                                               "password": "another good password"}).status_code == 200
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=601)
    assert throttle.check(db_session, "zhao.leader", "testclient", now=later).allowed


def test_login_throttled_per_address(engine, db_session, world, auth_settings):
    auth_settings(max_failures_per_pair=100, max_failures_per_account=100, max_failures_per_address=4,
                  window_seconds=300, backoff_base_seconds=300)
    from api.deps import session_dep
    from api.main import create_app

    application = create_app(engine)

    def _session():
        yield db_session
        db_session.flush()

    application.dependency_overrides[session_dep] = _session
    create_user(db_session, "sun.planner", "a good long password", "planner", world.street)
    db_session.flush()
    with TestClient(application, client=("10.9.8.7", 4000)) as attacker, \
            TestClient(application, client=("10.1.1.1", 4000)) as colleague:
        for i in range(4):
            attacker.post("/v1/auth/token", data={"username": f"guess{i}", "password": "x"})
        r = attacker.post("/v1/auth/token", data={"username": "sun.planner", "password": "a good long password"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        ok = colleague.post("/v1/auth/token", data={"username": "sun.planner", "password": "a good long password"})
        assert ok.status_code == 200
    entry = db_session.scalars(
        text("SELECT after FROM audit_log WHERE action = 'auth.throttled' ORDER BY id DESC LIMIT 1")).first()
    assert entry["reason"] == "address" and entry["remote_addr"] == "10.9.8.7"


def test_throttle_forgets_failures_before_a_success(db_session):
    settings = AuthSettings(max_failures_per_pair=3, max_failures_per_account=1000, max_failures_per_address=1000,
                            window_seconds=900, backoff_base_seconds=60)
    now = dt.datetime(2025, 5, 1, 9, 0, tzinfo=dt.UTC)
    for i in range(2):
        throttle.record_attempt(db_session, "Zhou", "a", False, now + dt.timedelta(seconds=i), settings)
    throttle.record_attempt(db_session, "zhou", "a", True, now + dt.timedelta(seconds=5), settings)
    for i in range(2):
        v = throttle.record_attempt(db_session, "ZHOU", "a", False, now + dt.timedelta(seconds=10 + i), settings)
    assert v.allowed  # 2 failures since the success
    v = throttle.record_attempt(db_session, "zhou", "a", False, now + dt.timedelta(seconds=20), settings)
    assert not v.allowed and v.reason == "pair" and v.retry_after == 60
    assert throttle.check(db_session, "zhou", "b", now + dt.timedelta(seconds=21), settings).allowed  # other address
    assert throttle.check(db_session, "zhou", "a", now + dt.timedelta(seconds=81), settings).allowed  # delay over


# =================================================================================== the browser login page

def test_login_page_is_chinese_offline_and_sets_an_httponly_cookie(client, db_session, world):
    page = client.get("/login", params={"next": "/v1/auth/me"})
    assert page.status_code == 200 and "登录" in page.text and 'lang="zh-CN"' in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text), "the page must load nothing external"
    assert 'action="/v1/auth/token"' in page.text and 'value="/v1/auth/me"' in page.text

    create_user(db_session, "zhou.leader", "the leader password", "leader", world.community)
    db_session.flush()
    r = client.post("/v1/auth/token", data={"username": "zhou.leader", "password": "the leader password",
                                            "cookie": "true", "next": "/v1/auth/me"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/v1/auth/me"
    set_cookie = r.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE_NAME}=") and "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    me = client.get("/v1/auth/me", cookies={COOKIE_NAME: cookie})
    assert me.status_code == 200 and me.json()["via"] == "cookie"
    assert "已登录" in client.get("/login", cookies={COOKIE_NAME: cookie}).text

    # writes with the cookie: same-site allowed, cross-site refused
    cross = client.post("/v1/auth/logout", cookies={COOKIE_NAME: cookie}, headers={"Origin": "https://evil.example"})
    assert cross.status_code == 403 and _is_problem(cross)
    same = client.post("/v1/auth/logout", cookies={COOKIE_NAME: cookie},
                       headers={"Origin": "http://testserver"})
    assert same.status_code == 204 and f'{COOKIE_NAME}=""' in same.headers["set-cookie"]
    # logged out: the cookie's session is over, even for a copy of the cookie kept aside
    assert client.get("/v1/auth/me", cookies={COOKIE_NAME: cookie}).status_code == 401

    # a wrong password and an open redirect both land back on the login page
    bad = client.post("/v1/auth/token", data={"username": "zhou.leader", "password": "nope", "cookie": "true",
                                              "next": "https://evil.example/"}, follow_redirects=False)
    assert bad.status_code == 303 and bad.headers["location"].startswith("/login?error=invalid")
    assert "evil" not in bad.headers["location"]
    assert "用户名或密码不正确" in client.get(bad.headers["location"]).text


def test_browser_navigation_without_session_goes_to_login(client):
    r = client.get("/v1/auth/me?x=1", headers={"Accept": "text/html,application/xhtml+xml"},
                   follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fv1%2Fauth%2Fme%3Fx%3D1"
    # an expired cookie counts as no session
    assert client.get("/v1/auth/me", cookies={COOKIE_NAME: "stale"}).status_code == 401


# ========================================================================== users API and the first admin

def test_user_administration(client, db_session, world, admin_headers):
    r = client.post("/v1/users", json={"username": "ma.worker", "role": "worker", "jurisdiction_code": world.grid},
                    headers=admin_headers)
    assert r.status_code == 201 and r.json()["password"] and r.json()["jurisdiction_level"] == "grid"
    assert client.post("/v1/auth/token", data={"username": "ma.worker",
                                               "password": r.json()["password"]}).status_code == 200
    assert client.post("/v1/users", json={"username": "ma.worker", "role": "worker",
                                          "jurisdiction_code": world.grid}, headers=admin_headers).status_code == 409
    for bad in ({"username": "x1", "role": "planner"},
                {"username": "x2", "role": "planner", "jurisdiction_code": "999999999"},
                {"username": "x3", "role": "chief", "jurisdiction_code": world.street},
                {"username": "x4", "role": "leader", "jurisdiction_code": world.community, "password": "short"}):
        assert client.post("/v1/users", json=bad, headers=admin_headers).status_code == 422, bad
    listed = client.get("/v1/users", params={"within": world.street}, headers=admin_headers).json()
    assert "ma.worker" in {u["username"] for u in listed} and all("password_hash" not in u for u in listed)
    r = client.patch("/v1/users/ma.worker", json={"role": "leader", "jurisdiction_code": world.community},
                     headers=admin_headers)
    assert r.status_code == 200 and r.json()["role"] == "leader"
    assert client.get("/v1/users/nobody", headers=admin_headers).status_code == 404


def test_the_last_admin_cannot_be_disabled(client, db_session):
    admins = db_session.scalars(text("SELECT username FROM users WHERE role = 'admin' AND NOT disabled")).all()
    me = _user(db_session, "admin", None)
    headers = _bearer(me)
    for name in admins:  # leave `me` as the only active admin
        client.patch(f"/v1/users/{name}", json={"disabled": True}, headers=headers)
    r = client.patch(f"/v1/users/{me.username}", json={"disabled": True}, headers=headers)
    assert r.status_code == 409 and "last active admin" in r.json()["detail"]


def test_ensure_first_admin_once_with_a_random_password(migrated_engine):
    from geo.access.users import authenticate
    from geo.store.db import session_scope

    first = ensure_first_admin(migrated_engine)
    assert first is not None and first[0] == "admin" and len(first[1]) >= 16
    assert ensure_first_admin(migrated_engine) is None
    with session_scope(migrated_engine) as session:
        assert authenticate(session, "admin", first[1]).role == "admin"
        assert session.scalar(text("SELECT action FROM audit_log")) == "user.create"


@pytest.mark.browser
def test_browser_login_flow_offline(migrated_engine, live_server, page_offline):
    """Headless Chromium, internet cut off: a protected page sends to /login, the form logs in, the cookie is
    HttpOnly and the page then opens."""
    from api.main import create_app
    from geo.store.db import session_scope
    from tests.access_helpers import load_mini_district
    from tests.browser import screenshot

    load_mini_district(migrated_engine)
    with session_scope(migrated_engine) as session:
        create_user(session, "browser.leader", "a browser password", "leader", "320505001001")
    base = live_server(create_app(migrated_engine))
    result = page_offline(f"{base}/v1/auth/me")
    page = result.page
    assert page.url.startswith(f"{base}/login?next=") and "登录" in page.title()
    screenshot(page, "login_page")
    page.fill("#username", "browser.leader")
    page.fill("#password", "wrong password")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "用户名或密码不正确" in page.content()
    page.fill("#username", "browser.leader")
    page.fill("#password", "a browser password")
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert page.url == f"{base}/v1/auth/me"
    me = json.loads(page.inner_text("body"))
    assert me["username"] == "browser.leader" and me["via"] == "cookie"
    assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read the session
    assert not result.external_requests and not result.page_errors
