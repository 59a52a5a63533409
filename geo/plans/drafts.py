"""Redraw plans (改划方案): a draft copy of one community's (or one street's) grids and micro-grids, edited by
operations.

A plan copies the community's grids (网格) and micro-grids (微网格) in force when it is created into
``plan_units`` (key ``g<id>`` / ``m<id>`` for existing units, ``gn<n>`` / ``mn<n>`` for new ones). Each
operation rewrites some of those rows and stores their before-images in ``plan_operations``, so undo restores
exactly what the operation changed. The plan's ``revision`` is its ETag: an edit naming an older revision is
refused (`StaleRevision`) with the operations made since, so two planners never overwrite each other.

A street plan (街道方案) copies every community of the street; each grid row carries its ``community_id`` and
every operation works inside one community (the community of the units it names), so a grid never leaves its
community: the operation runs on the community's sub-state exactly as in a community plan.

Geometry work happens in EPSG:4326 (the storage CRS) so that edges shared by neighbours stay bit-identical;
measures (areas, widths) are taken in the community's UTM zone by geo.plans.validation.

Operations (``type``): ``replace_geometry``, ``split`` (along a LineString), ``merge``, ``move_buildings``,
``move_compounds`` (the moved area is the moved buildings' Voronoi cells inside their grid, plus the compounds'
own polygons: the geometry follows the buildings), ``create`` (carved out of the neighbours), ``retire``
(its area handed to ``into`` when given), ``rename`` and ``reshape`` (a vertex edit that keeps the partition: the
neighbours' shared edges follow, see `reshape`). Each works on grids or micro-grids (``level``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import mapping
from sqlalchemy import Connection, text

from geo.plans.errors import (
    InvalidPlanGeometry,
    NothingToUndo,
    OperationRefused,
    PlanError,
    PlanNotFound,
    PlanScopeNotFound,
    StaleRevision,
    refused_as,
)
from geo.plans.geometry_checks import check_near, checked_geojson
from geo.settings import get_settings
from geo.spatial.geometry import as_multipolygons, repair_polygons

LEVELS = ("grid", "micro_grid")
OP_TYPES = ("replace_geometry", "reshape", "split", "merge", "move_buildings", "move_compounds", "create", "retire",
            "rename", "suggestion")
#: Pieces smaller than this (square degrees, about 0.01 m²) are numerical dust from overlays, not land.
DUST_DEG2 = 1e-12
#: The largest id a plan, unit or version row can have (32-bit serial columns): a larger one names nothing.
ROW_ID_MAX = 2**31 - 1
COLUMNS = ("key", "level", "unit_id", "parent_key", "code", "name", "kind", "dedicated_type", "retired", "geom",
           "community_id")


# ------------------------------------------------------------------------------------------ geometry helpers

def clean(geom) -> shapely.MultiPolygon | None:
    """The polygonal part of a geometry as a valid MultiPolygon without dust, or None when nothing is left."""
    if geom is None or shapely.is_empty(geom):
        return None
    # GEOS's default make_valid ("linework"): the repair this module always used
    geom = repair_polygons([geom], method="linework")[0][0]
    if geom is None:
        return None
    parts = shapely.get_parts(geom)
    types = shapely.get_type_id(parts)
    # a GeometryCollection from make_valid/intersection nests polygons one level down
    nested = parts[types == 7]
    if nested.size:
        parts = np.concatenate([parts[types != 7], shapely.get_parts(nested)])
        types = shapely.get_type_id(parts)
    polys = parts[np.isin(types, (3, 6))]
    polys = shapely.get_parts(polys)
    polys = polys[shapely.area(polys) > DUST_DEG2]
    if polys.size == 0:
        return None
    return as_multipolygons([shapely.multipolygons(polys)])[0]


def geojson_geom(value, what: str = "geometry") -> shapely.Geometry:
    """A shapely geometry from a GeoJSON geometry (dict or string), longitude/latitude, after the input checks of
    `geo.plans.geometry_checks` (finite coordinates in range, closed rings, no bow-ties, the vertex limit)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidPlanGeometry(f"{what} is not JSON: {exc}") from exc
    return checked_geojson(value, what)


def to_geojson(geom) -> dict | None:
    """A shapely geometry as a GeoJSON mapping (None stays None)."""
    return None if geom is None else mapping(geom)


# ------------------------------------------------------------------------------------------------ state

@dataclass
class PlanState:
    """A plan's rows in memory: key → row dict (COLUMNS), plus its community (or street and its communities)."""

    plan_id: int
    community_id: int | None
    community_code: str | None
    revision: int
    status: str
    rows: dict[str, dict] = field(default_factory=dict)
    street_id: int | None = None
    street_code: str | None = None
    #: community id → code, every community the plan covers (one for a community plan)
    communities: dict[int, str] = field(default_factory=dict)
    #: per row: a digest of its columns and geometry as stored (what validation caches on)
    digests: dict[str, str] = field(default_factory=dict)
    #: keys used elsewhere in the plan (a sub-state must not hand them out again)
    reserved: frozenset = frozenset()

    @property
    def is_street(self) -> bool:
        """Whether the plan covers a whole street."""
        return self.street_id is not None

    @property
    def scope_code(self) -> str | None:
        """The code of what the plan covers: the community's or the street's."""
        return self.street_code if self.is_street else self.community_code

    def sub(self, community_id: int) -> PlanState:
        """The rows of one community as a community-scoped state sharing the row dicts (new keys stay unique)."""
        if community_id not in self.communities:
            raise PlanError(f"community {community_id} is not in plan {self.plan_id}")
        rows = {k: r for k, r in self.rows.items() if r.get("community_id") == community_id}
        return PlanState(self.plan_id, community_id, self.communities[community_id], self.revision, self.status,
                         rows, digests={k: self.digests[k] for k in rows if k in self.digests},
                         reserved=frozenset(self.rows))

    def live(self, level: str | None = None, parent: str | None = None) -> list[dict]:
        """Rows not retired, of a level and parent when given, in key order."""
        return [r for k, r in sorted(self.rows.items()) if not r["retired"] and r["geom"] is not None
                and (level is None or r["level"] == level) and (parent is None or r["parent_key"] == parent)]

    def get(self, key: str | None, level: str | None = None) -> dict:
        """A live row by key; PlanError when unknown or retired."""
        row = None if key is None else self.rows.get(key)
        if row is None or row["retired"]:
            raise PlanError(f"no live unit {key!r} in plan {self.plan_id}")
        if level and row["level"] != level:
            raise PlanError(f"{key!r} is a {row['level']}, not a {level}")
        return row

    def new_key(self, level: str) -> str:
        """A fresh key for a unit created in the plan."""
        prefix = "gn" if level == "grid" else "mn"
        used = [int(k[2:]) for k in (*self.rows, *self.reserved) if k.startswith(prefix) and k[2:].isdigit()]
        return f"{prefix}{max(used, default=0) + 1}"


