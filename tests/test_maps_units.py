"""The heatmap page's labels around an area whose code is not of the default lengths: a 16-digit dedicated grid
(and its 19-digit micro-grid) names its own grid, its community and its street, found through the tables, not by
slicing the code (geo.incidents.heat_cube.label_prefixes)."""

from __future__ import annotations

from sqlalchemy import text

from geo.incidents.heat_cube import label_prefixes


def _dedicated_grid(db_session, number: str = "9001") -> tuple[str, str, str, str]:
    """A 16-digit dedicated grid (with a 19-digit micro-grid) over a corner of the first community, in force now:
    (grid code, micro-grid code, community code, street code)."""
    conn = db_session.connection()
    cid, community, street = conn.execute(text(
        "SELECT c.id, c.code, s.code FROM communities c JOIN streets s ON s.id = c.street_id "
        "ORDER BY c.code LIMIT 1")).one()
    code = community + number
    gid = conn.execute(text("INSERT INTO grids (code, name, kind, dedicated_type, community_id) "
                            "VALUES (:c, '专属测试网格', 'dedicated', 'school', :cid) RETURNING id"),
                       {"c": code, "cid": cid}).scalar_one()
    conn.execute(text("""
        INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom)
        SELECT :g, b.version_id, b.valid_from,
               ST_Multi(ST_Intersection(b.geom, ST_Buffer(ST_PointOnSurface(b.geom), 0.0005)))
        FROM community_boundaries b WHERE b.community_id = :cid AND b.valid_to IS NULL"""), {"g": gid, "cid": cid})
    micro = code + "001"
    conn.execute(text("INSERT INTO micro_grids (code, name, grid_id) VALUES (:c, '专属微网格', :g)"),
                 {"c": micro, "g": gid})
    return code, micro, community, street


def test_label_prefixes_of_every_level_in_any_scheme(db_session):
    grid, micro, community, street = _dedicated_grid(db_session)
    conn = db_session.connection()
    assert label_prefixes(conn, None) == {"grid": None, "community": None, "street": None}
    assert label_prefixes(conn, grid) == {"grid": grid, "community": community, "street": street}
    assert label_prefixes(conn, micro) == {"grid": grid, "community": community, "street": street}
    assert label_prefixes(conn, community) == {"grid": community, "community": community, "street": street}
    assert label_prefixes(conn, street) == {"grid": street, "community": street, "street": street}
    # a code no unit has selects nothing (not a neighbour found by slicing)
    assert label_prefixes(conn, "9" * 16) == {"grid": "9" * 16, "community": "9" * 16, "street": "9" * 16}


def test_heatmap_data_of_a_16_digit_grid_names_it_and_its_community(client, admin_headers, db_session):
    grid, _, community, street = _dedicated_grid(db_session)
    _dedicated_grid(db_session, "9002")  # a sibling sharing the first 15 digits: not part of the area
    r = client.get("/maps/heatmap/data", params={"grid": grid, "permutations": 0}, headers=admin_headers)
    assert r.status_code == 200, r.text
    d = r.json()
    assert [g["code"] for g in d["grids"]] == [grid] and d["grids"][0]["name"] == "专属测试网格"
    assert [c["code"] for c in d["communities"]] == [community]
    assert [s["code"] for s in d["streets"]] == [street]
