"""Test fixtures: a real PostGIS database per test session, a scale-0.05 district in it, and per-test isolation.

Each test that writes runs inside a transaction rolled back at its end (`db_session`, `client`), so tests see
the same district and never each other's changes. Tests that need an empty database get a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from geo.store import db

# Apps the tests start do not gather the home page's figures in the background (it would commit classification runs
# into the shared test district and compete for the CPU); tests/test_home_warm.py turns it on where it is the subject.
os.environ.setdefault("GRIDATLAS_WARM_AT_START", "0")

#: Playwright fixtures, and the check that every successful write through the test client leaves an audit entry.
pytest_plugins = ["tests.browser", "tests.access_helpers"]

TEST_SCALE = 0.05
TEST_SEED = 7
OSM_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "osm-lujiazui"


def _admin_url() -> str:
    """A URL on the server tests may create databases on (DATABASE_URL, else the local cluster)."""
    return db.admin_database_url(start_local=True)


_SCRATCH_DB = re.compile(r"^gridatlas_[a-z0-9_]+_(\d+)_[0-9a-f]{6}$")


def _drop_abandoned_databases() -> None:
    """Drop scratch databases (tests', benchmarks') left by runs that were killed: their process no longer exists.
    Only on the project's own cluster: on a shared server another machine's process ids mean nothing here."""
    from geo.settings import get_settings

    if get_settings().database_url:
        return
    base = make_url(_admin_url()).set(drivername="postgresql", database="postgres")
    with psycopg.connect(base.render_as_string(hide_password=False), autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            m = _SCRATCH_DB.match(name)
            if m and not Path(f"/proc/{m.group(1)}").exists():
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pytest_sessionstart(session) -> None:
    """Reclaim the space of scratch databases abandoned by killed runs."""
    with contextlib.suppress(psycopg.Error):  # no server yet: the fixtures that need one report it
        _drop_abandoned_databases()


def _create_database(prefix: str) -> str:
    base = make_url(_admin_url())
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    u = make_url(url)
    admin = u.set(database="postgres" if u.database != "postgres" else "template1", drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')


@pytest.fixture
def empty_database_url() -> Iterator[str]:
    """A brand-new database with nothing in it (not even PostGIS), dropped afterwards."""
    url = _create_database("gridatlas_empty")
    yield url
    _drop_database(url)


@pytest.fixture
def migrated_engine(empty_database_url) -> Iterator[Engine]:
    """A fresh, migrated, empty database for tests that load their own data."""
    db.migrate(empty_database_url)
    engine = db.make_engine(empty_database_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def district():
    """The scale-0.05 synthetic district used across the suite (generated once)."""
    from demo.synth import generate_district

    return generate_district(scale=TEST_SCALE, seed=TEST_SEED)


@pytest.fixture(scope="session")
def engine(district) -> Iterator[Engine]:
    """A session-wide migrated database holding the scale-0.05 district."""
    from geo.store.load import load_district

    url = _create_database("gridatlas_test")
    db.migrate(url)
    # the service's own unprivileged role, as in production: the suite proves it needs no superuser
    eng = db.make_engine(db.service_url_for(url))
    load_district(eng, district)
    yield eng
    eng.dispose()
    _drop_database(url)


@pytest.fixture
def db_session(engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test (commits become savepoints)."""
    conn = engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        conn.close()


@pytest.fixture
def app(engine, db_session):
    """The FastAPI app bound to the test database, its sessions joined to the test's rolled-back transaction."""
    from api.deps import session_dep
    from api.main import create_app

    application = create_app(engine)

    def _session():
        yield db_session
        db_session.flush()

    application.dependency_overrides[session_dep] = _session
    return application


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    """An HTTP client on the app (no network)."""
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def make_user(db_session) -> Callable[..., dict]:
    """Create a user in the test transaction; returns {'username', 'password', 'headers'} with a bearer token."""
    from api.auth import issue_token
    from geo.access.users import create_user

    def _make(role: str = "admin", jurisdiction: str | None = None, username: str | None = None) -> dict:
        username = username or f"{role}-{uuid.uuid4().hex[:6]}"
        password = uuid.uuid4().hex
        user = create_user(db_session, username, password, role, jurisdiction)
        db_session.flush()
        token = issue_token(user)
        return {"username": username, "password": password, "user": user,
                "headers": {"Authorization": f"Bearer {token}"}}

    return _make


@pytest.fixture
def admin_headers(make_user) -> dict:
    """Bearer headers of an admin."""
    return make_user("admin")["headers"]


@pytest.fixture
def osm_dir() -> Path:
    """The real OpenStreetMap extract beside the project; skips when it is absent."""
    if not (OSM_DIR / "residential.geojson").exists():
        pytest.skip(f"the OpenStreetMap extract is not at {OSM_DIR} (it lives beside the project, never in it)")
    return OSM_DIR


@pytest.fixture
def own_cluster():
    """A throwaway local PostgreSQL cluster of its own, for tests that kill or stop the server
    (under /var/lib/gridatlas when root: its unprivileged owner must reach the folder)."""
    parent = Path("/var/lib/gridatlas") if os.geteuid() == 0 else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="crash-test-", dir=parent))
    from geo.store import localdb

    cluster = localdb.LocalCluster(root)
    try:
        localdb.up(cluster)
        yield cluster
    finally:
        try:
            localdb.down(cluster)
        finally:
            shutil.rmtree(root, ignore_errors=True)
