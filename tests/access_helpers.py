"""Helpers for the access-control tests: the jurisdictions of the test district, a tiny hand-made district for
when the synthetic one is unavailable, an app with extra test routes, and an audit guard that checks every
successful write leaves an entry.

The guard is a pytest plugin (`audit_guard` fixture, autouse): the access tests import it; registering this module
in conftest's `pytest_plugins` extends the check to every test of the suite that writes through a TestClient.
A test module of the access family takes its shared fixtures with ``from tests.access_helpers import *``
(`audit_guard`, `world` and, without the synthetic district, an `engine` on the mini district).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import text

#: Whether the access tests run on the synthetic district (conftest's `engine`); without demo.synth, or with
#: GRIDATLAS_TEST_MINI_DISTRICT=1 (a fast run), they use the hand-made mini district below instead.
HAVE_SYNTH = importlib.util.find_spec("demo.synth") is not None and not os.environ.get("GRIDATLAS_TEST_MINI_DISTRICT")

#: A district of 2 streets, 3 communities, 4 grids, 1 micro-grid, a compound, a building with a unit, a person
#: assigned to the building, and one incident in the first grid. Boxes in lon/lat near Suzhou.
MINI_DISTRICT_SQL = """
INSERT INTO boundary_versions (id, valid_from, label, created_by) VALUES (1, '2025-01-01+08', 'v1', 'tests');
INSERT INTO streets (id, code, name) VALUES (1, '320505001', '甲街道'), (2, '320505002', '乙街道');
INSERT INTO communities (id, code, name, street_id) VALUES
  (1, '320505001001', '甲一社区', 1), (2, '320505001002', '甲二社区', 1), (3, '320505002001', '乙一社区', 2);
INSERT INTO grids (id, code, name, kind, community_id) VALUES
  (1, '320505001001001', '甲一1网格', 'comprehensive', 1), (2, '320505001001002', '甲一2网格', 'comprehensive', 1),
  (3, '320505001002001', '甲二1网格', 'comprehensive', 2), (4, '320505002001001', '乙一1网格', 'comprehensive', 3);
INSERT INTO micro_grids (id, code, name, grid_id) VALUES (1, '32050500100100101', '甲一1-1微网格', 1);
INSERT INTO street_boundaries (street_id, version_id, valid_from, geom) VALUES
  (1, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.60, 31.30, 120.62, 31.32, 4326))),
  (2, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.62, 31.30, 120.64, 31.32, 4326)));
INSERT INTO community_boundaries (community_id, version_id, valid_from, geom) VALUES
  (1, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.60, 31.30, 120.61, 31.32, 4326))),
  (2, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.61, 31.30, 120.62, 31.32, 4326))),
  (3, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.62, 31.30, 120.64, 31.32, 4326)));
INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) VALUES
  (1, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.60, 31.30, 120.61, 31.31, 4326))),
  (2, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.60, 31.31, 120.61, 31.32, 4326))),
  (3, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.61, 31.30, 120.62, 31.32, 4326))),
  (4, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.62, 31.30, 120.64, 31.32, 4326)));
INSERT INTO micro_grid_boundaries (micro_grid_id, version_id, valid_from, geom) VALUES
  (1, 1, '2025-01-01+08', ST_Multi(ST_MakeEnvelope(120.60, 31.30, 120.61, 31.31, 4326)));
INSERT INTO compounds (id, name, kind, has_property_management, has_owners_committee, community_id, geom) VALUES
  (1, '甲一小区', 'commercial', true, false, 1,
   ST_Multi(ST_MakeEnvelope(120.602, 31.302, 120.606, 31.306, 4326)));
INSERT INTO buildings (id, code, name, community_id, compound_id, floors, use, geom) VALUES
  (1, '00001', '1号楼', 1, 1, 6, 'residential', ST_Multi(ST_MakeEnvelope(120.603, 31.303, 120.604, 31.304, 4326)));
INSERT INTO units (id, building_id, number, households, population) VALUES (1, 1, 1, 12, 30);
INSERT INTO people (id, name, phone, phone_public, party_member) VALUES (1, '张三', '13800000000', false, true);
INSERT INTO staff_assignments (id, person_id, role, target_type, building_id, valid_from) VALUES
  (1, 1, 'building_head', 'building', 1, '2025-01-01');
INSERT INTO incidents (id, geom, reported_at, class_code, source, state, reporter, reporter_phone,
                       version_id, street_id, community_id, grid_id, micro_grid_id, building_id)
  SELECT 1, ST_SetSRID(ST_MakePoint(120.6035, 31.3035), 4326), '2025-03-01+08', min(code), 'patrol', 'reported',
         '李四', '13900000000', 1, 1, 1, 1, 1, 1 FROM incident_classes WHERE major_code IS NOT NULL;
