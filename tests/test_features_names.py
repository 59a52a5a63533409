"""OGC API Features name a unit as it was called at `at=` / `datetime`: a grid and a micro-grid renamed by a published
plan (a rename starts a boundary row that keeps the name, migration 0017) answer their old names before the
publish and their new ones after it, in GeoJSON, in the HTML view, in property filters and in intervals."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from geo.plans import drafts as plans

NEW_GRID, NEW_MICRO = "滨江改名网格", "滨江改名网格第1微网格"


@pytest.fixture
def renamed(db_session) -> dict:
    """A grid with micro-grids and one of them renamed by a published plan, with instants before and after."""
    from geo.plans.publish import publish

    conn = db_session.connection()
    community = db_session.execute(text(
        "SELECT c.code FROM communities c JOIN grids g ON g.community_id = c.id JOIN micro_grids m ON m.grid_id = g.id "
        "ORDER BY c.code LIMIT 1")).scalar_one()
    plan_id = plans.create_plan(conn, community, "tester")
    state = plans.load_state(conn, plan_id)
    g = next(r for r in state.live("grid") if state.live("micro_grid", r["key"]))
    m = state.live("micro_grid", g["key"])[0]
    plans.apply_operation(conn, plan_id, {"type": "rename", "key": g["key"], "name": NEW_GRID})
    plans.apply_operation(conn, plan_id, {"type": "rename", "key": m["key"], "name": NEW_MICRO})
    out = publish(conn, plan_id, "tester", allow_errors=True)
    published = dt.datetime.fromisoformat(out["valid_from"])
    codes = dict(db_session.execute(text(
        "SELECT 'grid', code FROM grids WHERE id = :g UNION ALL SELECT 'micro', code FROM micro_grids WHERE id = :m"),
        {"g": g["unit_id"], "m": m["unit_id"]}).all())
    assert g["name"] != NEW_GRID and m["name"] != NEW_MICRO
    return {"grid": codes["grid"], "micro": codes["micro"], "old_grid": g["name"], "old_micro": m["name"],
            "before": (published - dt.timedelta(seconds=1)).isoformat(),
            "after": (published + dt.timedelta(seconds=1)).isoformat(), "published": published}


def _features(client, headers, collection: str, **params) -> list[dict]:
    r = client.get(f"/ogc/collections/{collection}/items", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["features"]


def _names(client, headers, collection: str, code: str, **params) -> list[str]:
    return [f["properties"]["name"] for f in _features(client, headers, collection, code=code, **params)]


def test_grid_name_before_and_after_the_rename(client, admin_headers, renamed):
    g = renamed["grid"]
    assert _names(client, admin_headers, "grids", g) == [NEW_GRID]  # now
    assert _names(client, admin_headers, "grids", g, at=renamed["before"]) == [renamed["old_grid"]]
    assert _names(client, admin_headers, "grids", g, datetime=renamed["before"]) == [renamed["old_grid"]]
    assert _names(client, admin_headers, "grids", g, at=renamed["after"]) == [NEW_GRID]
    # an interval over the publish: one feature per boundary version, each with the name it had
    span = f"{renamed['before']}/{renamed['after']}"
    assert sorted(_names(client, admin_headers, "grids", g, datetime=span)) == sorted([renamed["old_grid"], NEW_GRID])
    # the name filter reads the name of the time asked about
    assert [f["properties"]["code"] for f in _features(client, admin_headers, "grids", name=renamed["old_grid"],
                                                       at=renamed["before"])] == [g]
    assert _features(client, admin_headers, "grids", name=renamed["old_grid"], code=g) == []
    assert _features(client, admin_headers, "grids", name=NEW_GRID, at=renamed["before"]) == []


def test_micro_grid_and_its_grid_name_at_the_time(client, admin_headers, renamed):
    m = renamed["micro"]
    [before] = _features(client, admin_headers, "micro_grids", code=m, at=renamed["before"])
    assert (before["properties"]["name"], before["properties"]["grid_name"]) == (renamed["old_micro"],
                                                                                 renamed["old_grid"])
    [after] = _features(client, admin_headers, "micro_grids", code=m)
    assert (after["properties"]["name"], after["properties"]["grid_name"]) == (NEW_MICRO, NEW_GRID)
    # one boundary version by its id keeps its own name
    old = client.get(f"/ogc/collections/micro_grids/items/{before['id']}", headers=admin_headers)
    assert old.status_code == 200 and old.json()["properties"]["name"] == renamed["old_micro"]


def test_html_view_names_the_unit_as_it_was(client, admin_headers, renamed):
    def page(**params) -> str:
        r = client.get("/ogc/collections/grids/items", params={"code": renamed["grid"], "f": "html", **params},
                       headers=admin_headers)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text
        return r.text

    before = page(at=renamed["before"])
    assert renamed["old_grid"] in before and NEW_GRID not in before
    after = page(at=renamed["after"])
    assert NEW_GRID in after and renamed["old_grid"] not in after


def test_jurisdiction_name_is_the_name_in_force(db_session, renamed):
    """The home page's jurisdiction (a grid leader's) names the grid as it is called at the instant asked about."""
    from geo.features.overview import jurisdiction

    conn = db_session.connection()
    assert jurisdiction(conn, renamed["grid"])["name"] == NEW_GRID
    before = renamed["published"] - dt.timedelta(seconds=1)
    assert jurisdiction(conn, renamed["grid"], at=before)["name"] == renamed["old_grid"]
