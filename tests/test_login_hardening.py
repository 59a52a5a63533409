"""Login hardening (issue 19, items 9 and 12): backoff per account and address instead of a lock, admin unlock,
forwarding headers believed only from configured proxies, logout that ends the session's tokens, refresh tokens
rotated with reuse detection, refused attempts audited, usernames without invisible characters, and the session
cookie's Secure flag behind a trusted https proxy."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.access import throttle
from geo.access.users import UserError, create_user, normalise_username
from geo.settings import AuthSettings, get_settings

PASSWORD = "the owner's long password"


@pytest.fixture(autouse=True)
def settings_env(monkeypatch):
    """Set GRIDATLAS_* variables for a test (settings re-read); restored afterwards. The login delay starts at
    5 minutes here, so no test depends on how fast the machine answers the next request."""

    def _set(**values):
        for name, value in {"GRIDATLAS_AUTH_BACKOFF_BASE_SECONDS": 300, **values}.items():
            monkeypatch.setenv(name, str(value))
        get_settings.cache_clear()
        return get_settings()

    _set()
    yield _set
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def make_app(engine, db_session):
    """A factory of apps built now (after `settings_env`), their sessions joined to the test's transaction."""
    from api.deps import session_dep
    from api.main import create_app

    def _make():
        application = create_app(engine)

        def _session():
            yield db_session
            db_session.flush()

        application.dependency_overrides[session_dep] = _session
        return application

    return _make


@pytest.fixture
def owner(db_session):
    user = create_user(db_session, "owner.admin", PASSWORD, "admin")
    db_session.flush()
    return user


def _login(client, username="owner.admin", password=PASSWORD, **headers):
    return client.post("/v1/auth/token", data={"username": username, "password": password}, headers=headers)


def _audit(db_session, action):
    return db_session.execute(text("SELECT target_id, after FROM audit_log WHERE action = :a ORDER BY id"),
                              {"a": action}).all()


# ========================================================================================= backoff, not a lock

def test_five_wrong_passwords_elsewhere_do_not_lock_the_owner_out(make_app, owner, db_session):
    app = make_app()
    with TestClient(app, client=("10.0.0.1", 4000)) as home, TestClient(app, client=("10.6.6.6", 4000)) as attacker:
        assert _login(home).status_code == 200  # the owner's usual address
        for _ in range(5):
            assert _login(attacker, password="guess").status_code == 401
        refused = _login(attacker)  # even the right password waits at the attacker's address
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["type"].endswith("/login-throttled")
        assert _login(home).status_code == 200
        # a new address of the owner is not locked either (5 failures are far below the account-wide limit)
        with TestClient(app, client=("10.0.0.2", 4000)) as travelling:
            assert _login(travelling).status_code == 200
    # refused attempts are audited with the address
    failed = _audit(db_session, "auth.login_failed")
    assert len([row for row in failed if row.after["remote_addr"] == "10.6.6.6"]) == 5
    (refusal,) = _audit(db_session, "auth.login_refused")
    assert refusal.target_id == "owner.admin" and refusal.after["reason"] == "pair"
    assert refusal.after["remote_addr"] == "10.6.6.6" and refusal.after["retry_after"] >= 1


def test_the_delay_doubles_with_each_failure_and_then_ends(db_session):
    settings = AuthSettings(max_failures_per_pair=3, max_failures_per_account=100, max_failures_per_address=100,
                            backoff_base_seconds=2, backoff_max_seconds=30, window_seconds=3600)
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    for i in range(2):
        assert throttle.record_attempt(db_session, "Zhou", "a", False, t + dt.timedelta(seconds=i), settings).allowed
    t = t + dt.timedelta(seconds=2)
    waits = []
    for _ in range(6):
        verdict = throttle.record_attempt(db_session, "zhou", "a", False, t, settings)
        assert not verdict.allowed and verdict.reason == "pair"
        waits.append(verdict.retry_after)
        # refused until the delay has passed, then allowed again: a delay, never a lock
        assert not throttle.check(db_session, "ZHOU", "a", t + dt.timedelta(seconds=verdict.retry_after - 1),
                                  settings).allowed
        t = t + dt.timedelta(seconds=verdict.retry_after)
        assert throttle.check(db_session, "zhou", "a", t, settings).allowed
    assert waits == [2, 4, 8, 16, 30, 30]
    # the same account from another address is not delayed at all
    assert throttle.check(db_session, "zhou", "b", t - dt.timedelta(seconds=1), settings).allowed
    # a success ends the pair's count
    throttle.record_attempt(db_session, "zhou", "a", True, t, settings)
    assert throttle.record_attempt(db_session, "zhou", "a", False, t + dt.timedelta(seconds=1), settings).allowed