def community_token(conn: Connection, community_id: int) -> str:
    """A fingerprint of the community's published grid and micro-grid boundaries in force now (its ETag)."""
    return conn.execute(text("""
        SELECT 'c' || :c || '-' || md5(coalesce(string_agg(k, ',' ORDER BY k), ''))
        FROM (SELECT 'g' || boundary_id AS k FROM grids_at(clock_timestamp()) WHERE community_id = :c
              UNION ALL
              SELECT 'm' || m.boundary_id FROM micro_grids_at(clock_timestamp()) m JOIN grids g ON g.id = m.grid_id
              WHERE g.community_id = :c) t
    """), {"c": community_id}).scalar_one()


def street_token(conn: Connection, street_id: int) -> str:
    """A fingerprint of the published grid and micro-grid boundaries of every community of a street (its ETag)."""
    return conn.execute(text("""
        SELECT 's' || :s || '-' || md5(coalesce(string_agg(k, ',' ORDER BY k), ''))
        FROM (SELECT 'g' || g.boundary_id AS k FROM grids_at(clock_timestamp()) g
              JOIN communities c ON c.id = g.community_id WHERE c.street_id = :s
              UNION ALL
              SELECT 'm' || m.boundary_id FROM micro_grids_at(clock_timestamp()) m JOIN grids g ON g.id = m.grid_id
              JOIN communities c ON c.id = g.community_id WHERE c.street_id = :s) t
    """), {"s": street_id}).scalar_one()


def scope_token(conn: Connection, state_or_info: PlanState | dict) -> str:
    """The published token of what a plan covers (street token for a street plan, else community token)."""
    if isinstance(state_or_info, dict):
        street_id, community_id = state_or_info["street_id"], state_or_info["community_id"]
    else:
        street_id, community_id = state_or_info.street_id, state_or_info.community_id
    if street_id is not None:
        return street_token(conn, street_id)
    if community_id is None:
        raise PlanError("the plan covers neither a community nor a street")
    return community_token(conn, community_id)


def version_etag(token: str) -> str:
    """The ETag of a community's published boundaries."""
    return f'"{token}"'


def published_rows(conn: Connection, community_id: int | list[int], at: dt.datetime | None = None) -> list[dict]:
    """The grids and micro-grids of the communities in force (now, or at `at`) as plan rows (keys ``g<id>``,
    ``m<id>``; shapely geometries), named as they were then (the name kept with the boundary version)."""
    ids = [int(community_id)] if isinstance(community_id, (int, np.integer)) else [int(c) for c in community_id]
    rows = conn.execute(text("""
        SELECT 'g' || u.id AS key, 'grid' AS level, u.id AS unit_id, NULL AS parent_key, u.code,
               coalesce(b.name, u.name) AS name, u.kind, u.dedicated_type, false AS retired,
               ST_AsBinary(u.geom) AS geom, u.community_id
        FROM grids_at(coalesce(CAST(:at AS timestamptz), clock_timestamp())) u
        LEFT JOIN grid_boundaries b ON b.id = u.boundary_id
        WHERE u.community_id = ANY(:c)
        UNION ALL
        SELECT 'm' || m.id, 'micro_grid', m.id, 'g' || m.grid_id, m.code, coalesce(b.name, m.name), NULL, NULL, false,
               ST_AsBinary(m.geom), g.community_id
        FROM micro_grids_at(coalesce(CAST(:at AS timestamptz), clock_timestamp())) m JOIN grids g ON g.id = m.grid_id
        LEFT JOIN micro_grid_boundaries b ON b.id = m.boundary_id
        WHERE g.community_id = ANY(:c)
    """), {"c": ids, "at": at}).mappings().all()
    out = []
    for r in rows:
        d = dict(r)
        d["geom"] = shapely.from_wkb(bytes(d["geom"]))
        out.append(d)
    return out


def community_of(conn: Connection, code: str) -> dict:
    """The community with that code (id, code, name, street_id); PlanScopeNotFound when unknown."""
    row = conn.execute(text("SELECT id, code, name, street_id FROM communities WHERE code = :c"),
                       {"c": code}).mappings().first()
    if row is None:
        raise PlanScopeNotFound(f"no community with code {code}")
    return dict(row)


def street_of(conn: Connection, code: str) -> dict:
    """The street with that code (id, code, name, communities: [id…] by code); PlanScopeNotFound when unknown."""
    row = conn.execute(text("SELECT id, code, name FROM streets WHERE code = :c"), {"c": code}).mappings().first()
    if row is None:
        raise PlanScopeNotFound(f"no street with code {code}")
    ids = conn.execute(text("SELECT id FROM communities WHERE street_id = :s ORDER BY code"),
                       {"s": row["id"]}).scalars().all()
    return {**dict(row), "communities": list(ids)}


def create_plan(conn: Connection, code: str, actor: str | None = None, label: str | None = None,
                at: dt.datetime | None = None) -> int:
    """Copy a community's (12-digit code) or a street's (9-digit code) grids and micro-grids in force (now, or at
    `at`) into a new draft plan; its id."""
    if len(code) == 9:
        street = street_of(conn, code)
        token = street_token(conn, street["id"])
        plan_id = conn.execute(text("""
            INSERT INTO plans (street_id, label, base_token, created_by) VALUES (:s, :l, :t, :a) RETURNING id
        """), {"s": street["id"], "l": label, "t": token, "a": actor}).scalar_one()
        rows = published_rows(conn, street["communities"], at)
        what = f"street {code}"
    else:
        community = community_of(conn, code)
        token = community_token(conn, community["id"])
        plan_id = conn.execute(text("""
            INSERT INTO plans (community_id, label, base_token, created_by) VALUES (:c, :l, :t, :a) RETURNING id
        """), {"c": community["id"], "l": label, "t": token, "a": actor}).scalar_one()
        rows = published_rows(conn, community["id"], at)
        what = f"community {code}"
    if not rows:
        raise PlanError(f"{what} has no grids in force to plan from")
    write_rows(conn, plan_id, rows)
    return plan_id


