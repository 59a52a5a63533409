"""No request waits for a rebuild (issue 17 item 10): a publish, rollback or small import is patched into the locate
index (only the changed units read) before the writer's commit returns, other processes' holders patch it in from
the database's notification, and a patched index answers exactly as one built from scratch and as PostGIS.

A large change is a full rebuild in the background while the previous index answers at once (with its versions).
`at=` names grids and micro-grids as they were called then (name history, migration 0017).
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import mapping
from sqlalchemy import text

from geo.locate.holder import IndexHolder
from geo.locate.index import LocateIndex
from geo.locate.reference import agreement_points, compare_with_reference
from geo.plans import drafts as plans
from geo.plans.publish import publish, rollback
from geo.store import db

#: Points compared per check (a quarter on vertices, a quarter on edges: the cases a patched raster could miss).
N_POINTS = 20_000


@pytest.fixture(scope="module")
def fresh_engine(district):
    """A database of its own holding the scale-0.05 district: these tests commit publishes."""
    from geo.store.load import load_district
    from tests.conftest import _create_database, _drop_database

    url = _create_database("gridatlas_incr")
    db.migrate(url)
    eng = db.make_engine(db.service_url_for(url))
    load_district(eng, district)
    yield eng
    eng.dispose()
    _drop_database(url)


@pytest.fixture
def holder(fresh_engine):
    """This process's holder, listening like a service's, with its index built."""
    h = IndexHolder.for_engine(fresh_engine, poll_seconds=None)
    h.index_for()
    yield h
    h.close()


def _communities(engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT c.code FROM communities c WHERE (SELECT count(*) FROM current_grids g "
            "WHERE g.community_id = c.id) >= 3 ORDER BY c.code")).scalars().all()


def _edit_and_publish(engine, code: str, rng: np.random.Generator) -> dict:
    """In one committed session: a plan of community `code` with a split, a merge and a rename, published."""
    with db.session_scope(engine) as session:
        conn = session.connection()
        plan_id = plans.create_plan(conn, code, "tester")
        state = plans.load_state(conn, plan_id)
        grids = sorted(state.live("grid"), key=lambda r: -shapely.area(r["geom"]))
        big = grids[0]
        minx, miny, maxx, maxy = shapely.bounds(big["geom"])
        x = minx + (maxx - minx) * rng.uniform(0.35, 0.65)
        line = shapely.LineString([(x, miny - 0.001), (x, maxy + 0.001)])
        plans.apply_operation(conn, plan_id, {"type": "split", "key": big["key"], "line": mapping(line)})
        state = plans.load_state(conn, plan_id)
        others = [r for r in state.live("grid") if r["unit_id"] is not None and r["key"] != big["key"]]
        a = others[int(rng.integers(len(others)))]
        touching = [r for r in others if r["key"] != a["key"]
                    and shapely.length(shapely.intersection(r["geom"], a["geom"])) > 1e-5]
        if touching:
            plans.apply_operation(conn, plan_id, {"type": "merge", "keys": [a["key"], touching[0]["key"]]})
        renamed = next(r for r in plans.load_state(conn, plan_id).live("grid")
                       if r["unit_id"] is not None and r["key"] not in {a["key"], big["key"]})
        plans.apply_operation(conn, plan_id, {"type": "rename", "key": renamed["key"], "name": f"改名{code[-3:]}"})
        out = publish(conn, plan_id, "tester", allow_errors=True)
    return {**out, "renamed_id": renamed["unit_id"], "old_name": renamed["name"], "new_name": f"改名{code[-3:]}"}


def _same_answers(patched: LocateIndex, scratch: LocateIndex, lon: np.ndarray, lat: np.ndarray) -> None:
    """Every level's unit (by id), match, distance and overlap list agree point for point, and so do the records."""
    a = patched.locate_many(lon, lat, 30.0, nearest_beyond=True)
    b = scratch.locate_many(lon, lat, 30.0, nearest_beyond=True)
    for key in ("street", "community", "grid", "micro_grid", "compound", "building"):
        ids_a = np.where(a.pos[key] >= 0, patched.levels[key].ids[np.maximum(a.pos[key], 0)], -1)
        ids_b = np.where(b.pos[key] >= 0, scratch.levels[key].ids[np.maximum(b.pos[key], 0)], -1)
        assert (ids_a == ids_b).all(), (key, int((ids_a != ids_b).sum()))
        assert patched.levels[key].records == scratch.levels[key].records, key
    assert (a.match == b.match).all()
    assert np.allclose(a.distance_m, b.distance_m, equal_nan=True)
    assert a.also == b.also
    assert (a.nearest_pos is None) == (b.nearest_pos is None)
    if a.nearest_pos is not None and b.nearest_pos is not None:
        assert (a.nearest_pos == b.nearest_pos).all()
    assert patched.bounds == scratch.bounds and patched.epsg == scratch.epsg


def _check(engine, index: LocateIndex, seed: int) -> None:
    with engine.connect() as conn:
        scratch = LocateIndex.from_db(conn)
        lon, lat = agreement_points(scratch, N_POINTS, seed=seed)
        _same_answers(index, scratch, lon, lat)
        result = compare_with_reference(index, conn, lon, lat)
    result.pop("kinds")
    assert result == {k: 0 for k in result}, result


