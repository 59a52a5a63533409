"""Scale simulation (demo.scale): the loaded district tiled into copies beside it, and incidents multiplied.

Each copy is the district moved by whole metres with its own ids and district prefix: codes stay unique, copies do
not overlap, every building still lies in its own community's copy; added incidents are attributed to the copy of
their grid, fall in their months' partitions, and the rollups count them.
"""

from __future__ import annotations

from sqlalchemy import text

from demo.scale import TILED, add_incidents, lattice, tile_district
from geo.store.load import load_district

TILES = 4


def test_lattice_is_square_and_skips_the_original():
    """Copies 1 … n − 1 on ceil(√n) columns, one width plus the gap apart."""
    cells = lattice(5, 1000.0, 2000.0)
    assert [c[0] for c in cells] == [1, 2, 3, 4]
    assert cells[0] == (1, 1500.0, 0.0) and cells[2] == (3, 0.0, 2500.0)


def test_tiled_district_and_multiplied_incidents(migrated_engine, district):
    load_district(migrated_engine, district)
    with migrated_engine.connect() as conn:
        before = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TILED}
        base_incidents = conn.execute(text("SELECT count(*) FROM incidents")).scalar_one()
    tile_district(migrated_engine, TILES)
    with migrated_engine.connect() as conn:
        for t in TILED:
            assert conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() == TILES * before[t], t
        prefixes = conn.execute(text("SELECT count(DISTINCT substr(code, 1, 6)) FROM grids")).scalar_one()
        assert prefixes == TILES
        # copies lie side by side, touching nothing of another copy
        overlaps = conn.execute(text(
            "SELECT count(*) FROM street_boundaries a JOIN street_boundaries b ON a.street_id < b.street_id "
            "AND ST_Intersects(a.geom, b.geom) JOIN streets sa ON sa.id = a.street_id "
            "JOIN streets sb ON sb.id = b.street_id WHERE substr(sa.code, 1, 6) <> substr(sb.code, 1, 6)"
        )).scalar_one()
        assert overlaps == 0
        # each copied building lies in (the copy of) its community, as in the original
        outside = conn.execute(text(
            "SELECT count(*) FILTER (WHERE NOT ST_Covers(c.geom, ST_PointOnSurface(b.geom))), count(*) "
            "FROM buildings b JOIN community_boundaries c ON c.community_id = b.community_id")).one()
        assert outside[1] == TILES * before["buildings"] and outside[0] % TILES == 0
        # the copied grids' areas are the original's (moved, not distorted): within 0.1 %
        ratio = conn.execute(text(
            "SELECT max(abs(ST_Area(c.geom::geography) / ST_Area(o.geom::geography) - 1)) FROM grid_boundaries c "
            "JOIN grid_boundaries o ON o.grid_id = ((c.grid_id - 1) % (SELECT max(id) / 4 FROM grids)) + 1 "
            "WHERE c.grid_id <> o.grid_id")).scalar_one()
        assert ratio < 1e-3

    n = 3 * TILES * base_incidents + 123  # three years back and part of a fourth
    with migrated_engine.connect() as conn:
        in_default = conn.execute(text("SELECT count(*) FROM incidents_default")).scalar_one()
    result = add_incidents(migrated_engine, n)
    assert result["rows"] == n and result["statements"] == 4
    with migrated_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incidents")).scalar_one() == base_incidents + n
        # attributed to the copy of their grid: the point lies in that grid's boundary
        wrong = conn.execute(text(
            "SELECT count(*) FROM incidents i JOIN grid_boundaries g ON g.grid_id = i.grid_id "
            "WHERE NOT ST_Covers(g.geom, i.geom)")).scalar_one()
        attributed = conn.execute(text("SELECT count(*) FROM incidents WHERE grid_id IS NOT NULL")).scalar_one()
        assert attributed > 0.9 * (base_incidents + n) and wrong == 0
        assert conn.execute(text("SELECT sum(received) FROM incident_rollup WHERE level = 0")).scalar_one() \
            == base_incidents + n
        # the copies' months were created first: only originals older than the migration's window are there
        assert conn.execute(text("SELECT count(*) FROM incidents_default")).scalar_one() == in_default
    # a second call goes on further back in time, copying only the original year
    add_incidents(migrated_engine, 2 * base_incidents, bulk=False)
    with migrated_engine.connect() as conn:
        years = conn.execute(text("SELECT count(DISTINCT extract(year FROM reported_at)) FROM incidents")).scalar_one()
        assert years >= 5
        wrong = conn.execute(text(
            "SELECT count(*) FROM incidents i JOIN grid_boundaries g ON g.grid_id = i.grid_id "
            "WHERE NOT ST_Covers(g.geom, i.geom)")).scalar_one()
        assert wrong == 0
        assert conn.execute(text("SELECT sum(received) FROM incident_rollup WHERE level = 0")).scalar_one() \
            == 3 * base_incidents + n