def write_rows(conn: Connection, plan_id: int, rows: list[dict]) -> None:
    """Insert plan rows (COLUMNS; shapely geometries) into the plan's units."""
    if not rows:
        return
    conn.execute(text("""
        INSERT INTO plan_units (plan_id, key, level, unit_id, parent_key, code, name, kind, dedicated_type,
                                retired, geom, community_id)
        VALUES (:plan_id, :key, :level, :unit_id, :parent_key, :code, :name, :kind, :dedicated_type, :retired,
                ST_GeomFromWKB(:geom, 4326), :community_id)
    """), [{**{c: r.get(c) for c in COLUMNS}, "plan_id": plan_id,
            "kind": None if r.get("kind") is None else str(getattr(r["kind"], "value", r["kind"])),
            "geom": None if r.get("geom") is None else shapely.to_wkb(r["geom"])} for r in rows])


def _delete_rows(conn: Connection, plan_id: int, keys: list[str]) -> None:
    if keys:
        conn.execute(text("DELETE FROM plan_units WHERE plan_id = :p AND key = ANY(:k)"),
                     {"p": plan_id, "k": list(keys)})


def load_state(conn: Connection, plan_id: int, lock: bool = False) -> PlanState:
    """A plan's rows; `lock` takes the plan row FOR UPDATE (serialises edits of one plan)."""
    if not 0 < plan_id <= ROW_ID_MAX:
        raise PlanNotFound(f"no plan {plan_id}")
    plan = conn.execute(text(f"""
        SELECT p.id, p.community_id, c.code AS community_code, p.street_id, s.code AS street_code, p.revision,
               p.status
        FROM plans p LEFT JOIN communities c ON c.id = p.community_id LEFT JOIN streets s ON s.id = p.street_id
        WHERE p.id = :p
        {'FOR UPDATE OF p' if lock else ''}
    """), {"p": plan_id}).mappings().first()
    if plan is None:
        raise PlanNotFound(f"no plan {plan_id}")
    rows = conn.execute(text("""
        SELECT key, level, unit_id, parent_key, code, name, kind, dedicated_type, retired, ST_AsBinary(geom) AS geom,
               community_id
        FROM plan_units WHERE plan_id = :p ORDER BY key
    """), {"p": plan_id}).mappings().all()
    state = PlanState(plan["id"], plan["community_id"], plan["community_code"], plan["revision"], plan["status"],
                      street_id=plan["street_id"], street_code=plan["street_code"])
    if state.is_street:
        state.communities = dict(conn.execute(text(
            "SELECT id, code FROM communities WHERE street_id = :s ORDER BY code"), {"s": state.street_id}).all())
    else:
        state.communities = {plan["community_id"]: plan["community_code"]}
    for r in rows:
        d = dict(r)
        wkb = None if d["geom"] is None else bytes(d["geom"])
        d["geom"] = None if wkb is None else shapely.from_wkb(wkb)
        if d["community_id"] is None and not state.is_street:
            d["community_id"] = state.community_id  # a row written before plans could cover a street
        state.rows[d["key"]] = d
        h = hashlib.blake2b(repr(tuple(d[c] for c in COLUMNS if c != "geom")).encode(), digest_size=16)
        h.update(wkb or b"")
        state.digests[d["key"]] = h.hexdigest()
    return state


def plan_info(conn: Connection, plan_id: int) -> dict:
    """The plan's header (id, community, status, revision, base token, operations)."""
    if not 0 < plan_id <= ROW_ID_MAX:
        raise PlanNotFound(f"no plan {plan_id}")
    row = conn.execute(text("""
        SELECT p.id, CASE WHEN p.street_id IS NULL THEN 'community' ELSE 'street' END AS scope,
               coalesce(c.code, s.code) AS scope_code, coalesce(c.name, s.name) AS scope_name,
               p.community_id, c.code AS community_code, c.name AS community_name,
               p.street_id, s.code AS street_code, s.name AS street_name, p.label, p.status,
               p.revision, p.base_token, p.published_version_id, p.created_by, p.created_at, p.updated_at,
               (SELECT coalesce(jsonb_agg(jsonb_build_object('id', cc.id, 'code', cc.code, 'name', cc.name)
                                          ORDER BY cc.code), '[]'::jsonb)
                FROM communities cc WHERE cc.id = p.community_id OR cc.street_id = p.street_id) AS communities
        FROM plans p LEFT JOIN communities c ON c.id = p.community_id LEFT JOIN streets s ON s.id = p.street_id
        WHERE p.id = :p
    """), {"p": plan_id}).mappings().first()
    if row is None:
        raise PlanNotFound(f"no plan {plan_id}")
    ops = conn.execute(text("""
        SELECT seq, revision, op, actor, at, undone_at FROM plan_operations WHERE plan_id = :p ORDER BY seq
    """), {"p": plan_id}).mappings().all()
    return {**dict(row), "operations": [dict(o) for o in ops]}


def plan_geojson(state: PlanState, include_retired: bool = False) -> dict:
    """The plan's units as a GeoJSON FeatureCollection."""
    feats = []
    for key, r in sorted(state.rows.items()):
        if (r["retired"] and not include_retired) or r["geom"] is None:
            continue
        props = {c: r.get(c) for c in COLUMNS if c != "geom"}
        feats.append({"type": "Feature", "id": key, "properties": props, "geometry": to_geojson(r["geom"])})
    return {"type": "FeatureCollection", "features": feats}


# ------------------------------------------------------------------------------------------ context data

def community_geom(conn: Connection, community_id: int) -> shapely.Geometry:
    """The community's boundary in force now (EPSG:4326)."""
    wkb = conn.execute(text("SELECT ST_AsBinary(geom) FROM communities_at(now()) WHERE id = :c"),
                       {"c": community_id}).scalar()
    if wkb is None:
        raise PlanError(f"community {community_id} has no boundary in force")
    return shapely.from_wkb(bytes(wkb))


def buildings_frame(conn: Connection, community_id: int) -> dict[str, np.ndarray]:
    """The community's buildings: id, compound_id (-1 none), households, population, geom (EPSG:4326)."""
    rows = conn.execute(text("""
        SELECT b.id, coalesce(b.compound_id, -1) AS compound_id, coalesce(sum(u.households), 0) AS households,
               coalesce(sum(u.population), 0) AS population, coalesce(count(u.id), 0) AS units,
               ST_AsBinary(b.geom) AS geom
        FROM buildings b LEFT JOIN units u ON u.building_id = b.id
        WHERE b.community_id = :c GROUP BY b.id ORDER BY b.id
    """), {"c": community_id}).all()
    return {
        "id": np.array([r[0] for r in rows], dtype=np.int64),
        "compound_id": np.array([r[1] for r in rows], dtype=np.int64),
        "households": np.array([r[2] for r in rows], dtype=np.int64),
        "population": np.array([r[3] for r in rows], dtype=np.int64),
        "units": np.array([r[4] for r in rows], dtype=np.int64),
        "geom": shapely.from_wkb(np.array([bytes(r[5]) for r in rows], dtype=object)) if rows
        else np.array([], dtype=object),
    }


