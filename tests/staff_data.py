"""A hand-made community for the staff coverage and steward planning tests: two grids, four buildings, known staff.

Layout (lon/lat near Suzhou; one grid is ~190 m × 220 m):

    grid 001 (west)                 grid 002 (east)
    B1: unit 1 (12 hh), unit 2 (10) B3: unit 1 (8), unit 2 (8)
    B2: unit 1 (20)                 B4: no units (a shop)

From 2025-06-01 a second boundary version moves the line between the grids west, so B2 falls in grid 002.
`staff` adds known staff with known gaps; `build_staffed` writes both; `bearer_headers` and `api_client` give
users and an HTTP client on the result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from sqlalchemy import Connection, Engine, text
from sqlalchemy.orm import Session

from geo.settings import Rules

TZ = dt.timezone(dt.timedelta(hours=8))
V1 = dt.datetime(2025, 1, 1, tzinfo=TZ)
V2 = dt.datetime(2025, 6, 1, tzinfo=TZ)
STREET, COMMUNITY = "320505001", "320505001001"
GRID_W, GRID_E = COMMUNITY + "001", COMMUNITY + "002"
X0, Y0 = 120.600, 31.300
#: Household bounds that suit this small community's grids (58 households in all).
RULES = Rules(grid_households_min=30, grid_households_max=60)


def _box(x1, y1, x2, y2) -> str:
    return f"SRID=4326;MULTIPOLYGON((({x1} {y1},{x2} {y1},{x2} {y2},{x1} {y2},{x1} {y1})))"


def _bld(cx, cy, half=0.0002) -> str:
    return _box(cx - half, cy - half, cx + half, cy + half)


BUILDINGS = {  # id: (code, centre lon, centre lat, units {number: households})
    1: ("00001", X0 + 0.0005, Y0 + 0.0010, {1: 12, 2: 10}),
    2: ("00002", X0 + 0.0015, Y0 + 0.0010, {1: 20}),
    3: ("00003", X0 + 0.0030, Y0 + 0.0010, {1: 8, 2: 8}),
    4: ("00004", X0 + 0.0032, Y0 + 0.0016, {}),
}


def build(conn: Connection, *, second_version: bool = True) -> dict:
    """Write the community into an empty migrated database; returns ids by name."""
    x = conn.execute
    x(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (1, :v, 'v1')"), {"v": V1})
    x(text("INSERT INTO streets (id, code, name) VALUES (1, :c, '测试街道')"), {"c": STREET})
    x(text("INSERT INTO communities (id, code, name, street_id) VALUES (1, :c, '测试社区', 1)"), {"c": COMMUNITY})
    x(text("INSERT INTO grids (id, code, name, kind, community_id) VALUES "
           "(1, :w, '西网格', 'comprehensive', 1), (2, :e, '东网格', 'comprehensive', 1)"), {"w": GRID_W, "e": GRID_E})
    whole = _box(X0, Y0, X0 + 0.004, Y0 + 0.002)
    x(text("INSERT INTO street_boundaries (street_id, version_id, valid_from, geom) VALUES (1, 1, :v, :g)"),
      {"v": V1, "g": whole})
    x(text("INSERT INTO community_boundaries (community_id, version_id, valid_from, geom) VALUES (1, 1, :v, :g)"),
      {"v": V1, "g": whole})
    end = V2 if second_version else None
    x(text("INSERT INTO grid_boundaries (grid_id, version_id, valid_from, valid_to, geom) VALUES "
           "(1, 1, :v, :e, :w), (2, 1, :v, :e, :east)"),
      {"v": V1, "e": end, "w": _box(X0, Y0, X0 + 0.002, Y0 + 0.002),
       "east": _box(X0 + 0.002, Y0, X0 + 0.004, Y0 + 0.002)})
    if second_version:
        x(text("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :v, 'v2')"), {"v": V2})
        x(text("INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) VALUES "
               "(1, 2, :v, :w), (2, 2, :v, :east)"),
          {"v": V2, "w": _box(X0, Y0, X0 + 0.001, Y0 + 0.002), "east": _box(X0 + 0.001, Y0, X0 + 0.004, Y0 + 0.002)})
    for bid, (code, cx, cy, units) in BUILDINGS.items():
        x(text("INSERT INTO buildings (id, code, name, community_id, use, geom) VALUES (:i, :c, :n, 1, :u, :g)"),
          {"i": bid, "c": code, "n": f"{bid}号楼", "u": "residential" if units else "commercial", "g": _bld(cx, cy)})
        for number, hh in units.items():
            x(text("INSERT INTO units (id, building_id, number, households, population) VALUES (:i, :b, :n, :h, :p)"),
              {"i": bid * 10 + number, "b": bid, "n": number, "h": hh, "p": hh * 3})
    x(text("SELECT setval(pg_get_serial_sequence('units', 'id'), 100)"))
    x(text("SELECT setval(pg_get_serial_sequence('buildings', 'id'), 100)"))
    return {"grids": {"W": 1, "E": 2}, "units": {"B1U1": 11, "B1U2": 12, "B2U1": 21, "B3U1": 31, "B3U2": 32}}


def person(conn: Connection, name: str, home: int | None = None, phone: str | None = None,
           public: bool = False) -> int:
    """Insert a person; returns the id."""
    return conn.execute(text("INSERT INTO people (name, phone, phone_public, party_member, home_building_id) "
                             "VALUES (:n, :p, :pub, false, :h) RETURNING id"),
                        {"n": name, "p": phone, "pub": public, "h": home}).scalar_one()


def assign(conn: Connection, person_id: int, role: str, target_type: str, target_id: int,
           households: int | None = None, start: str = "2025-01-01", end: str | None = None) -> int:
    """Insert an assignment; returns the id."""
    return conn.execute(text(
        f"INSERT INTO staff_assignments (person_id, role, target_type, {target_type}_id, households, valid_from, "
        "valid_to) VALUES (:p, :r, :t, :x, :h, :f, :e) RETURNING id"),
        {"p": person_id, "r": role, "t": target_type, "x": target_id, "h": households,
         "f": dt.date.fromisoformat(start), "e": dt.date.fromisoformat(end) if end else None}).scalar_one()


def staff(conn: Connection) -> dict:
    """The known staff, gaps included (over- and under-loaded stewards, a unit without a head, an ended
    part-timer); returns {"people": ids by name, "assignments": some assignment ids by key}."""
    p = {name: person(conn, name, home) for name, home in [
        ("王网格长", 1), ("李专职", 1), ("赵专职", 3), ("兼一", 1), ("兼二", 1), ("兼三", 1), ("兼四", 2),
        ("楼长一", 1), ("楼长三", 3), ("单元长11", 1), ("单元长12", 1), ("单元长21", 2), ("单元长31", 3),
        ("管家一", 1), ("管家二", 1), ("管家三", 2), ("管家四", 3), ("管家五", 3)]}
    a = {}
    a["chief"] = assign(conn, p["王网格长"], "grid_chief", "grid", 1)
    assign(conn, p["李专职"], "grid_worker_fulltime", "grid", 1)
    assign(conn, p["赵专职"], "grid_worker_fulltime", "grid", 2)
    for n in ("兼一", "兼二", "兼三"):
        assign(conn, p[n], "grid_worker_parttime", "grid", 1)
    a["pt4"] = assign(conn, p["兼四"], "grid_worker_parttime", "grid", 1, end="2025-04-01")
    assign(conn, p["楼长一"], "building_head", "building", 1)
    assign(conn, p["楼长三"], "building_head", "building", 3)
    for n, u in (("单元长11", 11), ("单元长12", 12), ("单元长21", 21), ("单元长31", 31)):
        assign(conn, p[n], "unit_head", "unit", u)
    a["s1"] = assign(conn, p["管家一"], "steward", "unit", 11)  # whole unit: 12
    assign(conn, p["管家二"], "steward", "unit", 12, 10)
    assign(conn, p["管家三"], "steward", "unit", 21, 15)
    assign(conn, p["管家三"], "steward", "unit", 31, 3)  # 管家三 serves 18: over 15
    assign(conn, p["管家四"], "steward", "unit", 31, 5)
    assign(conn, p["管家五"], "steward", "building", 3, 4)  # 4 households of B3 left by unit stewards: under 5
    return {"people": p, "assignments": a}


def build_staffed(engine: Engine) -> dict:
    """Write the community and its staff into an empty migrated database; returns what `staff` returns."""
    with engine.begin() as conn:
        build(conn)
        return staff(conn)


def bearer_headers(engine: Engine, users: dict[str, tuple[str, str | None]]) -> dict[str, dict]:
    """Create users {name: (role, jurisdiction code)}; returns bearer headers by name."""
    from api.auth import issue_token
    from geo.access.users import create_user

    headers = {}
    with Session(engine) as session:
        for name, (role, code) in users.items():
            user = create_user(session, name, "x" * 12, role, code)
            session.flush()
            headers[name] = {"Authorization": f"Bearer {issue_token(user)}"}
        session.commit()
    return headers


def api_client(engine: Engine, users: dict[str, tuple[str, str | None]]) -> Iterator[tuple]:
    """(TestClient on the app, bearer headers by user name) for users {name: (role, jurisdiction code)}."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    headers = bearer_headers(engine, users)
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        yield client, headers
