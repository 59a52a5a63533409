"""Which jurisdiction (辖区) a named thing lies in: the unit code behind an id a request names.

Requests name units by code (``grid_code``) or by the id of something inside one (``building_id``,
``incident_id`` …). `SCOPE_PARAMS` lists those names and, for ids, the SQL finding the code of the innermost unit
that holds the thing; `unit_code` runs it. The HTTP layer reads the names from the request and checks the codes
against the caller's jurisdiction (`Principal.ensure_covers`).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.errors import NotFound

#: The code of the grid holding building `b` (its point on surface, smallest code on a shared edge), else its
#: community's code.
_BUILDING_CODE = """
    coalesce(
        (SELECT g.code FROM current_grids g
          WHERE ST_Covers(g.geom, ST_PointOnSurface(b.geom)) ORDER BY g.code LIMIT 1),
        (SELECT c.code FROM communities c WHERE c.id = b.community_id))
"""

#: Parameters (path or query) that name a unit, and how to find the code whose jurisdiction contains it.
#: None: the value is itself a unit code. Otherwise SQL taking the id as ``:v``; no row means no such thing.
SCOPE_PARAMS: dict[str, str | None] = {
    "street_code": None,
    "community_code": None,
    "grid_code": None,
    "micro_grid_code": None,
    "code": None,
    "street_id": "SELECT code FROM streets WHERE id = :v",
    "community_id": "SELECT code FROM communities WHERE id = :v",
    "grid_id": "SELECT code FROM grids WHERE id = :v",
    "micro_grid_id": "SELECT code FROM micro_grids WHERE id = :v",
    "building_id": f"SELECT {_BUILDING_CODE} FROM buildings b WHERE b.id = :v",
    "unit_id": f"SELECT {_BUILDING_CODE} FROM units u JOIN buildings b ON b.id = u.building_id WHERE u.id = :v",
    "compound_id": "SELECT c.code FROM compounds k LEFT JOIN communities c ON c.id = k.community_id "
                   "WHERE k.id = :v",
    "incident_id": "SELECT coalesce(mg.code, g.code, c.code, s.code) FROM incidents i "
                   "LEFT JOIN micro_grids mg ON mg.id = i.micro_grid_id LEFT JOIN grids g ON g.id = i.grid_id "
                   "LEFT JOIN communities c ON c.id = i.community_id LEFT JOIN streets s ON s.id = i.street_id "
                   "WHERE i.id = :v",
    "assignment_id": f"SELECT coalesce(mg.code, g.code, (SELECT {_BUILDING_CODE} FROM buildings b "
                     "WHERE b.id = coalesce(a.building_id, u.building_id))) FROM staff_assignments a "
                     "LEFT JOIN micro_grids mg ON mg.id = a.micro_grid_id LEFT JOIN grids g ON g.id = a.grid_id "
                     "LEFT JOIN units u ON u.id = a.unit_id WHERE a.id = :v",
}

#: Ids at or beyond this cannot exist (the columns are 32-bit integers), and would make the query fail.
_MAX_ID = 2**31


def unit_code(session: Session, param: str, value: str | int) -> str | None:
    """The code of the unit holding what `param` (a key of SCOPE_PARAMS) names (None: district-wide);
    NotFound when nothing has that id."""
    sql = SCOPE_PARAMS[param]
    if sql is None:
        return str(value)
    ident = int(value)
    row = session.execute(text(sql), {"v": ident}).first() if 0 <= ident < _MAX_ID else None
    if row is None:
        raise NotFound(f"there is no {param.removesuffix('_id').replace('_', ' ')} {value}")
    return row[0]