def compounds_frame(conn: Connection, community_id: int) -> dict[str, np.ndarray]:
    """The community's compounds: id, name, geom (EPSG:4326)."""
    rows = conn.execute(text("""
        SELECT id, coalesce(name, '小区 ' || id), ST_AsBinary(geom) FROM compounds WHERE community_id = :c ORDER BY id
    """), {"c": community_id}).all()
    return {
        "id": np.array([r[0] for r in rows], dtype=np.int64),
        "name": np.array([r[1] for r in rows], dtype=object),
        "geom": shapely.from_wkb(np.array([bytes(r[2]) for r in rows], dtype=object)) if rows
        else np.array([], dtype=object),
    }


def owner_of_points(points: np.ndarray, rows: list[dict]) -> np.ndarray:
    """Index into `rows` of the unit covering each point (-1 none); ties go to the first row (smallest key)."""
    owner = np.full(len(points), -1, dtype=np.int64)
    if not rows or len(points) == 0:
        return owner
    geoms = np.array([r["geom"] for r in rows], dtype=object)
    tree = shapely.STRtree(geoms)
    pi, gi = tree.query(points, predicate="covered_by")
    order = np.lexsort((gi, pi))
    pi, gi = pi[order], gi[order]
    first = np.unique(pi, return_index=True)[1]
    owner[pi[first]] = gi[first]
    return owner


# ----------------------------------------------------------------------------------------------- operations

def _level_of(op: dict, state: PlanState, key: str | None = None) -> str:
    if key and key in state.rows:
        return state.rows[key]["level"]
    level = op.get("level", "grid")
    if level not in LEVELS:
        raise PlanError(f"level must be one of {LEVELS}")
    return level


class _Edit:
    """The rows an operation changes: copies on write, so the before-images are exact."""

    def __init__(self, state: PlanState):
        self.state = state
        self.before: dict[str, dict | None] = {}

    def touch(self, key: str) -> dict:
        if key not in self.before:
            old = self.state.rows.get(key)
            self.before[key] = None if old is None else dict(old)
            if old is not None:
                self.state.rows[key] = dict(old)
        return self.state.rows[key]

    def add(self, row: dict) -> dict:
        self.before.setdefault(row["key"], None)
        self.state.rows[row["key"]] = row
        return row

    def set_geom(self, key: str, geom) -> None:
        row = self.touch(key)
        row["geom"] = clean(geom)


def _parent_geom(state: PlanState, community: shapely.Geometry, level: str, parent: str | None):
    return community if level == "grid" else state.get(parent, "grid")["geom"]


def _move_region(edit: _Edit, region, to_key: str) -> None:
    """Give `region` to unit `to_key`: taken from every other unit of its level (and for a grid, its micro-grids
    follow: the region leaves other grids' micro-grids and joins the target's micro-grid sharing most border)."""
    state = edit.state
    region = clean(region)
    if region is None:
        return
    target = state.get(to_key)
    level = target["level"]
    if level == "micro_grid":
        _move_region(edit, region, target["parent_key"])
        siblings = state.live("micro_grid", target["parent_key"])
        for r in siblings:
            if r["key"] != to_key and shapely.intersects(r["geom"], region):
                edit.set_geom(r["key"], shapely.difference(r["geom"], region))
        edit.set_geom(to_key, shapely.union(state.rows[to_key]["geom"], region))
        return
    for r in state.live("grid"):
        if r["key"] != to_key and shapely.intersects(r["geom"], region):
            edit.set_geom(r["key"], shapely.difference(r["geom"], region))
    edit.set_geom(to_key, shapely.union(state.rows[to_key]["geom"], region))
    for r in state.live("micro_grid"):
        if r["parent_key"] != to_key and shapely.intersects(r["geom"], region):
            edit.set_geom(r["key"], shapely.difference(r["geom"], region))
    micros = state.live("micro_grid", to_key)
    if micros:
        shared = [shapely.length(shapely.intersection(shapely.boundary(m["geom"]), shapely.boundary(region)))
                  for m in micros]
        best = micros[int(np.argmax(shared))]["key"] if max(shared) > 0 else micros[0]["key"]
        edit.set_geom(best, shapely.union(state.rows[best]["geom"], region))


def _follow_buildings_region(state: PlanState, buildings: dict, moved_ids: np.ndarray, to_key: str,
                             extra=None):
    """The area that follows moved buildings: in each source unit, the Voronoi cells of the moved buildings among
    that unit's buildings, clipped to the unit (plus `extra`, e.g. the compounds' own polygons)."""
    level = state.rows[to_key]["level"]
    units = [r for r in state.live(level) if r["key"] != to_key]
    pts = shapely.point_on_surface(buildings["geom"])
    owner = owner_of_points(pts, units)
    moved = np.isin(buildings["id"], moved_ids)
    pieces = []
    for ui in np.unique(owner[moved & (owner >= 0)]):
        in_unit = owner == ui
        geom = units[ui]["geom"]
        if not (in_unit & ~moved).any():
            pieces.append(geom)  # every building of the unit moves: so does all its land
            continue
        sites = shapely.multipoints(shapely.get_coordinates(pts[in_unit]))
        cells = shapely.get_parts(shapely.voronoi_polygons(sites, extend_to=geom))
        # voronoi cells come back in arbitrary order: match each to the site it contains
        ids_in = buildings["id"][in_unit]
        ci, si = shapely.STRtree(pts[in_unit]).query(cells, predicate="contains")
        chosen = cells[ci[np.isin(ids_in[si], moved_ids)]]
        # the moved buildings' own footprints too, so none is left cut by the new line
        own = buildings["geom"][moved & in_unit]
        pieces.append(shapely.intersection(shapely.union_all(np.concatenate([chosen, own])), geom))
    if extra is not None:
        pieces.append(extra)
    return shapely.union_all(pieces) if pieces else None


