"""The tile cache (geo.features.tile_cache): a cached tile costs no tile SQL and no version query, If-None-Match
answers 304 from it, jurisdictions and versions never share an entry, a publish in this process and an edit heard
through the database's notification make old tiles unreachable at once, incidents are never cached, and the cache
keeps to its byte bound."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from geo.features import tiles as ft
from geo.features.collections import When
from geo.features.tile_cache import ENTRY_OVERHEAD, TileCache, finish

mvt = pytest.importorskip("mapbox_vector_tile", reason="pip install mapbox-vector-tile (a dev dependency)")


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


@contextlib.contextmanager
def statements(engine, only=None):
    """The SQL statements run on `engine`'s connections meanwhile (on `only` when given: the test's own connection,
    not another thread's, such as a locate index of an earlier test's app polling)."""
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        if only is None or conn is only:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def _tile_sql(seen: list[str]) -> int:
    return sum("ST_AsMVT(" in s for s in seen)


def _version_sql(seen: list[str]) -> int:
    return sum("boundary_versions" in s for s in seen)


def _features(r) -> list[dict]:
    assert r.status_code in (200, 204), r.text
    if r.status_code == 204:
        return []
    return next(iter(mvt.decode(r.content).values()))["features"]


def _place(conn) -> dict:
    """A community with two neighbouring grids, and a point inside the first."""
    row = conn.execute(text(
        "SELECT a.code, b.code, c.code, ST_X(ST_PointOnSurface(a.geom)), ST_Y(ST_PointOnSurface(a.geom)) "
        "FROM current_grids a JOIN current_grids b ON a.community_id = b.community_id AND a.code < b.code "
        "AND ST_Length(ST_Intersection(ST_Boundary(a.geom), ST_Boundary(b.geom))) > 1e-5 "
        "JOIN communities c ON c.id = a.community_id ORDER BY a.code LIMIT 1")).one()
    return {"grid": row[0], "neighbour": row[1], "community": row[2], "lon": row[3], "lat": row[4]}


@pytest.fixture
def place(db_session) -> dict:
    return _place(db_session)


def test_a_cached_tile_costs_no_tile_sql_nor_version_query(client, app, engine, db_session, admin_headers, place):
    z = 14
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    with statements(engine, db_session.connection()) as first:
        a = client.get(url, headers={**admin_headers, "Accept-Encoding": "gzip"})
    assert a.status_code == 200 and _tile_sql(first) == 1  # (the request's statements are seen)
    with statements(engine, db_session.connection()) as second:
        b = client.get(url, headers={**admin_headers, "Accept-Encoding": "gzip"})
    assert b.status_code == 200 and b.content == a.content and b.headers["etag"] == a.headers["etag"]
    assert b.headers["content-encoding"] == "gzip" and "private" in b.headers["cache-control"]
    assert _tile_sql(second) == 0 and _version_sql(second) == 0, second
    cache = app.state.tile_cache
    assert cache.hits >= 1 and len(cache) >= 1 and 0 < cache.size_bytes <= cache.max_bytes
    # If-None-Match: 304 from the cache, nothing cut
    with statements(engine, db_session.connection()) as third:
        c = client.get(url, headers={**admin_headers, "If-None-Match": a.headers["etag"]})
    assert c.status_code == 304 and c.content == b"" and _tile_sql(third) == 0
    # a client without gzip gets the same tile uncompressed
    plain = client.get(url, headers={**admin_headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and mvt.decode(plain.content) == mvt.decode(a.content)


def test_jurisdictions_and_versions_never_share_an_entry(client, admin_headers, make_user, place):
    z = 13
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    everything = {f["properties"]["code"] for f in _features(client.get(url, headers=admin_headers))}
    leader = make_user("leader", place["community"])["headers"]
    mine = {f["properties"]["code"] for f in _features(client.get(url, headers=leader))}
    assert mine and mine == {c for c in everything if c.startswith(place["community"])} and mine < everything
    # the admin's entry is still the admin's, and a date before the first version is another entry (empty)
    assert {f["properties"]["code"] for f in _features(client.get(url, headers=admin_headers))} == everything
    assert client.get(url, params={"at": "2000-01-01"}, headers=admin_headers).status_code == 204
    assert client.get(url, headers=admin_headers).status_code == 200


def test_incident_tiles_are_never_cached(client, engine, admin_headers, place):
    z = 12
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/incidents/{z}/{x}/{y}.mvt"

    def total() -> int:
        return sum(f["properties"]["count"] for f in _features(client.get(url, headers=admin_headers)))

    n = total()
    body = {"lon": place["lon"], "lat": place["lat"], "class_code": "A01", "source": "patrol",
            "description": "瓦片缓存测试"}
    assert client.post("/v1/incidents", json=body, headers=admin_headers).status_code == 201
    with statements(engine) as seen:
        assert total() == n + 1
    assert _tile_sql(seen) == 1


@pytest.fixture
def committed(migrated_engine, district):
    """A database of its own holding the test district, whose writes commit (and notify)."""
    from geo.store.load import load_district

    load_district(migrated_engine, district)
    return migrated_engine


def _merge_plan(client, conn, planner: dict, community: str, codes: tuple[str, str]) -> dict:
    """A draft of `community` merging the two grids `codes`; returns the plan as created."""
    from geo.plans import drafts as plans

    plan = client.post("/v1/plans", json={"community_code": community}, headers=planner).json()
    state = plans.load_state(conn, plan["id"])
    keys = [u["key"] for u in state.live("grid") if u["code"] in codes]
    assert len(keys) == 2, (codes, [u["code"] for u in state.live("grid")])
    r = client.post(f"/v1/plans/{plan['id']}/operations", json={"type": "merge", "keys": keys},
                    headers={**planner, "If-Match": plan["etag"]})
    assert r.status_code == 200, r.text
    return plan


def test_a_publish_here_and_an_edit_elsewhere_make_old_tiles_unreachable(committed):
    """Two apps hold a tile. A publish through the first changes its tile before the publish answers (its cache
    has no listener: only the commit in this process can tell it); a boundary edit committed by another writer
    (psql, an import, another process) reaches the second through the database's notification."""
    from api.auth import issue_token
    from api.main import create_app
    from geo.access.users import create_user
    from geo.store.db import session_scope

    with committed.connect() as conn:
        place = _place(conn)
    with session_scope(committed) as s:
        planner = {"Authorization": "Bearer " + issue_token(
            create_user(s, "tile-planner", "x" * 16, "planner", place["community"]))}
    z = 15
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    deaf = create_app(committed)
    deaf.state.tile_cache = TileCache(8 << 20)  # hears no notification
    with (TestClient(deaf, raise_server_exceptions=False) as one,
          TestClient(create_app(committed), raise_server_exceptions=False) as two):
        before = [c.get(url, headers=planner) for c in (one, two)]
        assert before[0].headers["etag"] == before[1].headers["etag"]
        assert place["grid"] in {f["properties"]["code"] for f in _features(before[0])}
        caches = [c.app.state.tile_cache for c in (one, two)]  # type: ignore[attr-defined]
        assert caches[0] is not caches[1] and all(len(c) == 1 for c in caches)

        with committed.connect() as conn:
            plan = _merge_plan(one, conn, planner, place["community"], (place["grid"], place["neighbour"]))
        pub = one.post(f"/v1/plans/{plan['id']}/publish", json={"allow_errors": True},
                       headers={**planner, "If-Match": plan["published_etag"]})
        assert pub.status_code == 200, pub.text
        version = pub.json()["version_id"]
        after = one.get(url, headers={**planner, "If-None-Match": before[0].headers["etag"]})  # no waiting
        assert after.status_code == 200 and f"-v{version}-" in after.headers["etag"]
        features = _features(after)
        assert any(f["properties"]["version_id"] == version for f in features)
        assert not {place["grid"], place["neighbour"]} <= {f["properties"]["code"] for f in features}

        with committed.connect() as conn:
            boundary = conn.execute(text(
                "SELECT b.id FROM grid_boundaries b JOIN grids g ON g.id = b.grid_id WHERE b.valid_to IS NULL "
                "AND ST_Intersects(b.geom, ST_Transform(ST_TileEnvelope(:z, :x, :y), 4326)) ORDER BY g.code "
                "LIMIT 1"), {"z": z, "x": x, "y": y}).scalar_one()
        assert two.get(url, headers=planner).headers["etag"] == after.headers["etag"]
        assert "改名测试网格" not in {f["properties"]["name"] for f in _features(two.get(url, headers=planner))}
        since = time.monotonic()
        plain = committed.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain, autocommit=True) as other:  # another writer, committing at once
            other.execute("UPDATE grid_boundaries SET name = '改名测试网格' WHERE id = %s", (boundary,))
        assert caches[1].heard_since(since, timeout=10)
        assert "改名测试网格" in {f["properties"]["name"] for f in _features(two.get(url, headers=planner))}


