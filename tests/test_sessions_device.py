"""Device sessions (issue 16 item 4): a browser login keeps a rotating refresh token in an HttpOnly cookie for
GRIDATLAS_DEVICE_SESSION_DAYS, spent by POST /v1/auth/device for a fresh access cookie (a reused one ends the
session); admins list and revoke sessions (API and CLI); logout ends it and clears the cookies."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from api.auth import COOKIE_NAME
from api.routers.auth import DEVICE_COOKIE, DEVICE_HINT

PHONE_UA = "Mozilla/5.0 (Linux; Android 14; HUAWEI Mate 60) Mobile Safari/537.36"


def _browser_login(client, user: dict, next_path: str = "/m"):
    return client.post("/v1/auth/token", data={"username": user["username"], "password": user["password"],
                                               "cookie": "true", "next": next_path},
                       headers={"User-Agent": PHONE_UA}, follow_redirects=False)


def _cookie(client, name: str) -> str | None:
    return next((c.value for c in client.cookies.jar if c.name == name), None)


@pytest.fixture
def grid_code(db_session) -> str:
    return db_session.execute(text("SELECT code FROM current_grids ORDER BY code LIMIT 1")).scalar_one()


@pytest.fixture
def device_days(monkeypatch):
    from geo.settings import get_settings

    monkeypatch.setenv("GRIDATLAS_DEVICE_SESSION_DAYS", "12")
    get_settings.cache_clear()
    yield 12
    monkeypatch.delenv("GRIDATLAS_DEVICE_SESSION_DAYS")
    get_settings.cache_clear()


def test_browser_login_is_a_device_session_that_refreshes(client, make_user, db_session, device_days, grid_code):
    worker = make_user("worker", grid_code)
    r = _browser_login(client, worker)
    assert r.status_code == 303 and r.headers["location"] == "/m"
    cookies = r.headers.get_list("set-cookie")
    device = next(c for c in cookies if c.startswith(DEVICE_COOKIE + "="))
    assert "HttpOnly" in device and "Path=/v1/auth/device" in device and f"Max-Age={12 * 86400}" in device
    assert any(c.startswith(DEVICE_HINT + "=1") and "HttpOnly" not in c and "Path=/login" in c for c in cookies)
    row = db_session.execute(text("SELECT id, device, expires_at - created_at AS life, last_used_at FROM "
                                  "token_families WHERE username = :u"), {"u": worker["username"]}).mappings().one()
    assert row["device"] == PHONE_UA and row["life"] == dt.timedelta(days=12)

    # the access cookie expires (cleared here): the device cookie gets a new one, and is itself replaced
    first = _cookie(client, DEVICE_COOKIE)
    client.cookies.delete(COOKIE_NAME)
    assert client.get("/v1/auth/me").status_code == 401
    r = client.post("/v1/auth/device")
    assert r.status_code == 204, r.text
    assert client.get("/v1/auth/me").json()["username"] == worker["username"]
    second = _cookie(client, DEVICE_COOKIE)
    assert second and second != first
    used = db_session.execute(text("SELECT last_used_at FROM token_families WHERE id = :i"),
                              {"i": row["id"]}).scalar_one()
    assert used is not None
    actions = db_session.execute(text("SELECT action FROM audit_log WHERE actor = :u ORDER BY id"),
                                 {"u": worker["username"]}).scalars().all()
    assert "auth.refresh" in actions  # the public write audits itself (tests/test_audit.py lists it)

    # the spent device token presented again (a copied cookie): the session ends, for the thief and the owner
    client.cookies.set(DEVICE_COOKIE, first, domain="testserver.local", path="/v1/auth/device")
    for c in list(client.cookies.jar):
        if c.name == DEVICE_COOKIE and c.value == second:
            client.cookies.jar.clear(c.domain, c.path, c.name)
    assert client.post("/v1/auth/device").status_code in (401, 422)
    revoked = db_session.execute(text("SELECT revoked_reason FROM token_families WHERE id = :i"),
                                 {"i": row["id"]}).scalar_one()
    assert revoked == "refresh token reused"
    assert client.get("/v1/auth/me").status_code == 401  # the access cookie of that session stopped too


def test_no_device_cookie_is_refused(client):
    r = client.post("/v1/auth/device")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    client.cookies.set(DEVICE_COOKIE, "not-a-token")
    assert client.post("/v1/auth/device").status_code == 401


def test_admin_lists_and_revokes_a_phone(client, make_user, db_session, grid_code):
    worker = make_user("worker", grid_code)
    admin = make_user("admin")
    assert _browser_login(client, worker).status_code == 303
    listed = client.get("/v1/sessions", params={"username": worker["username"]}, headers=admin["headers"])
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 1 and items[0]["device"] == PHONE_UA and items[0]["revoked_at"] is None
    assert client.get("/v1/sessions", headers=worker["headers"]).status_code == 403
    r = client.delete(f"/v1/sessions/{items[0]['id']}", headers=admin["headers"])
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    assert client.delete("/v1/sessions/nosuchsession", headers=admin["headers"]).status_code == 404
    # the phone's cookies no longer work: neither the access cookie nor the device refresh
    assert client.get("/v1/auth/me").status_code == 401
    assert client.post("/v1/auth/device").status_code == 401
    assert client.get("/v1/sessions", params={"username": worker["username"]},
                      headers=admin["headers"]).json()["items"] == []
    assert client.get("/v1/sessions", params={"username": worker["username"], "include_ended": True},
                      headers=admin["headers"]).json()["items"][0]["revoked_reason"].startswith("revoked by")
    assert db_session.execute(text("SELECT count(*) FROM audit_log WHERE action = 'auth.session_revoke' "
                                   "AND target_id = :u"), {"u": worker["username"]}).scalar_one() == 1


def test_logout_ends_the_device_session(client, make_user, grid_code):
    worker = make_user("worker", grid_code)
    _browser_login(client, worker)
    kept = _cookie(client, DEVICE_COOKIE)
    r = client.post("/v1/auth/logout", headers={"Accept": "application/json"})
    assert r.status_code == 204
    cleared = r.headers.get_list("set-cookie")
    assert any(c.startswith(DEVICE_COOKIE + "=") and "Max-Age=0" in c for c in cleared)
    assert client.post("/v1/auth/device").status_code == 422  # the browser no longer has it
    client.cookies.set(DEVICE_COOKIE, kept)  # a copy kept from before the logout: ended on the server too
    assert client.post("/v1/auth/device").status_code == 401


def test_login_page_tries_the_device_session_first(client):
    page = client.get("/login", params={"next": "/m/report?lon=1&lat=2"}).text
    assert "/v1/auth/device" in page and DEVICE_HINT in page and "天内保持登录" in page


def test_cli_lists_and_revokes_sessions(migrated_engine, monkeypatch):
    from cli import app, common
    from geo.access import sessions
    from geo.access.users import create_user

    monkeypatch.setattr(common, "engine", lambda start_local=True: migrated_engine)
    name = f"phone-{uuid.uuid4().hex[:6]}"
    with Session(migrated_engine) as s:
        create_user(s, name, uuid.uuid4().hex, "admin", None)
        family = sessions.start(s, name, dt.timedelta(days=30), device=PHONE_UA)
        fid = family.id
        s.commit()
    runner = CliRunner(env={"COLUMNS": "300"})
    r = runner.invoke(app, ["sessions", "list", "--user", name])
    assert r.exit_code == 0 and fid in r.output and "HUAWEI" in r.output, r.output
    r = runner.invoke(app, ["sessions", "revoke", fid])
    assert r.exit_code == 0 and "revoked" in r.output
    with Session(migrated_engine) as s:
        assert not sessions.is_active(s, fid)
    assert fid not in runner.invoke(app, ["sessions", "list", "--user", name]).output
    assert runner.invoke(app, ["sessions", "revoke", "nosuch"]).exit_code == 1