def _micro_grids_follow_pieces(edit: _Edit, key: str, piece_keys: list[str]) -> None:
    """After grid `key` was cut into `piece_keys` (its own key first), each of its micro-grids is cut by the same
    pieces: the micro-grid keeps its part in the first piece it reaches (the kept grid when it has one there,
    else its largest part) and every other part becomes a new micro-grid of that piece. All parts come from one
    vectorised intersection with the micro-grid as it was before the split, so they never overlap."""
    state = edit.state
    pieces = np.array([state.rows[k]["geom"] for k in piece_keys], dtype=object)
    for m in state.live("micro_grid", key):
        parts = [clean(p) for p in shapely.intersection(m["geom"], pieces)]
        reached = [i for i, p in enumerate(parts) if p is not None]
        if not reached or reached == [0]:
            continue
        home = 0 if parts[0] is not None else max(reached, key=lambda i: shapely.area(parts[i]))
        mrow = edit.touch(m["key"])
        mrow["parent_key"] = piece_keys[home]
        mrow["geom"] = parts[home]
        for n, i in enumerate((i for i in reached if i != home), start=1):
            mk = state.new_key("micro_grid")
            edit.add({**{c: m.get(c) for c in COLUMNS}, "key": mk, "unit_id": None, "code": None,
                      "parent_key": piece_keys[i], "name": f"{m['name']}-拆{n if n > 1 else ''}",
                      "retired": False, "geom": parts[i]})


def _split(edit: _Edit, key: str, line) -> list[str]:
    state = edit.state
    row = state.get(key)
    if shapely.get_type_id(line) not in (1, 5):
        raise PlanError("split needs a LineString or MultiLineString")
    pieces = shapely.get_parts(shapely.polygonize(
        [shapely.union(shapely.boundary(row["geom"]), line)]))
    pieces = pieces[shapely.contains(row["geom"], shapely.point_on_surface(pieces))]
    if len(pieces) < 2:
        raise PlanError(f"the line does not cut {key} into two or more parts")
    # group faces by which side they fall: the largest face keeps the key, others become new units
    areas = shapely.area(pieces)
    order = np.argsort(-areas)
    new_keys: list[str] = []
    keep = pieces[order[0]]
    edit.set_geom(key, keep)
    for i in order[1:]:
        nk = state.new_key(row["level"])
        edit.add({**{c: row.get(c) for c in COLUMNS}, "key": nk, "unit_id": None, "code": None,
                  "name": f"{row['name']}-{len(new_keys) + 2}", "retired": False, "geom": clean(pieces[i])})
        new_keys.append(nk)
    if row["level"] == "grid":
        _micro_grids_follow_pieces(edit, key, [key, *new_keys])
    return [key, *new_keys]


#: Metres per degree of latitude (and of longitude at the equator): tolerances in metres, not degrees.
M_PER_DEG_LAT = 111_320.0


def snap_to_vertices(geom: shapely.Geometry, reference: np.ndarray, tolerance_m: float) -> shapely.Geometry:
    """`geom` with each vertex within `tolerance_m` metres of a reference vertex moved exactly onto the nearest one
    (coordinates copied, so shared edges stay bit-identical); distances in a local equirectangular frame."""
    coords = shapely.get_coordinates(geom)
    ref = np.unique(reference.reshape(-1, 2), axis=0) if len(reference) else reference.reshape(-1, 2)
    if tolerance_m <= 0 or len(coords) == 0 or len(ref) == 0:
        return geom
    kx = M_PER_DEG_LAT * np.cos(np.radians(float(np.mean(coords[:, 1]))))
    scale = np.array([kx, M_PER_DEG_LAT])
    tree = shapely.STRtree(shapely.points(ref * scale))
    vi, ri = tree.query_nearest(shapely.points(coords * scale), max_distance=tolerance_m, all_matches=False)
    if vi.size == 0:
        return geom
    out = coords.copy()
    out[vi] = ref[ri]
    return shapely.set_coordinates(geom, out)


def _split_among(part: shapely.Geometry, neighbours: list[dict],
                 cut: shapely.Geometry | None = None) -> list[tuple[str, shapely.Geometry]]:
    """Share a piece of land among the neighbours whose boundaries it touches; [] when it touches none.

    With `cut` (the segment a dragged vertex travelled), the piece is first cut along it, so where the dragged
    vertex was a junction of several units their common edge runs on to the vertex's new place; each face then
    goes to the one neighbour it touches, or, touching several, each takes the part nearer to its shared edge than
    to any other's (Voronoi cells of points along the shared edges)."""
    if not neighbours:
        return []
    if cut is not None and shapely.intersects(cut, part):
        faces = shapely.get_parts(shapely.polygonize([shapely.union(shapely.boundary(part), cut)]))
        faces = faces[shapely.contains(part, shapely.point_on_surface(faces))]
        if len(faces) >= 2:
            shares = [_split_among(face, neighbours) for face in faces]
            if all(shares):
                return [s for share in shares for s in share]
    return _share_by_edges(part, neighbours)


def _share_by_edges(part: shapely.Geometry, neighbours: list[dict]) -> list[tuple[str, shapely.Geometry]]:
    """`_split_among` without a cut: by the neighbours' shared edges alone."""
    geoms = np.array([n["geom"] for n in neighbours], dtype=object)
    ring = shapely.boundary(part)
    shared = shapely.intersection(ring, geoms)
    length = shapely.length(shared)
    touching = np.flatnonzero(length > 1e-9)
    if touching.size == 0:
        return []
    if touching.size == 1:
        return [(neighbours[touching[0]]["key"], part)]
    step = float(shapely.length(ring)) / 400
    coords, labels = [], []
    for i in touching:
        c = shapely.get_coordinates(shapely.segmentize(shared[i], step))
        coords.append(c)
        labels.append(np.full(len(c), i))
    pts = np.concatenate(coords)
    label = np.concatenate(labels)
    pts, first = np.unique(pts, axis=0, return_index=True)
    label = label[first]
    sites = np.asarray(shapely.points(pts), dtype=object)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=part))
    ci, si = shapely.STRtree(sites).query(cells, predicate="intersects")
    # a cell holds exactly its own site; a site on a cell edge would match twice, so keep one cell per site
    _, once = np.unique(ci, return_index=True)
    ci, si = ci[once], si[once]
    out: list[tuple[str, shapely.Geometry]] = []
    for i in touching:
        piece = clean(shapely.intersection(shapely.union_all(cells[ci[label[si] == i]]), part))
        if piece is not None:
            out.append((neighbours[i]["key"], piece))
    return out