def _ready(cache: TileCache) -> TileCache:
    """As if the versions were read (none yet), so keys can be made without a database."""
    cache._versions_generation, cache._versions_until = cache.generation, math.inf
    return cache


def test_the_cache_keeps_to_its_byte_bound_least_recently_used_out():
    cache = _ready(TileCache(max_bytes=3 * (300 + ENTRY_OVERHEAD)))
    keys = [cache.key("grids", 14, i, 0, When(), None) for i in range(5)]
    small = finish(ft.Tile(b"\x1a" * 300, None, "s"))
    assert not small.gzipped and small.plain() == b"\x1a" * 300
    for k in keys[:3]:
        cache.put(k, small)
    assert len(cache) == 3 and cache.size_bytes == cache.max_bytes
    assert cache.get(keys[0]) is small  # used again: the second is now the least recently used
    cache.put(keys[3], small)
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is small and cache.get(keys[3]) is small
    big = finish(ft.Tile(bytes(4096), None, "z"))  # compressible: kept gzipped
    assert big.gzipped and len(big.body) < 100 and big.plain() == bytes(4096)
    cache.put(keys[4], big)
    assert cache.size_bytes <= cache.max_bytes and cache.get(keys[4]) is big
    # a change heard empties it, and a key made before the change is refused
    cache.boundaries_changed()
    assert len(cache) == 0 and cache.size_bytes == 0
    cache.put(keys[0], small)
    assert len(cache) == 0 and cache.key("grids", 14, 0, 0, When(), None) is None  # versions to be read again


