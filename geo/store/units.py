"""Units of the hierarchy (街道 street, 社区 community or 村 village, 网格 grid, 微网格 micro-grid) found by code.

Code lengths name the level in the default scheme (9/12/15/17–18 digits), but a deployment's own scheme may have
10-digit villages or 16-digit dedicated grids (data/code_schemes/): where the length does not say, the tables do.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: Each level's table and the incident/assignment column naming a unit of it.
UNIT_COLUMNS = {"streets": "street_id", "communities": "community_id", "grids": "grid_id",
                "micro_grids": "micro_grid_id"}
#: The default scheme's lengths; a code of another length is looked up in every level.
DEFAULT_LEVELS = {9: "streets", 12: "communities", 15: "grids", 17: "micro_grids", 18: "micro_grids"}


def unit_condition(code: str, alias: str = "i", param: str = "unit_code") -> tuple[str, dict]:
    """SQL keeping rows of `alias` inside the unit with this code (its *_id column), whatever the code's length."""
    level = DEFAULT_LEVELS.get(len(code))
    levels = [level] if level else list(UNIT_COLUMNS)
    sql = " OR ".join(f"{alias}.{UNIT_COLUMNS[t]} = (SELECT id FROM {t} WHERE code = :{param})" for t in levels)
    return f"({sql})", {param: code}


def level_of(conn: Connection, code: str) -> str | None:
    """The table of the unit with this code (streets, communities, grids, micro_grids), None when no unit has it."""
    guess = DEFAULT_LEVELS.get(len(code))
    order = [guess] if guess else []
    order += [t for t in UNIT_COLUMNS if t not in order]
    sql = " UNION ALL ".join(f"(SELECT {i} AS k FROM {t} WHERE code = :code LIMIT 1)" for i, t in enumerate(order))
    found = conn.execute(text(f"SELECT min(k) FROM ({sql}) u"), {"code": code}).scalar()
    return None if found is None else order[found]


def grid_code_of(conn: Connection, code: str) -> str:
    """The grid's code for a micro-grid's code (its grid, whatever the scheme's lengths); other codes unchanged."""
    if level_of(conn, code) != "micro_grids":
        return code
    return conn.execute(text("SELECT g.code FROM micro_grids m JOIN grids g ON g.id = m.grid_id "
                             "WHERE m.code = :code"), {"code": code}).scalar_one()