def reshape(edit: _Edit, key: str, drawn: shapely.Geometry, community: shapely.Geometry,
            compounds: dict | None = None, snap_m: float = 1.0) -> dict:
    """Give unit `key` a new outline while keeping the partition (改边界，相邻网格随之调整): the outline's vertices snap
    to the neighbours', the compound walls' and its own old vertices within `snap_m` metres; it is clipped to the
    parent (community or grid); the land it gains is taken from the neighbours and the land it loses goes to the
    neighbour across the edge it left (shared by nearness when it touches several). Micro-grids follow their grids.
    Refused when land it loses touches no neighbour (it would become a gap)."""
    state = edit.state
    row = state.get(key)
    level, parent = row["level"], row["parent_key"]
    parent_geom = _parent_geom(state, community, level, parent)
    others = [r for r in state.live(level, parent if level == "micro_grid" else None) if r["key"] != key]
    refs = [shapely.get_coordinates(np.array([r["geom"] for r in others] + [row["geom"], parent_geom],
                                             dtype=object))]
    if compounds is not None and len(compounds["geom"]):
        refs.append(shapely.get_coordinates(compounds["geom"]))
    snapped = snap_to_vertices(drawn, np.concatenate(refs), snap_m)
    new = clean(shapely.intersection(clean(snapped), parent_geom))
    if new is None:
        raise PlanError(f"the new outline of {key} has no area inside its parent")
    old = row["geom"]
    lost = clean(shapely.difference(old, new))
    gained = clean(shapely.difference(new, old))
    # one vertex dragged (the editor's case): the segment it travelled, along which the land it gives up is cut
    gone = {tuple(c) for c in shapely.get_coordinates(old)} - {tuple(c) for c in shapely.get_coordinates(new)}
    came = {tuple(c) for c in shapely.get_coordinates(new)} - {tuple(c) for c in shapely.get_coordinates(old)}
    cut = shapely.LineString([gone.pop(), came.pop()]) if len(gone) == 1 and len(came) == 1 else None
    handed: list[tuple[str, shapely.Geometry]] = []
    if gained is not None:
        _move_region(edit, gained, key)
    if lost is not None:
        # the neighbours as they are after giving up what the unit gained: land lost goes only to a unit it
        # still touches (an outline that crosses its old one gains on one side and loses on the other)
        others = [state.rows[r["key"]] for r in others if not state.rows[r["key"]]["retired"]
                  and state.rows[r["key"]]["geom"] is not None]
        for part in shapely.get_parts(lost):
            shares = _split_among(part, others, cut)
            if not shares:
                raise PlanError(f"the land {key} would lose touches no neighbour: it would become a gap; drag the "
                                "vertex towards a neighbour or use retire/merge")
            handed += shares
    for to_key, piece in handed:
        _move_region(edit, piece, to_key)
    return {"keys": [key, *sorted({k for k, _ in handed} | {r["key"] for r in others if r["key"] in edit.before})],
            "gained_m2": _area_m2(gained), "lost_m2": _area_m2(lost)}


def _area_m2(geom) -> float:
    """An area in square metres (local equirectangular frame: well under 1% off at a community's size)."""
    if geom is None:
        return 0.0
    lat = float(np.mean(shapely.get_coordinates(geom)[:, 1]))
    return round(float(shapely.area(geom)) * M_PER_DEG_LAT ** 2 * np.cos(np.radians(lat)), 1)


def apply_to_state(state: PlanState, op: dict, community: shapely.Geometry, buildings: dict | None = None,
                   compounds: dict | None = None) -> tuple[dict[str, dict | None], dict]:
    """Apply one operation to `state` in memory; (before-images by key, result summary)."""
    kind = op.get("type")
    if kind not in OP_TYPES:
        raise PlanError(f"unknown operation {kind!r}; expected one of {', '.join(OP_TYPES)}")
    edit = _Edit(state)
    result: dict = {"type": kind}
    if kind == "replace_geometry":
        key = op["key"]
        state.get(key)
        drawn = geojson_geom(op["geometry"])
        check_near(drawn, community, f"the new geometry of {key}")
        geom = clean(drawn)
        if geom is None:
            raise PlanError("the new geometry has no area")
        if op.get("carve", False):
            old = state.rows[key]["geom"]
            _move_region(edit, geom, key)
            lost = clean(shapely.difference(old, geom))
            edit.set_geom(key, geom)
            result["lost_area_left_as_gap"] = lost is not None
        else:
            edit.set_geom(key, geom)
        result["keys"] = [key]
    elif kind == "reshape":
        key = op["key"]
        state.get(key)
        drawn = geojson_geom(op["geometry"])
        check_near(drawn, community, f"the new geometry of {key}")
        snap_m = op.get("snap_m")
        snap_m = get_settings().plan_snap_m if snap_m is None else float(snap_m)
        if not 0 <= snap_m <= 50:
            raise PlanError("snap_m is 0 to 50 metres")
        result.update(reshape(edit, key, drawn, community, compounds, snap_m))
    elif kind == "split":
        result["keys"] = _split(edit, op["key"], geojson_geom(op["line"], "line"))
    elif kind == "merge":
        keys = list(op.get("keys") or [])
        if len(keys) < 2:
            raise PlanError("merge needs two or more keys")
        rows = [state.get(k) for k in keys]
        if len({r["level"] for r in rows}) != 1 or len({r["parent_key"] for r in rows}) != 1:
            raise PlanError("merge joins units of one level (and, for micro-grids, one grid)")
        keep = keys[0]
        edit.set_geom(keep, shapely.union_all([r["geom"] for r in rows]))
        for k in keys[1:]:
            edit.touch(k)["retired"] = True
            if rows[0]["level"] == "grid":
                for m in state.live("micro_grid", k):
                    edit.touch(m["key"])["parent_key"] = keep
        result["keys"] = [keep]
    elif kind in ("move_buildings", "move_compounds"):
        to_key = op["to"]
        state.get(to_key)
        if buildings is None or compounds is None:
            raise PlanError("moving buildings needs the community's buildings")
        extra = None
        if kind == "move_buildings":
            ids = np.asarray(op.get("building_ids") or [], dtype=np.int64)
            unknown = np.setdiff1d(ids, buildings["id"])
        else:
            cids = np.asarray(op.get("compound_ids") or [], dtype=np.int64)
            unknown = np.setdiff1d(cids, compounds["id"])
            ids = buildings["id"][np.isin(buildings["compound_id"], cids)]
            extra = shapely.union_all(compounds["geom"][np.isin(compounds["id"], cids)])
        if unknown.size:
            raise PlanError(f"not in this community: {unknown.tolist()}")
        if ids.size == 0 and extra is None:
            raise PlanError("nothing to move")
        region = _follow_buildings_region(state, buildings, ids, to_key, extra)
        if region is not None:
            target = state.rows[to_key]
            region = shapely.intersection(region, _parent_geom(state, community, target["level"],
                                                               target["parent_key"]))
            _move_region(edit, region, to_key)
        result["keys"] = [to_key]
        result["buildings"] = ids.tolist()
    elif kind == "create":
        level = _level_of(op, state)
        parent = op.get("parent") if level == "micro_grid" else None
        if level == "micro_grid":
            state.get(parent, "grid")
        drawn = geojson_geom(op["geometry"])
        check_near(drawn, community, "the new unit's geometry")
        geom = clean(shapely.intersection(drawn, _parent_geom(state, community, level, parent)))
        if geom is None:
            raise PlanError("the new unit has no area inside its parent")
        nk = state.new_key(level)
        kind_ = op.get("kind", "comprehensive") if level == "grid" else None
        edit.add({"key": nk, "level": level, "unit_id": None, "parent_key": parent, "code": None,
                  "name": op.get("name") or ("新网格" if level == "grid" else "新微网格"), "kind": kind_,
                  "dedicated_type": op.get("dedicated_type"), "retired": False, "geom": None})
        state.rows[nk]["geom"] = geom
        if op.get("carve", True):
            # the new unit takes its land from its neighbours so the layer still tiles
            for r in state.live(level, parent if level == "micro_grid" else None):
                if r["key"] != nk and shapely.intersects(r["geom"], geom):
                    edit.set_geom(r["key"], shapely.difference(r["geom"], geom))
            if level == "grid":
                for m in state.live("micro_grid"):
                    if shapely.intersects(m["geom"], geom):
                        edit.set_geom(m["key"], shapely.difference(m["geom"], geom))
        result["keys"] = [nk]
    elif kind == "retire":
        key = op["key"]
        row = state.get(key)
        into = op.get("into")
        geom = row["geom"]
        if into:
            target = state.get(into, row["level"])
            if row["level"] == "micro_grid" and target["parent_key"] != row["parent_key"]:
                raise PlanError("a micro-grid's area can only go to a micro-grid of the same grid")
        edit.touch(key)["retired"] = True
        if row["level"] == "grid":
            for m in state.live("micro_grid", key):
                if into:
                    edit.touch(m["key"])["parent_key"] = into
                else:
                    edit.touch(m["key"])["retired"] = True
        if into:
            edit.set_geom(into, shapely.union(state.rows[into]["geom"], geom))
        result["keys"] = [key] + ([into] if into else [])
    elif kind == "rename":
        key = op["key"]
        state.get(key)
        name = (op.get("name") or "").strip()
        if not name or len(name) > 100:
            raise PlanError("a unit's name is 1 to 100 characters")
        edit.touch(key)["name"] = name
        result["keys"] = [key]
    elif kind == "suggestion":
        if buildings is None:
            raise PlanError("a suggestion needs the community's buildings")
        result["keys"] = _apply_suggestion(edit, op, buildings)
    for key, row in state.rows.items():
        if key in edit.before and not row["retired"] and row["geom"] is None:
            row["retired"] = True  # a unit that lost all its land is retired, not left empty
    return edit.before, result