def test_a_publish_is_patched_in_before_the_writers_commit_returns(fresh_engine, holder):
    """Three random plans (split, merge, rename) published one after another: each is in the index as soon as the
    publishing session's commit returns (no wait, no rebuild), and answers as a from-scratch index and PostGIS do;
    a rollback is patched in the same way."""
    rng = np.random.default_rng(17)
    codes = _communities(fresh_engine)
    chosen = [codes[i] for i in rng.choice(len(codes), 3, replace=False)]
    for round_, code in enumerate(chosen, start=1):
        out = _edit_and_publish(fresh_engine, code, rng)
        index = holder.peek()  # straight after the commit: nothing waited for
        assert index is not None and (holder.patches, holder.swaps) == (round_, 1)
        assert out["version_id"] in index.versions
        assert holder.version_at()["id"] == out["version_id"]
        grid = index.levels["grid"]
        assert grid.records[int(grid.positions([out["renamed_id"]])[0])]["name"] == out["new_name"]
        _check(fresh_engine, index, seed=round_)
    with db.session_scope(fresh_engine) as session:
        undone = rollback(session.connection(), out["version_id"], "tester")
    index = holder.peek()
    assert index is not None and holder.patches == 4 and holder.swaps == 1
    assert max(index.versions) == undone["results"][0]["version_id"]
    assert index.levels["grid"].records[int(index.levels["grid"].positions([out["renamed_id"]])[0])]["name"] == \
        out["old_name"]
    _check(fresh_engine, index, seed=9)


def test_another_process_patches_it_in_from_the_notification(fresh_engine, holder):
    """A holder with no part in the write (another worker) hears the commit and patches it in, without a rebuild."""
    other = IndexHolder.for_engine(fresh_engine, poll_seconds=None)
    try:
        other.index_for()
        code = _communities(fresh_engine)[0]
        out = _edit_and_publish(fresh_engine, code, np.random.default_rng(3))
        # the writer's process is patched; the other one by its listener thread (a deadline, not a speed)
        deadline = time.monotonic() + 30
        while out["version_id"] not in other.index_for().versions and time.monotonic() < deadline:
            time.sleep(0.01)
        index = other.index_for()
        assert out["version_id"] in index.versions
        assert other.swaps == 1 and other.patches >= 1
        _check(fresh_engine, index, seed=21)
    finally:
        other.close()


def test_a_large_change_rebuilds_in_the_background_while_the_previous_index_answers(fresh_engine, holder):
    """Over `max_patch_units` the change is a full rebuild in a background thread: a lookup meanwhile answers at
    once from the previous index, naming the version of the grid that answered; then the new index is in."""
    holder.max_patch_units = 1
    before = holder.peek()
    assert before is not None
    release = threading.Event()
    build = holder._build_state

    def held_build():
        release.wait(60)
        return build()

    holder._build_state = held_build
    code = _communities(fresh_engine)[1]
    out = _edit_and_publish(fresh_engine, code, np.random.default_rng(5))
    try:
        # the rebuild is held: lookups answer at once from the previous index, with that index's versions
        index = holder.index_for()
        assert index is before and out["version_id"] not in index.versions
        x, y = shapely.get_coordinates(shapely.point_on_surface(index.levels["grid"].geoms[:1]))[0]
        found = index.locate(x, y)
        assert index.version_of(found["grid"])["id"] < out["version_id"]
    finally:
        release.set()
    assert holder.wait_rebuilt(60)
    deadline = time.monotonic() + 60
    while holder.swaps < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert holder.swaps == 2
    assert out["version_id"] in holder.index_for().versions
    _check(fresh_engine, holder.index_for(), seed=33)


def test_at_names_units_as_they_were_called_then(fresh_engine, holder):
    """A grid renamed by a publish: `at=` before it answers the old name (grid and the overlap/nearest records come
    from the same rows), now the new one; over HTTP too."""
    from api.main import create_app

    code = _communities(fresh_engine)[2]
    out = _edit_and_publish(fresh_engine, code, np.random.default_rng(8))
    published = dt.datetime.fromisoformat(out["valid_from"])
    before = published - dt.timedelta(seconds=1)
    with fresh_engine.connect() as conn:
        past = LocateIndex.from_db(conn, before)
    grid = past.levels["grid"]
    pos = int(grid.positions([out["renamed_id"]])[0])
    assert grid.records[pos]["name"] == out["old_name"]
    x, y = shapely.get_coordinates(shapely.point_on_surface(grid.geoms[pos]))[0]
    app = create_app(fresh_engine)
    app.state.locate_index = holder
    with TestClient(app, raise_server_exceptions=False) as client:
        then = client.get("/v1/locate", params={"lon": x, "lat": y, "at": before.isoformat()})
        now = client.get("/v1/locate", params={"lon": x, "lat": y})
    assert then.status_code == 200 and now.status_code == 200, (then.text, now.text)
    assert then.json()["grid"]["id"] == out["renamed_id"] and then.json()["grid"]["name"] == out["old_name"]
    assert now.json()["grid"]["id"] == out["renamed_id"] and now.json()["grid"]["name"] == out["new_name"]