def test_guesses_spread_over_addresses_slow_new_addresses_but_not_the_usual_one(db_session):
    settings = AuthSettings(max_failures_per_pair=5, max_failures_per_account=4, max_failures_per_address=100,
                            backoff_base_seconds=60, backoff_max_seconds=600)
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    throttle.record_attempt(db_session, "wu", "192.0.2.1", True, t - dt.timedelta(days=3), settings)  # usual
    for i in range(4):
        throttle.record_attempt(db_session, "wu", f"198.51.100.{i}", False, t + dt.timedelta(seconds=i), settings)
    now = t + dt.timedelta(seconds=10)
    fresh = throttle.check(db_session, "wu", "198.51.100.99", now, settings)
    assert not fresh.allowed and fresh.reason == "account"
    assert throttle.check(db_session, "wu", "192.0.2.1", now, settings).allowed


def test_spraying_from_one_address_slows_it_except_for_accounts_at_home_there(db_session):
    settings = AuthSettings(max_failures_per_pair=5, max_failures_per_account=100, max_failures_per_address=4,
                            backoff_base_seconds=60, backoff_max_seconds=600)
    t = dt.datetime(2026, 5, 1, 9, 0, tzinfo=dt.UTC)
    throttle.record_attempt(db_session, "admin", "203.0.113.5", True, t - dt.timedelta(days=1), settings)
    for i in range(4):
        throttle.record_attempt(db_session, f"guess{i}", "203.0.113.5", False, t + dt.timedelta(seconds=i), settings)
    now = t + dt.timedelta(seconds=10)
    sprayed = throttle.check(db_session, "someone", "203.0.113.5", now, settings)
    assert not sprayed.allowed and sprayed.reason == "address"
    assert throttle.check(db_session, "admin", "203.0.113.5", now, settings).allowed  # no denial of service
    assert throttle.check(db_session, "someone", "203.0.113.6", now, settings).allowed


def test_an_admin_unlocks_an_account(make_app, owner, db_session, make_user):
    app = make_app()
    admin = make_user("admin")
    with TestClient(app, client=("10.6.6.7", 4000)) as attacker:
        for _ in range(6):
            _login(attacker, password="guess")
        assert _login(attacker).status_code == 429
        r = attacker.post("/v1/users/owner.admin/unlock", headers=admin["headers"])
        assert r.status_code == 200, r.text
        assert r.json()["cleared"] == 5
        assert _login(attacker).status_code == 200
        assert attacker.post("/v1/users/nobody-at-all/unlock", headers=admin["headers"]).status_code == 404
        assert attacker.post("/v1/users/owner.admin/unlock").status_code == 401
    (entry,) = _audit(db_session, "user.unlock")
    assert entry.target_id == "owner.admin" and entry.after["cleared"] == 5


# ===================================================================================== forwarding headers

def _attempt_addresses(db_session, username):
    return db_session.scalars(text("SELECT remote_addr FROM login_attempts WHERE username = :u ORDER BY id"),
                              {"u": username}).all()