def _apply_suggestion(edit: _Edit, op: dict, buildings: dict) -> list[str]:
    """Redraw the comprehensive grids as the suggestion's regions: each region is the union of its buildings'
    Voronoi cells clipped to the land the comprehensive grids cover now. Their micro-grids are retired (they
    must be redrawn inside the new grids); dedicated grids are untouched."""
    state = edit.state
    comp = [r for r in state.live("grid") if (r.get("kind") or "comprehensive") == "comprehensive"]
    area = shapely.union_all([r["geom"] for r in comp])
    regions = op.get("regions") or []
    none = np.array([], dtype=np.int64)
    ids = np.concatenate([np.asarray(r["building_ids"], dtype=np.int64) for r in regions]) if regions else none
    label = np.concatenate([np.full(len(r["building_ids"]), i) for i, r in enumerate(regions)]) if regions else none
    pos = np.searchsorted(buildings["id"], ids)
    n = len(buildings["id"])
    if len(ids) == 0 or (pos >= n).any() or (buildings["id"][np.minimum(pos, n - 1)] != ids).any():
        raise PlanError("the suggestion names buildings that are not in this community")
    pts = shapely.point_on_surface(buildings["geom"][pos])
    sites = shapely.multipoints(shapely.get_coordinates(pts))
    cells = shapely.get_parts(shapely.voronoi_polygons(sites, extend_to=area))
    ci, si = shapely.STRtree(pts).query(cells, predicate="contains")
    keys = []
    kept = {r["key"] for r in regions if r.get("key")}
    for r in comp:
        if r["key"] not in kept:
            edit.touch(r["key"])["retired"] = True
    for m in state.live("micro_grid"):
        if m["parent_key"] in {r["key"] for r in comp}:
            edit.touch(m["key"])["retired"] = True
    for i, reg in enumerate(regions):
        geom = clean(shapely.intersection(shapely.union_all(cells[ci[label[si] == i]]), area))
        if reg.get("key") and reg["key"] in state.rows:
            edit.set_geom(reg["key"], geom)
            edit.touch(reg["key"])["retired"] = False
            keys.append(reg["key"])
        else:
            nk = state.new_key("grid")
            edit.add({"key": nk, "level": "grid", "unit_id": None, "parent_key": None, "code": None,
                      "name": f"建议网格 {i + 1}", "kind": "comprehensive", "dedicated_type": None,
                      "retired": False, "geom": geom})
            keys.append(nk)
    return keys


def _serialise_before(before: dict[str, dict | None]) -> dict:
    out: dict[str, dict | None] = {}
    for key, row in before.items():
        if row is None:
            out[key] = None
        else:
            out[key] = {**{c: row.get(c) for c in COLUMNS if c != "geom"},
                        "kind": None if row.get("kind") is None else str(getattr(row["kind"], "value", row["kind"])),
                        "geom": None if row["geom"] is None else shapely.to_wkb(row["geom"], hex=True)}
    return out


def operations_since(conn: Connection, plan_id: int, revision: int, undone: bool = True) -> list[dict]:
    """The plan's operations after `revision` (and, with `undone`, every one undone since), as JSON values."""
    rows = conn.execute(text(f"""
        SELECT seq, revision, op, actor, at, undone_at FROM plan_operations
        WHERE plan_id = :p AND (revision > :r {'OR undone_at IS NOT NULL' if undone else ''}) ORDER BY seq
    """), {"p": plan_id, "r": revision}).mappings().all()
    return [{k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in dict(r).items()} for r in rows]


def _check_revision(conn: Connection, state: PlanState, if_revision: int | None) -> None:
    if state.status != "draft":
        raise PlanError(f"plan {state.plan_id} is {state.status}; only drafts can be edited")
    if if_revision is not None and if_revision != state.revision:
        raise StaleRevision(
            f"plan {state.plan_id} is at revision {state.revision}, not {if_revision}: reload it and retry",
            state.revision, operations_since(conn, state.plan_id, if_revision), plan_id=state.plan_id)


