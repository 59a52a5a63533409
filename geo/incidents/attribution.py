"""Attribute points (incidents) to the street, community, grid, micro-grid, compound and building they fall in.

Attribution uses the boundary version in force at each incident's report time, so a later redraw does not
rewrite history. A point on a shared edge or vertex belongs to the covering unit with the smallest code (the
same rule as locate), so every point has exactly one owner.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from geo.store.versions import in_force


def _owner(level: str, boundary: str, fk: str, ts: str) -> str:
    return (
        f"(SELECT b.{fk} FROM {boundary} b JOIN {level} u ON u.id = b.{fk} "
        f"WHERE ST_Covers(b.geom, i.geom) AND {in_force('b', ts)} "
        f"ORDER BY u.code LIMIT 1)"
    )


def attribution_sql(ts: str = "i.reported_at", where: str = "TRUE") -> str:
    """A SELECT of (incident id, version and owners at `ts`) for the incidents matching `where`."""
    return f"""
        SELECT i.id,
          (SELECT v.id FROM boundary_versions v WHERE v.valid_from <= {ts} ORDER BY v.valid_from DESC LIMIT 1)
            AS version_id,
          {_owner('streets', 'street_boundaries', 'street_id', ts)} AS street_id,
          {_owner('communities', 'community_boundaries', 'community_id', ts)} AS community_id,
          {_owner('grids', 'grid_boundaries', 'grid_id', ts)} AS grid_id,
          {_owner('micro_grids', 'micro_grid_boundaries', 'micro_grid_id', ts)} AS micro_grid_id,
          (SELECT c.id FROM compounds c WHERE ST_Covers(c.geom, i.geom) ORDER BY c.id LIMIT 1) AS compound_id,
          (SELECT bl.id FROM buildings bl WHERE ST_Covers(bl.geom, i.geom) ORDER BY bl.id LIMIT 1) AS building_id
        FROM incidents i WHERE {where}
    """


def attribute_incidents(conn: Connection, where: str = "TRUE", params: dict | None = None) -> int:
    """Set each matching incident's owners by the boundaries in force at its report time; return rows updated."""
    result = conn.execute(
        text(
            f"""
            UPDATE incidents SET version_id = a.version_id, street_id = a.street_id,
                   community_id = a.community_id, grid_id = a.grid_id, micro_grid_id = a.micro_grid_id,
                   compound_id = a.compound_id, building_id = a.building_id
            FROM ({attribution_sql(where=where)}) a WHERE incidents.id = a.id
            """
        ),
        params or {},
    )
    return result.rowcount
