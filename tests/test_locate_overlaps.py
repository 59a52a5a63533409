"""Locate on real layers (issue 17 item 10): points in an overlap name every covering grid (`also_covered_by`, index
and PostGIS reference alike), every answer carries its grid's own boundary version, batch answers say why a point
has no grid and which grid is nearest, and a lookup during a rebuild answers at once from the previous index.

The district is the hand-drawn one of tests/test_locate.py plus grid A3, drawn in a later version across the A1|A2
edge: it overlaps both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import threading

import numpy as np
import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.locate.holder import IndexHolder
from geo.locate.index import LocateIndex
from geo.locate.reference import compare_with_reference, locate_sql
from geo.store import db
from tests.test_locate import A1, A2, B1, HAND_SQL, TZ, V1, A, X, Y, _token_headers, rect

A3 = A + "003"
V2 = dt.datetime(2025, 3, 1, tzinfo=TZ)
OVERLAP_SQL = [
    ("INSERT INTO boundary_versions (id, valid_from, label) VALUES (2, :v2, '补充网格')", {}),
    (f"INSERT INTO grids (id, code, name, kind, community_id) VALUES (5, '{A3}', '东风三网格', 'dedicated', 1)", {}),
    ("INSERT INTO grid_boundaries (id, grid_id, version_id, valid_from, geom) VALUES "
     "(5, 5, 2, :v2, ST_GeomFromEWKT(:g))", {"g": rect(0.5, 0.5, 1.5, 1.0)}),
]


@pytest.fixture(scope="module")
def overlap_engine():
    """A database of its own: the hand-drawn district with A3 overlapping A1 and A2 (dropped after the module)."""
    from tests.conftest import _create_database, _drop_database

    url = _create_database("gridatlas_overlap")
    db.migrate(url)
    engine = db.make_engine(url)
    with engine.begin() as conn:
        for sql, params in HAND_SQL + OVERLAP_SQL:
            conn.execute(text(sql), {"v1": V1, "v2": V2, **params})
    yield engine
    engine.dispose()
    _drop_database(url)


@pytest.fixture(scope="module")
def overlap_index(overlap_engine) -> LocateIndex:
    with overlap_engine.connect() as conn:
        return LocateIndex.from_db(conn)


@pytest.fixture
def overlap_client(overlap_engine):
    from api.main import create_app

    app = create_app(overlap_engine)
    app.state.locate_index = IndexHolder.for_engine(overlap_engine, poll_seconds=None)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client
    app.state.locate_index.close()


def codes(found: dict) -> list[str]:
    return [g["code"] for g in found["also_covered_by"]]


@pytest.mark.parametrize(("u", "v", "owner", "also"), [
    (0.75, 0.75, A1, [A3]),   # inside A1 and A3: the smaller code answers, A3 is named
    (1.25, 0.75, A2, [A3]),   # inside A2 and A3
    (1.0, 0.75, A1, [A3]),    # on the A1|A2 edge inside A3: A2 only touches it there, A3 holds it
    (0.5, 0.75, A1, []),      # on A3's outline inside A1: A3 does not hold it
    (1.75, 1.75, A2, []),     # no overlap here
])
def test_points_in_an_overlap_name_every_covering_grid(overlap_index, overlap_engine, u, v, owner, also):
    found = overlap_index.locate(X(u), Y(v))
    assert found["grid"]["code"] == owner and codes(found) == also
    with overlap_engine.connect() as conn:
        ref = locate_sql(conn, X(u), Y(v))
        ids = {r.code: r.id for r in conn.execute(text("SELECT id, code FROM grids"))}
    assert ref["grid"] == ids[owner] and ref["also_covered_by"] == [ids[c] for c in also]


def test_index_and_reference_agree_on_a_lattice_through_the_overlap(overlap_index, overlap_engine):
    grid = np.linspace(-0.5, 4.5, 41)  # steps of 1/8 unit: on every edge, vertex and overlap outline
    u, v = np.meshgrid(grid, np.linspace(-0.5, 2.5, 25))
    with overlap_engine.connect() as conn:
        result = compare_with_reference(overlap_index, conn, X(u.ravel()), Y(v.ravel()))
    kinds = result.pop("kinds")
    assert result == {k: 0 for k in result}, result
    also = overlap_index.locate_many(X(u.ravel()), Y(v.ravel()))
    assert len(also.also) > 10 and kinds["boundary"] > 50  # the lattice really crosses the overlap and edges


def test_the_answer_carries_its_grids_version_not_the_newest(overlap_client):
    inside_a1 = overlap_client.get("/v1/locate", params={"lon": X(0.25), "lat": Y(1.5)})
    assert inside_a1.status_code == 200, inside_a1.text
    body = inside_a1.json()
    assert body["grid"]["code"] == A1 and body["version"]["id"] == 1 and body["version"]["label"] == "初始版本"
    assert body["also_covered_by"] == []
    in_overlap = overlap_client.get("/v1/locate", params={"lon": X(1.25), "lat": Y(0.75)}).json()
    assert in_overlap["version"]["id"] == 1  # A2 answers: its boundary is of version 1
    assert in_overlap["also_covered_by"] == [{"id": 5, "code": A3, "name": "东风三网格", "version_id": 2}]
    # the newest version overall is 2: the answer does not claim it
    assert overlap_client.app.state.locate_index.version_at()["id"] == 2


def _csv(text_out: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text_out), dtype=str, keep_default_na=False)


def test_batch_names_covering_grids_versions_and_why_a_point_has_none(overlap_client, overlap_engine):
    headers = {**_token_headers(overlap_engine, "admin", None), "Content-Type": "text/csv"}
    lines = ["id,lon,lat",
             f"a,{X(0.75)!r},{Y(0.75)!r}",     # 1 A1, also A3
             f"b,{X(3)!r},{Y(0.5)!r}",         # 2 B1 alone
             f"c,{X(-1)!r},{Y(1)!r}",          # 3 outside, beyond 30 m: the nearest is A1
             "d,abc,31.3",                     # 4 not a number
             f"e,{X(1.25)!r},{Y(0.75)!r}"]     # 5 A2, also A3
    r = overlap_client.post("/v1/locate/batch", content="\n".join(lines).encode(), headers=headers)
    assert r.status_code == 200, r.text
    df = _csv(r.text).set_index("id")
    assert list(df["grid_code"]) == [A1, B1, "", "", A2]
    assert df.loc["a", "also_covered_by"] == A3 and df.loc["e", "also_covered_by"] == A3
    assert df.loc["b", "also_covered_by"] == "" and df.loc["b", "reason"] == ""
    assert df.loc["a", "version_id"] == "1" and df.loc["b", "version_id"] == "1"
    assert df.loc["c", "nearest_grid_code"] == A1
    assert float(df.loc["c", "nearest_distance_m"]) == pytest.approx(X(0) - X(-1), rel=0.1, abs=250)
    assert "no grid within 30 m" in df.loc["c", "reason"] and A1 in df.loc["c", "reason"]
    assert "not a number" in df.loc["d", "error"] and df.loc["d", "reason"] == ""
    # the same as JSON lines, and the same as the single answers
    r = overlap_client.post("/v1/locate/batch", content="\n".join(lines).encode(),
                            headers={**headers, "Accept": "application/x-ndjson"})
    rows = {row.get("id"): row for row in map(orjson.loads, r.text.splitlines())}
    assert [g["code"] for g in rows["a"]["also_covered_by"]] == [A3] and "also_covered_by" not in rows["b"]
    assert rows["c"]["grid"] is None and rows["c"]["nearest"]["grid"]["code"] == A1
    single = overlap_client.get("/v1/locate", params={"lon": X(-1), "lat": Y(1)}).json()
    assert single["detail"] == rows["c"]["reason"]
    assert single["distance_m"] == rows["c"]["nearest"]["distance_m"]
    assert rows["a"]["version_id"] == 1 and rows["e"]["grid"]["code"] == A2


def test_a_lookup_during_a_rebuild_answers_at_once_from_the_previous_index(overlap_engine):
    conn = overlap_engine.connect()
    tx = conn.begin()
    gate, building = threading.Event(), threading.Event()
    builds = {"n": 0}

    @contextlib.contextmanager
    def connect():
        builds["n"] += 1
        if builds["n"] > 1:  # every rebuild after the first waits for the gate: a rebuild that takes "forever"
            building.set()
            gate.wait(60)
        yield conn

    holder = IndexHolder(connect, poll_seconds=None, stale_wait_seconds=0)
    try:
        first = holder.index_for()
        assert codes(first.locate(X(0.75), Y(0.75))) == [A3]
        conn.execute(text("DELETE FROM grid_boundaries WHERE grid_id = 5"))  # A3 goes (inside the test's tx)
        holder.boundaries_changed()
        assert building.wait(30), "the rebuild did not start"
        assert holder.stale and holder.peek() is first  # the request path takes it without a worker-thread hop
        answers: list = []
        reader = threading.Thread(target=lambda: answers.append(holder.index_for()))
        reader.start()
        reader.join(30)  # a lookup that waited for the rebuild would still be blocked on the gate
        assert not reader.is_alive() and answers == [first], "the lookup waited for the rebuild"
        old = answers[0].locate(X(0.75), Y(0.75))
        assert codes(old) == [A3] and old["grid"]["version_id"] == 1
        gate.set()
        holder.refresh(wait=True)
        new = holder.index_for()
        assert new is not first and not holder.stale and codes(new.locate(X(0.75), Y(0.75))) == []
    finally:
        gate.set()
        holder.close()
        tx.rollback()
        conn.close()