"""


def load_mini_district(engine) -> None:
    """Write MINI_DISTRICT_SQL into a freshly migrated database and move the id sequences past it."""
    with engine.begin() as conn:
        conn.exec_driver_sql(MINI_DISTRICT_SQL)
        for table in ("boundary_versions", "streets", "communities", "grids", "micro_grids", "street_boundaries",
                      "community_boundaries", "grid_boundaries", "micro_grid_boundaries", "compounds", "buildings",
                      "units", "people", "staff_assignments", "incidents"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"))


#: What ``from tests.access_helpers import *`` gives a test module: the shared fixtures.
__all__ = ["HAVE_SYNTH", "audit_guard", "world"] + ([] if HAVE_SYNTH else ["engine"])


def mini_engine():
    """A migrated test database holding the mini district (generator: yields the engine, then drops it)."""
    from geo.store import db
    from tests.conftest import _create_database, _drop_database

    url = _create_database("gridatlas_access")
    db.migrate(url)
    eng = db.make_engine(url)
    load_mini_district(eng)
    try:
        yield eng
    finally:
        eng.dispose()
        _drop_database(url)


@dataclass(frozen=True)
class World:
    """Where the walker's callers sit: a home grid with its community and street, and disjoint other units."""

    street: str
    community: str
    grid: str
    other_street: str
    other_community: str
    other_grid: str


def find_world(session) -> World:
    """A home grid chosen so that another street (else community, else grid) exists beside it."""
    rows = session.execute(text(
        "SELECT g.code, c.code, s.code FROM grids g JOIN communities c ON c.id = g.community_id "
        "JOIN streets s ON s.id = c.street_id ORDER BY g.code")).all()
    assert len(rows) >= 2, "the test district needs at least two grids"
    grid, community, street = rows[0]
    others = [r for r in rows if r[2] != street] or [r for r in rows if r[1] != community] or rows[1:]
    other = others[0]
    other_street = other[2] if other[2] != street else other[1] if other[1] != community else other[0]
    other_community = other[1] if other[1] != community else other[0]
    return World(street, community, grid, other_street, other_community, other[0])


@pytest.fixture
def world(db_session) -> World:
    """The walker's jurisdictions in the test database."""
    return find_world(db_session)


if not HAVE_SYNTH:  # the synthetic district is not there yet: run on the hand-made mini district

    @pytest.fixture(scope="session")
    def engine():
        """The mini district's database, in place of conftest's synthetic one."""
        yield from mini_engine()


def client_with(engine, db_session, router) -> Iterator:
    """A TestClient of the app plus `router`'s test routes, its sessions joined to the test's transaction."""
    from fastapi.testclient import TestClient

    from api.deps import session_dep
    from api.main import create_app

    application = create_app(engine)
    application.include_router(router)

    def _session():
        yield db_session
        db_session.flush()

    application.dependency_overrides[session_dep] = _session
    with TestClient(application, raise_server_exceptions=False) as c:
        yield c


# ------------------------------------------------------------------------------------------ the audit guard

SAFE = {"GET", "HEAD", "OPTIONS"}
#: Writes that are expected to leave no audit entry: none so far. (method, path) as requested.
UNAUDITED_WRITES: set[tuple[str, str]] = set()


@pytest.fixture(autouse=True)
def audit_guard(request, monkeypatch):
    """Fail a test when a TestClient write (non-GET, 2xx/3xx) left no new row in audit_log."""
    from fastapi.testclient import TestClient

    # the route walker rolls every request back and checks the audit rows itself
    if "db_session" not in request.fixturenames or "walk_client" in request.fixturenames:
        yield
        return
    session = request.getfixturevalue("db_session")
    original = TestClient.request
    misses: list[str] = []

    def checked(self, method, url, *args, **kwargs):
        method = method.upper()
        if method in SAFE:
            return original(self, method, url, *args, **kwargs)
        before = session.execute(text("SELECT coalesce(max(id), 0) FROM audit_log")).scalar()
        response = original(self, method, url, *args, **kwargs)
        if response.status_code < 400 and (method, response.request.url.path) not in UNAUDITED_WRITES:
            after = session.execute(text("SELECT coalesce(max(id), 0) FROM audit_log")).scalar()
            if after == before:
                misses.append(f"{method} {response.request.url.path} -> {response.status_code}")
        return response

    monkeypatch.setattr(TestClient, "request", checked)
    yield
    assert not misses, f"writes that left no audit entry: {misses}"