def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(make_app, settings_env, db_session, owner):
    settings_env()  # the default: no proxy trusted
    with TestClient(make_app(), client=("127.0.0.1", 4000)) as local:
        answers = [_login(local, password="guess", **{"X-Forwarded-For": f"198.51.100.{i}"}).status_code
                   for i in range(7)]
    assert answers == [401] * 5 + [429] * 2  # a new X-Forwarded-For per request does not bypass the delay
    assert set(_attempt_addresses(db_session, "owner.admin")) == {"127.0.0.1"}

    db_session.execute(text("DELETE FROM login_attempts"))
    settings_env(GRIDATLAS_TRUSTED_PROXIES="10.0.0.254, 10.1.0.0/16")
    app = make_app()
    with TestClient(app, client=("10.0.0.254", 4000)) as proxy, TestClient(app, client=("10.9.9.9", 4000)) as other:
        assert _login(proxy, password="guess", **{"X-Forwarded-For": "198.51.100.1"}).status_code == 401
        assert _login(other, password="guess", **{"X-Forwarded-For": "198.51.100.2"}).status_code == 401
    with TestClient(app, client=("10.1.2.3", 4000)) as in_network:
        assert _login(in_network, password="guess", **{"X-Forwarded-For": "198.51.100.3"}).status_code == 401
    assert _attempt_addresses(db_session, "owner.admin") == ["198.51.100.1", "10.9.9.9", "198.51.100.3"]


def _cookie_login(client, **headers):
    return client.post("/v1/auth/token", data={"username": "owner.admin", "password": PASSWORD, "cookie": "true"},
                       headers=headers, follow_redirects=False)


def test_session_cookie_is_secure_behind_a_trusted_https_proxy_only(make_app, settings_env, owner):
    settings_env(GRIDATLAS_TRUSTED_PROXIES="10.0.0.254")
    app = make_app()
    with TestClient(app, client=("10.0.0.254", 4000)) as proxy, TestClient(app, client=("10.9.9.9", 4000)) as direct:
        behind = _cookie_login(proxy, **{"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.7"})
        assert behind.status_code == 303
        assert "secure" in behind.headers["set-cookie"].lower()
        plain = _cookie_login(proxy, **{"X-Forwarded-Proto": "http"})
        assert "secure" not in plain.headers["set-cookie"].lower()
        forged = _cookie_login(direct, **{"X-Forwarded-Proto": "https"})  # not a proxy: its header means nothing
        assert "secure" not in forged.headers["set-cookie"].lower()


@contextlib.contextmanager
def _uvicorn(app) -> Iterator[str]:
    """The app under a real uvicorn, configured as `gridatlas serve` runs it (api.proxies.uvicorn_options)."""
    import uvicorn

    from api.proxies import uvicorn_options

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, **uvicorn_options()))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_uvicorn_applies_the_same_trusted_list(make_app, settings_env, db_session, owner):
    """uvicorn trusts X-Forwarded-* from 127.0.0.1 by default; as the service runs it, only the setting counts."""
    settings_env()  # no proxy trusted: loopback's X-Forwarded-For is not believed
    with _uvicorn(make_app()) as base:
        r = httpx.post(f"{base}/v1/auth/token", timeout=60, data={"username": "owner.admin", "password": "guess"},
                       headers={"X-Forwarded-For": "198.51.100.50", "X-Forwarded-Proto": "https"})
        assert r.status_code == 401
        page = httpx.post(f"{base}/v1/auth/token", timeout=60, data={"username": "owner.admin", "password": PASSWORD,
                                                         "cookie": "true"},
                          headers={"X-Forwarded-Proto": "https"})
        assert page.status_code == 303 and "secure" not in page.headers["set-cookie"].lower()
    settings_env(GRIDATLAS_TRUSTED_PROXIES="127.0.0.1")
    with _uvicorn(make_app()) as base:
        r = httpx.post(f"{base}/v1/auth/token", timeout=60, data={"username": "owner.admin", "password": "guess"},
                       headers={"X-Forwarded-For": "198.51.100.51"})
        assert r.status_code == 401
        page = httpx.post(f"{base}/v1/auth/token", timeout=60, data={"username": "owner.admin", "password": PASSWORD,
                                                         "cookie": "true"},
                          headers={"X-Forwarded-Proto": "https"})
        assert page.status_code == 303 and "secure" in page.headers["set-cookie"].lower()
    assert _attempt_addresses(db_session, "owner.admin") == ["127.0.0.1", "127.0.0.1", "198.51.100.51",
                                                              "127.0.0.1"]


