"""The audit log: explicit entries and the fallback for writes that record none, append-only storage, the read
API scoped by jurisdiction, and the CLI's entries."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest
from fastapi import APIRouter
from shapely.geometry import box
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from api.auth import (
    SAFE_METHODS,
    AuditDep,
    OptionalUser,
    ScopedPlanner,
    _calls,
    get_optional_principal,
    issue_token,
    iter_routes,
)
from geo.access import audit
from geo.access.users import Principal, create_user
from geo.store.models import AuditEntry, User
from tests.access_helpers import *  # noqa: F403 (the shared fixtures: audit_guard, world, engine)
from tests.access_helpers import client_with, load_mini_district

#: Public writes (no principal dependency, hence no fallback): each records its entries itself.
SELF_AUDITED_PUBLIC_WRITES = {("POST", "/v1/auth/token"), ("POST", "/v1/auth/refresh"), ("POST", "/v1/auth/device")}


def _bearer(db_session, role: str, jurisdiction: str | None) -> dict:
    user = create_user(db_session, f"{role}-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex, role, jurisdiction)
    db_session.flush()
    return {"Authorization": f"Bearer {issue_token(user)}"}


def _rows(db_session, since_id: int) -> list[AuditEntry]:
    return list(db_session.scalars(select(AuditEntry).where(AuditEntry.id > since_id).order_by(AuditEntry.id)))


def _last_id(db_session) -> int:
    return db_session.execute(text("SELECT coalesce(max(id), 0) FROM audit_log")).scalar()


# ============================================================================================ recording

def test_record_fills_who_where_and_serialises_before_after(db_session, world):
    start = _last_id(db_session)
    planner = Principal("liu", "planner", world.street, via="api_key:AbCd1234")
    before = {"geom": box(120.6, 31.3, 120.61, 31.31), "households": 420, "since": dt.date(2025, 1, 1),
              "ratio": decimal.Decimal("0.25")}
    entry = audit.record(db_session, planner, "grid.redraw", "grid", world.grid, world.grid, before,
                         {"households": 380}, audit.RequestInfo("POST", f"/v1/grids/{world.grid}/redraw", "10.0.0.8"))
    assert entry.id > start
    db_session.expire(entry)
    assert entry.actor == "liu [key AbCd1234]" and entry.action == "grid.redraw"
    assert (entry.method, entry.path, entry.remote_addr) == ("POST", f"/v1/grids/{world.grid}/redraw", "10.0.0.8")
    assert entry.before["geom"]["type"] == "Polygon" and entry.before["since"] == "2025-01-01"
    assert entry.before["ratio"] == 0.25 and entry.after == {"households": 380}
    assert entry.jurisdiction_code == world.grid and entry.at is not None
    # an ORM row is snapshotted without its secrets; no before/after is SQL NULL, not JSON null
    user = create_user(db_session, "snap", "a password long enough", "worker", world.grid)
    snap = audit.snapshot(user)
    assert snap["username"] == "snap" and "password_hash" not in snap
    bare = audit.record(db_session, "system", "noop")
    assert db_session.execute(text("SELECT before IS NULL AND after IS NULL FROM audit_log WHERE id = :i"),
                              {"i": bare.id}).scalar()


def test_audit_log_is_append_only_in_the_database(db_session):
    entry = audit.record(db_session, "system", "test.entry")
    for statement in (f"UPDATE audit_log SET action = 'forged' WHERE id = {entry.id}",
                      f"DELETE FROM audit_log WHERE id = {entry.id}",
                      "TRUNCATE audit_log"):
        savepoint = db_session.begin_nested()
        with pytest.raises(DBAPIError, match="append-only|permission denied"):
            db_session.execute(text(statement))
        savepoint.rollback()
    assert db_session.execute(text("SELECT action FROM audit_log WHERE id = :i"), {"i": entry.id}).scalar() \
        == "test.entry"


def test_audit_log_cannot_be_changed_through_the_api(client, db_session, admin_headers):
    entry = audit.record(db_session, "system", "test.entry")
    count = db_session.execute(text("SELECT count(*) FROM audit_log")).scalar()
    audit_routes = [(m, p) for m, p, _ in iter_routes(client.app) if p.startswith("/v1/audit")]
    assert audit_routes == [("GET", "/v1/audit")], audit_routes
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.request(method, "/v1/audit", headers=admin_headers).status_code == 405
        assert client.request(method, f"/v1/audit/{entry.id}", headers=admin_headers).status_code in (404, 405)
    assert db_session.execute(text("SELECT count(*) FROM audit_log")).scalar() == count
    assert db_session.execute(text("SELECT action FROM audit_log WHERE id = :i"), {"i": entry.id}).scalar() \
        == "test.entry"


# ================================================================================= explicit and fallback

@pytest.fixture
def audit_client(engine, db_session):
    """The app plus write routes that audit, forget to, fail, or are public."""
    extra = APIRouter()

    @extra.post("/t/grids/{grid_code}/forgetful")
    def forgetful(grid_code: str, principal: ScopedPlanner) -> dict:
        return {"ok": True}

    @extra.post("/t/grids/{grid_code}/careful")
    def careful(grid_code: str, principal: ScopedPlanner, audit_entry: AuditDep) -> dict:
        audit_entry("grid.touch", "grid", grid_code, before={"n": 1}, after={"n": 2})
        return {"ok": True}

    @extra.post("/t/grids/{grid_code}/failing")
    def failing(grid_code: str, principal: ScopedPlanner) -> dict:
        raise ValueError("boom")

    @extra.get("/t/grids/{grid_code}/read")
    def read(grid_code: str, principal: ScopedPlanner) -> dict:
        return {"ok": True}

    @extra.post("/t/public-report")
    def public_report(principal: OptionalUser) -> dict:
        return {"ok": True}

    yield from client_with(engine, db_session, extra)


def test_fallback_entry_for_a_write_that_recorded_none(audit_client, db_session, world):
    headers = _bearer(db_session, "planner", world.street)
    start = _last_id(db_session)
    assert audit_client.post(f"/t/grids/{world.grid}/forgetful?x=1", headers=headers).status_code == 200
    rows = _rows(db_session, start)
    assert len(rows) == 1
    row = rows[0]
    assert row.action == "POST /t/grids/{grid_code}/forgetful" and row.method == "POST"
    assert row.path == f"/t/grids/{world.grid}/forgetful" and row.remote_addr == "testclient"
    assert row.actor.startswith("planner-") and row.jurisdiction_code == world.grid
    assert row.after == {"path_params": {"grid_code": world.grid}, "query": {"x": "1"}, "recorded_by": "fallback"}


def test_explicit_entry_is_not_doubled_and_failures_or_reads_leave_none(audit_client, db_session, world):
    headers = _bearer(db_session, "planner", world.street)
    start = _last_id(db_session)
    assert audit_client.post(f"/t/grids/{world.grid}/careful", headers=headers).status_code == 200
    rows = _rows(db_session, start)
    assert [(r.action, r.target_id, r.before, r.after) for r in rows] == \
        [("grid.touch", world.grid, {"n": 1}, {"n": 2})]
    start = _last_id(db_session)
    assert audit_client.post(f"/t/grids/{world.grid}/failing", headers=headers).status_code == 500
    assert audit_client.get(f"/t/grids/{world.grid}/read", headers=headers).status_code == 200
    other = _bearer(db_session, "planner", world.other_street)
    assert audit_client.post(f"/t/grids/{world.grid}/forgetful", headers=other).status_code == 403
    assert _rows(db_session, start) == []
    # a public write through the principal dependency is recorded too, without an actor
    assert audit_client.post("/t/public-report").status_code == 200
    rows = _rows(db_session, start)
    assert len(rows) == 1 and rows[0].actor == "anonymous" and rows[0].action == "POST /t/public-report"


def test_every_write_route_is_under_the_safety_net(client):
    """Each non-GET route either passes through the principal dependency (fallback entry) or audits itself."""
    uncovered = []
    for method, path, route in iter_routes(client.app):
        if method in SAFE_METHODS or method == "MOUNT":
            continue
        if get_optional_principal not in _calls(route.dependant) and (method, path) not in SELF_AUDITED_PUBLIC_WRITES:
            uncovered.append(f"{method} {path}")
    assert not uncovered, f"write routes neither authenticated nor self-audited: {uncovered}"


def test_user_changes_are_audited_with_before_and_after(client, db_session, world, admin_headers):
    start = _last_id(db_session)
    r = client.post("/v1/users", json={"username": "he.planner", "role": "planner", "jurisdiction_code": world.street},
                    headers=admin_headers)
    assert r.status_code == 201
    client.patch("/v1/users/he.planner", json={"disabled": True}, headers=admin_headers)
    client.patch("/v1/users/he.planner", json={"jurisdiction_code": world.community}, headers=admin_headers)
    rows = _rows(db_session, start)
    assert [r.action for r in rows] == ["user.create", "user.disable", "user.update"]
    assert rows[0].after["username"] == "he.planner" and "password" not in rows[0].after
    assert rows[1].before["disabled"] is False and rows[1].after["disabled"] is True
    assert rows[2].before["jurisdiction_code"] == world.street and rows[2].after["jurisdiction_code"] == \
        world.community
    assert all(r.method == "PATCH" for r in rows[1:]) and rows[0].path == "/v1/users"


# =============================================================================================== reading

def test_audit_api_scoped_to_the_planners_jurisdiction(client, db_session, world, admin_headers):
    home = audit.record(db_session, "x", "test.home", "grid", world.grid, world.grid)
    away = audit.record(db_session, "x", "test.away", "grid", world.other_grid, world.other_grid)
    unscoped = audit.record(db_session, "x", "test.unscoped")
    ids = {home.id, away.id, unscoped.id}

    def seen(headers, **params):
        r = client.get("/v1/audit", params={"action": "test.", "limit": 1000, **params}, headers=headers)
        assert r.status_code == 200, r.text
        return {item["id"] for item in r.json()["items"]} & ids

    assert seen(admin_headers) == ids
    assert seen(admin_headers, jurisdiction=world.street) == {home.id}
    planner = _bearer(db_session, "planner", world.street)
    assert seen(planner) == {home.id}
    assert seen(planner, jurisdiction=world.grid) == {home.id}
    r = client.get("/v1/audit", params={"jurisdiction": world.other_street}, headers=planner)
    assert r.status_code == 403 and r.json()["required_jurisdiction"] == world.other_street
    for role, code in (("leader", world.community), ("worker", world.grid)):
        r = client.get("/v1/audit", headers=_bearer(db_session, role, code))
        assert r.status_code == 403 and r.json()["type"].endswith("/forbidden-role")
    assert client.get("/v1/audit").status_code == 401


def test_audit_api_filters_and_pages(client, db_session, admin_headers):
    marker = f"page.{uuid.uuid4().hex[:6]}"
    made = [audit.record(db_session, "pager", f"{marker}.step", "thing", str(i)).id for i in range(5)]
    first = client.get("/v1/audit", params={"action": f"{marker}.", "limit": 2}, headers=admin_headers).json()
    assert [i["id"] for i in first["items"]] == made[::-1][:2] and first["next_before_id"] == made[3]
    second = client.get("/v1/audit", params={"action": f"{marker}.", "limit": 2,
                                             "before_id": first["next_before_id"]}, headers=admin_headers).json()
    assert [i["id"] for i in second["items"]] == made[::-1][2:4]
    one = client.get("/v1/audit", params={"target_type": "thing", "target_id": "3", "actor": "pager"},
                     headers=admin_headers).json()["items"]
    assert [i["id"] for i in one] == [made[3]]
    assert client.get("/v1/audit", params={"limit": 5000}, headers=admin_headers).status_code == 422


# =================================================================================================== CLI

@pytest.fixture
def cli_db(migrated_engine, monkeypatch):
    """The CLI pointed at a fresh database holding the mini district."""
    from cli import common

    load_mini_district(migrated_engine)
    monkeypatch.setattr(common, "engine", lambda start_local=True: migrated_engine)
    return migrated_engine


def test_cli_users_and_keys_are_audited(cli_db):
    from cli import app
    from geo.access.users import authenticate
    from geo.store.db import session_scope

    runner = CliRunner()
    r = runner.invoke(app, ["users", "add", "chen", "--role", "planner", "--jurisdiction", "320505001"])
    assert r.exit_code == 0, r.output
    password = r.output.split("password:")[1].split()[0]
    with session_scope(cli_db) as session:
        assert authenticate(session, "chen", password) is not None
    refused = runner.invoke(app, ["users", "add", "bad", "--role", "planner", "--jurisdiction", "999999999"])
    assert refused.exit_code == 1
    assert "chen" in runner.invoke(app, ["users", "list"]).output

    # unlock: an admin on the machine ends the login delay failures built up
    from geo.access import throttle
    from geo.settings import AuthSettings

    slow = AuthSettings(backoff_base_seconds=300)  # the delay outlasts the test however slow the machine
    with session_scope(cli_db) as session:
        for _ in range(6):
            throttle.record_attempt(session, "chen", "10.6.6.6", False, settings=slow)
        assert not throttle.check(session, "chen", "10.6.6.6", settings=slow).allowed
    r = runner.invoke(app, ["users", "unlock", "chen"])
    assert r.exit_code == 0 and "6 failed login(s) forgotten" in r.output, r.output
    with session_scope(cli_db) as session:
        assert throttle.check(session, "chen", "10.6.6.6", settings=slow).allowed

    r = runner.invoke(app, ["keys", "create", "hotline", "--user", "chen"])
    assert r.exit_code == 0, r.output
    key = next(w for w in r.output.split() if w.startswith("ga_"))
    with session_scope(cli_db) as session:
        from geo.access.apikeys import principal_for_key

        assert principal_for_key(session, key).username == "chen"
    assert "active" in runner.invoke(app, ["keys", "list", "--user", "chen"]).output
    assert runner.invoke(app, ["keys", "revoke", key]).exit_code == 0
    assert runner.invoke(app, ["users", "reset-password", "chen"]).exit_code == 0
    assert runner.invoke(app, ["users", "disable", "chen"]).exit_code == 0
    r = runner.invoke(app, ["users", "disable", "nobody"])
    assert r.exit_code == 1 and "no user" in r.output

    with session_scope(cli_db) as session:
        from geo.access.apikeys import principal_for_key

        assert principal_for_key(session, key) is None
        assert session.get(User, session.scalar(text("SELECT id FROM users WHERE username = 'chen'"))).disabled
        rows = session.execute(text(
            "SELECT action, actor, remote_addr, method FROM audit_log ORDER BY id")).all()
    assert [r.action for r in rows] == ["user.create", "user.unlock", "apikey.create", "apikey.revoke",
                                        "user.reset_password", "user.disable"]
    assert all(r.actor.startswith("cli") and r.remote_addr == "local" and r.method is None for r in rows)