def _op_community(conn: Connection, state: PlanState, op: dict) -> int:
    """The community an operation works in: that of the units it names (all in one), else ``community`` (code),
    else (a new grid) the community holding most of its geometry."""
    if len(state.communities) == 1:
        return next(iter(state.communities))
    named = [op.get(k) for k in ("key", "to", "into", "parent")] + list(op.get("keys") or [])
    found = set()
    for k in named:
        if k is None:
            continue
        row = state.rows.get(k)
        if row is None:
            raise PlanError(f"no unit {k!r} in plan {state.plan_id}")
        found.add(row["community_id"])
    if op.get("community"):
        by_code = {c: i for i, c in state.communities.items()}
        if op["community"] not in by_code:
            raise PlanError(f"community {op['community']} is not in plan {state.plan_id}")
        found.add(by_code[op["community"]])
    if len(found) > 1:
        codes = sorted(state.communities[c] for c in found)
        raise PlanError(f"the operation names units of communities {', '.join(codes)}: every grid belongs to one "
                        "community, so an operation works inside one community")
    if found:
        return found.pop()
    if op.get("type") == "create" and op.get("geometry"):
        geom = geojson_geom(op["geometry"])
        ids = list(state.communities)
        geoms = np.array([community_geom(conn, c) for c in ids], dtype=object)
        share = shapely.area(shapely.intersection(geoms, geom))
        if share.max() > 0:
            return ids[int(np.argmax(share))]
    raise PlanError("a street plan needs the operation's community: name a unit of it, or give `community`")


def _apply_scoped(conn: Connection, state: PlanState, op: dict) -> tuple[dict[str, dict | None], dict]:
    """Apply one operation to the community it works in (a sub-state), and fold the changes back into `state`."""
    if op.get("type") == "suggestion" and "parts" in op:
        # a street suggestion: one part per community, applied as one operation (one undo)
        before: dict[str, dict | None] = {}
        results = []
        for part in op["parts"]:
            b, r = _apply_scoped(conn, state, {"type": "suggestion", "community": part["community"],
                                               "regions": part["regions"]})
            for k, v in b.items():
                before.setdefault(k, v)
            results.append(r)
        return before, {"type": "suggestion", "keys": [k for r in results for k in r["keys"]],
                        "communities": [r["community"] for r in results]}
    cid = _op_community(conn, state, op)
    sub = state.sub(cid)
    community = community_geom(conn, cid)
    needs_buildings = op.get("type") in ("move_buildings", "move_compounds", "suggestion")
    buildings = buildings_frame(conn, cid) if needs_buildings else None
    # a reshape snaps to the compound walls
    compounds = compounds_frame(conn, cid) if needs_buildings or op.get("type") == "reshape" else None
    try:
        before, result = apply_to_state(sub, op, community, buildings, compounds)
    except KeyError as exc:
        raise PlanError(f"operation {op.get('type')!r} needs {exc}") from exc
    except shapely.errors.GEOSException as exc:
        raise PlanError(f"the geometry cannot be processed: {exc}") from exc
    for key in before:
        row = sub.rows[key]
        row["community_id"] = cid  # rows made by the operation belong to its community
        state.rows[key] = row
    result["community"] = state.communities[cid]
    return before, result


@refused_as(OperationRefused)
def apply_operation(conn: Connection, plan_id: int, op: dict, actor: str | None = None,
                    if_revision: int | None = None) -> dict:
    """Apply an operation to a draft plan (locked FOR UPDATE); returns {revision, seq, result, changed}.
    `if_revision`: the revision the caller edits (StaleRevision when the plan moved on)."""
    return apply_operation_plain(conn, plan_id, op, actor, if_revision)


def apply_operation_plain(conn: Connection, plan_id: int, op: dict, actor: str | None = None,
                    if_revision: int | None = None) -> dict:
    """`apply_operation` for another entry point: its plain PlanErrors are that entry point's refusals."""
    state = load_state(conn, plan_id, lock=True)
    _check_revision(conn, state, if_revision)
    before, result = _apply_scoped(conn, state, op)
    changed = list(before)
    _delete_rows(conn, plan_id, changed)
    write_rows(conn, plan_id, [state.rows[k] for k in changed if k in state.rows])
    revision = state.revision + 1
    seq = conn.execute(text("SELECT coalesce(max(seq), 0) + 1 FROM plan_operations WHERE plan_id = :p"),
                       {"p": plan_id}).scalar_one()
    conn.execute(text("""
        INSERT INTO plan_operations (plan_id, seq, revision, op, before, actor)
        VALUES (:p, :s, :r, CAST(:op AS jsonb), CAST(:b AS jsonb), :a)
    """), {"p": plan_id, "s": seq, "r": revision, "op": json.dumps(op, ensure_ascii=False),
           "b": json.dumps(_serialise_before(before)), "a": actor})
    conn.execute(text("UPDATE plans SET revision = :r, updated_at = now() WHERE id = :p"),
                 {"p": plan_id, "r": revision})
    return {"revision": revision, "seq": seq, "result": result, "changed": sorted(changed)}


@refused_as(NothingToUndo)
def undo(conn: Connection, plan_id: int, actor: str | None = None, if_revision: int | None = None) -> dict:
    """Undo the plan's latest operation not yet undone: its rows go back to their before-images."""
    state = load_state(conn, plan_id, lock=True)
    _check_revision(conn, state, if_revision)
    last = conn.execute(text("""
        SELECT id, seq, op, before FROM plan_operations WHERE plan_id = :p AND undone_at IS NULL
        ORDER BY seq DESC LIMIT 1
    """), {"p": plan_id}).mappings().first()
    if last is None:
        raise PlanError(f"plan {plan_id} has no operation to undo")
    before = last["before"]
    _delete_rows(conn, plan_id, list(before))
    restore = []
    for row in before.values():
        if row is not None:
            restore.append({**row, "geom": None if row["geom"] is None else shapely.from_wkb(row["geom"])})
    write_rows(conn, plan_id, restore)
    revision = state.revision + 1
    conn.execute(text("UPDATE plan_operations SET undone_at = clock_timestamp() WHERE id = :i"), {"i": last["id"]})
    conn.execute(text("UPDATE plans SET revision = :r, updated_at = now() WHERE id = :p"),
                 {"p": plan_id, "r": revision})
    return {"revision": revision, "undone": {"seq": last["seq"], "op": last["op"]}, "restored": sorted(before)}