# =================================================================================== logout and refresh

def test_logout_ends_the_access_and_refresh_tokens_of_that_session(client, owner):
    tokens = _login(client).json()
    other = _login(client).json()  # another session of the same user (another device)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert client.get("/v1/auth/me", headers=bearer).status_code == 200
    assert client.post("/v1/auth/logout", headers=bearer).status_code == 204
    assert client.get("/v1/auth/me", headers=bearer).status_code == 401
    assert client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    # the other device stays logged in
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {other['access_token']}"}).status_code \
        == 200


def test_logout_ends_the_browser_session_cookie(client, owner):
    from api.auth import COOKIE_NAME

    page = _cookie_login(client)
    session_cookie = page.cookies[COOKIE_NAME]
    assert client.get("/v1/auth/me").status_code == 200
    assert client.post("/v1/auth/logout").status_code == 204
    client.cookies.set(COOKIE_NAME, session_cookie)  # a copy of the cookie kept after logging out
    assert client.get("/v1/auth/me").status_code == 401


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_family(client, owner, db_session):
    first = _login(client).json()
    second = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["refresh_token"] and second["refresh_token"] != first["refresh_token"]
    third = client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}).json()
    assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {third['access_token']}"}).status_code \
        == 200
    # the first refresh token was spent: presenting it again (a stolen copy) revokes the whole family
    reused = client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert reused.status_code == 401 and "already used" in reused.json()["detail"]
    assert client.post("/v1/auth/refresh", json={"refresh_token": third["refresh_token"]}).status_code == 401
    for access in (first, second, third):
        assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {access['access_token']}"}
                          ).status_code == 401
    assert [row.target_id for row in _audit(db_session, "auth.refresh_reused")] == ["owner.admin"]
    refused = _audit(db_session, "auth.refresh_refused")
    assert refused and refused[-1].after["reason"] == "revoked"
    # a new login works
    assert _login(client).status_code == 200


# =========================================================================================== usernames

@pytest.mark.parametrize("name", ["adm\u200bin", "\u202eadmin", "admin\u00ad", "ad\x07min", "a\u2028b", "\ufeffx"])
def test_usernames_with_invisible_or_control_characters_are_refused(name, db_session):
    with pytest.raises(UserError, match="invisible"):
        create_user(db_session, name, PASSWORD, "admin")


def test_usernames_are_nfkc_normalised(db_session, client, admin_headers):
    assert normalise_username("ｚｈａｎｇ．ｗｅｉ") == "zhang.wei"
    user = create_user(db_session, "ｌｉｕ１", PASSWORD, "admin")
    assert user.username == "liu1"
    db_session.flush()
    assert _login(client, username="liu1").status_code == 200
    assert _login(client, username="liu1\u200b").status_code == 401
    r = client.post("/v1/users", json={"username": "wang\u200d", "role": "admin"}, headers=admin_headers)
    assert r.status_code == 422 and "invisible" in r.json()["detail"]


def test_two_concurrent_uses_of_one_refresh_token_rotate_once(migrated_engine):
    """Two requests presenting the same refresh token at once: one rotates, the other is a reuse (family revoked)."""
    from concurrent.futures import ThreadPoolExecutor

    from geo.access import sessions
    from geo.store.db import session_scope

    life = dt.timedelta(days=1)
    with session_scope(migrated_engine) as session:
        family = sessions.start(session, "racer", life)
        family_id, jti = family.id, family.current_jti
    barrier = threading.Barrier(2)

    def use():
        with session_scope(migrated_engine) as session:
            barrier.wait()
            return sessions.rotate(session, family_id, jti, "racer", life)[0]

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(o.value for o in pool.map(lambda _: use(), range(2)))
    assert outcomes == ["reused", "rotated"]
    with session_scope(migrated_engine) as session:
        assert not sessions.is_active(session, family_id)