def test_entries_expire_and_some_layers_are_never_kept():
    young = _ready(TileCache(max_bytes=10_000))
    k = young.key("buildings", 16, 1, 1, When(), "3205")
    young.put(k, finish(ft.Tile(b"x", None, "s"), ttl_s=0.0))
    assert young.get(k) is None
    assert young.key("incidents", 15, 1, 1, When(), None) is None
    assert _ready(TileCache(max_bytes=0)).key("grids", 15, 1, 1, When(), None) is None  # size 0: off
    # the version in memory decides the key: one before the first version, another after it
    young._starts, young._ids = [dt.datetime(2025, 1, 1, tzinfo=dt.UTC)], [7]
    old = young.key("grids", 15, 1, 1, When(instant=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)), None)
    now = young.key("grids", 15, 1, 1, When(), None)
    assert old is not None and now is not None and old[6] is None and now[6] == 7


def test_credentials_are_checked_once_per_interval_and_tokens_every_time(client, app, engine, db_session, make_user,
                                                                         place, monkeypatch):
    import datetime as _dt

    from api.auth import issue_token
    from api.routers import tiles as router

    made = make_user("leader", place["community"])
    z = 16
    x, y = tile_of(place["lon"], place["lat"], z)
    url = f"/tiles/grids/{z}/{x}/{y}.mvt"
    with statements(engine, db_session.connection()) as first:
        assert client.get(url, headers=made["headers"]).status_code == 200
    assert [s for s in first if "users" in s] and _tile_sql(first) == 1
    with statements(engine, db_session.connection()) as seen:
        assert client.get(url, headers=made["headers"]).status_code == 200
    assert not seen, seen  # the credential believed and the tile cached: no database round trip at all
    # a remembered token is still checked for its signature and expiry on every tile
    expired = issue_token(made["user"], lifetime=_dt.timedelta(seconds=-1))
    principal, _, claims = next(iter(app.state.tile_principals.values()))
    app.state.tile_principals[("bearer", expired)] = (principal, math.inf, claims)
    r = client.get(url, headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    # past the interval the database is asked again: a disabled user is refused
    admin = make_user("admin")["headers"]
    assert client.patch(f"/v1/users/{made['username']}", json={"disabled": True}, headers=admin).status_code == 200
    monkeypatch.setattr(router, "PRINCIPAL_TTL_S", 0.0)
    app.state.tile_principals.clear()
    assert client.get(url, headers=made["headers"]).status_code == 401
    assert client.get(url).status_code == 401  # and no credentials at all, as ever


def test_what_no_notification_covers_is_kept_a_minute_at_most(client, app, admin_headers, place):
    z = 16
    x, y = tile_of(place["lon"], place["lat"], z)
    for layer in ("grids", "buildings"):
        assert client.get(f"/tiles/{layer}/{z}/{x}/{y}.mvt", headers=admin_headers).status_code in (200, 204)
    entries = {key[0]: entry for key, entry in app.state.tile_cache._entries.items()}
    assert entries["grids"].expires == math.inf  # notified: kept until a change is heard
    assert entries["buildings"].expires <= time.monotonic() + 60  # a building's units notify nothing
