"""Live validation of a redraw plan (方案校验): every rule vectorised with shapely 2 in the community's UTM zone.

Rules (``rule`` of each problem; ``severity`` error | warning; ``geometry`` = where, GeoJSON in EPSG:4326):

- ``overlap``: two grids (or two micro-grids) share area above `overlap_m2`;
- ``gap``: community minus the union of its grids, per piece, above `gap_area_m2` AND wider than `gap_width_m`
  (width = 2·area/perimeter, so a long thin digitising sliver is not a gap);
- ``outside_community``: grid area outside the community above `outside_m2`;
- ``micro_tiling``: a grid's micro-grids leave part of it uncovered or spill out of it (same thresholds as gaps);
- ``not_contiguous``: a unit in more than one piece (pieces under `gap_area_m2` ignored);
- ``households_band``: a comprehensive grid's households outside [grid_households_min, grid_households_max]
  from ``get_settings().rules``; a warning unless ``band_severity`` is "error" (the rule
  ``GRIDATLAS_RULE_GRID_HOUSEHOLDS_BAND_SEVERITY`` or the call's argument);
- ``building_cut``: a building split by a grid line (more than `cut_share` of its footprint on each side);
- ``compound_split``: a compound whose area lies in two or more grids by more than `cut_share` each (warning).

Buildings count in the grid covering their point-on-surface, the same rule as the diff and the publish.
A street plan is validated per community (each grid belongs to one community; gaps are measured per community);
unchanged communities reuse their previous answer, so an operation re-validates only the community it touched.
The contexts of the communities not cached yet are loaded together (three queries for all of them). Overlaps, gaps,
grids outside the community and micro-grid tiling first test area bounds (see `validate_state`) that prove a clean
layer clean without the pairwise overlays; anything the bounds cannot clear gets the full check, so the problems
reported are the same.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import time
from dataclasses import asdict, dataclass

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import mapping
from sqlalchemy import Connection, text

from geo.plans.drafts import PlanError, PlanState, load_state, owner_of_points
from geo.settings import get_settings
from geo.spatial.crs import STORAGE_SRID, utm_epsg
from geo.spatial.geometry import repair_polygons


@dataclass(frozen=True)
class ValidationRules:
    """Tolerances of the plan validator (m² / m / share); the household band comes from the settings."""

    overlap_m2: float = 1.0
    gap_area_m2: float = 20.0
    gap_width_m: float = 1.0
    outside_m2: float = 20.0
    cut_share: float = 0.05
    #: None: the configured rule (GRIDATLAS_RULE_GRID_HOUSEHOLDS_BAND_SEVERITY, default "warning").
    band_severity: str | None = None


@functools.lru_cache(maxsize=16)
def _transformers(epsg: int) -> tuple[Transformer, Transformer]:
    # building a Transformer took ~0.35 ms each (profiled); every community of a zone shares one pair
    return (Transformer.from_crs(STORAGE_SRID, epsg, always_xy=True),
            Transformer.from_crs(epsg, STORAGE_SRID, always_xy=True))


class _Projector:
    """Vectorised 4326 ↔ UTM transforms for one community."""

    def __init__(self, lon: float, lat: float):
        self.epsg = utm_epsg(lon, lat)
        self.fwd, self.inv = _transformers(self.epsg)

    def metric(self, geoms):
        out = shapely.transform(np.asarray(geoms, dtype=object),
                                lambda c: np.column_stack(self.fwd.transform(c[:, 0], c[:, 1])))
        # projecting can nudge a vertex across a near-touching edge: the one repair keeps the polygonal part (an
        # input left without any stays an empty polygon, as the geometry was not empty before)
        out, report = repair_polygons(out)
        if len(report.lost_index):
            out[report.lost_index] = shapely.Polygon()
        return out

    def geographic(self, geoms):
        return shapely.transform(np.asarray(geoms, dtype=object),
                                 lambda c: np.column_stack(self.inv.transform(c[:, 0], c[:, 1])))


def _width(geoms) -> np.ndarray:
    per = shapely.length(shapely.boundary(geoms))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(per > 0, 2.0 * shapely.area(geoms) / per, 0.0)


_SERIAL = itertools.count()


def _frames(conn: Connection, community_ids: list[int]) -> dict[int, tuple]:
    """Boundary in force, buildings and compounds of several communities in three queries (not three per
    community): id → (boundary, buildings, compounds), shaped as geo.plans.drafts' community_geom, buildings_frame and
    compounds_frame."""
    ids = [int(i) for i in community_ids]
    rows = conn.execute(text("SELECT id, ST_AsBinary(geom) FROM communities_at(now()) WHERE id = ANY(:c)"),
                        {"c": ids}).all()
    bounds: dict[int, bytes] = {r[0]: r[1] for r in rows if r[1] is not None}
    for cid in ids:
        if cid not in bounds:
            raise PlanError(f"community {cid} has no boundary in force")
    b = conn.execute(text("""
        SELECT b.community_id, b.id, coalesce(b.compound_id, -1), coalesce(sum(u.households), 0),
               coalesce(sum(u.population), 0), coalesce(count(u.id), 0), ST_AsBinary(b.geom)
        FROM buildings b LEFT JOIN units u ON u.building_id = b.id
        WHERE b.community_id = ANY(:c) GROUP BY b.id ORDER BY b.community_id, b.id
    """), {"c": ids}).all()
    k = conn.execute(text("""
        SELECT community_id, id, coalesce(name, '小区 ' || id), ST_AsBinary(geom) FROM compounds
        WHERE community_id = ANY(:c) ORDER BY community_id, id
    """), {"c": ids}).all()
    bc = np.array([r[0] for r in b], dtype=np.int64)
    bcols = {"id": np.array([r[1] for r in b], dtype=np.int64),
             "compound_id": np.array([r[2] for r in b], dtype=np.int64),
             "households": np.array([r[3] for r in b], dtype=np.int64),
             "population": np.array([r[4] for r in b], dtype=np.int64),
             "units": np.array([r[5] for r in b], dtype=np.int64),
             "geom": shapely.from_wkb(np.array([bytes(r[6]) for r in b], dtype=object)) if b
             else np.array([], dtype=object)}
    kc = np.array([r[0] for r in k], dtype=np.int64)
    kcols = {"id": np.array([r[1] for r in k], dtype=np.int64), "name": np.array([r[2] for r in k], dtype=object),
             "geom": shapely.from_wkb(np.array([bytes(r[3]) for r in k], dtype=object)) if k
             else np.array([], dtype=object)}
    out = {}
    for cid in ids:
        bm, km = bc == cid, kc == cid
        out[cid] = (shapely.from_wkb(bytes(bounds[cid])), {c: v[bm] for c, v in bcols.items()},
                    {c: v[km] for c, v in kcols.items()})
    return out


class Context:
    """What validation needs besides the plan: the community, its buildings and compounds (metric and 4326)."""

    def __init__(self, conn: Connection, community_id: int, data: tuple | None = None):
        self.serial = next(_SERIAL)
        self.community_id = community_id
        self.community, self.buildings, self.compounds = data or _frames(conn, [community_id])[community_id]
        c = shapely.centroid(self.community)
        self.proj = _Projector(c.x, c.y)
        self.community_m = self.proj.metric([self.community])[0]
        self.b_m = self.proj.metric(self.buildings["geom"])
        self.b_pts = shapely.point_on_surface(self.buildings["geom"])
        self.c_m = self.proj.metric(self.compounds["geom"])
        # prepared once here (the context is shared, read-only afterwards): covers / contains tests against them
        shapely.prepare(self.b_m)
        shapely.prepare(self.community_m)


def _problem(rule: str, severity: str, message: str, geom_m, proj: _Projector, **extra) -> dict:
    # pointwise rounding (about 1 cm): a display location, never re-noded, so it cannot fail on odd topology
    geom = None if geom_m is None else mapping(
        shapely.set_precision(proj.geographic([geom_m])[0], 1e-7, mode="pointwise"))
    return {"rule": rule, "severity": severity, "message": message, "geometry": geom, **extra}


def _pieces_over(geom_m, min_area: float, min_width: float) -> np.ndarray:
    if geom_m is None or shapely.is_empty(geom_m):
        return np.array([], dtype=object)
    parts = shapely.get_parts(geom_m)
    parts = parts[np.isin(shapely.get_type_id(parts), (3,))]
    keep = (shapely.area(parts) > min_area) & (_width(parts) > min_width)
    return parts[keep]


def validate_state(state: PlanState, ctx: Context, rules: ValidationRules | None = None) -> dict:
    """All problems of a plan state, with per-grid household counts; nothing is read from the database."""
    rules = rules or ValidationRules()
    band = get_settings().rules
    t0 = time.perf_counter()
    problems: list[dict] = []
    proj = ctx.proj
    grids = state.live("grid")
    micros = state.live("micro_grid")
    g_m = proj.metric([r["geom"] for r in grids]) if grids else np.array([], dtype=object)
    m_m = proj.metric([r["geom"] for r in micros]) if micros else np.array([], dtype=object)
    keys = [r["key"] for r in grids]

    # Area bounds let the clean (usual) case skip most overlays, and are exact: a problem is reported only above
    # an area tolerance, and each bound below is at least the area it stands for, so a bound under half the
    # tolerance (half: room for rounding) proves there is nothing to report; otherwise the full check runs.
    # - Σ areas − area of the union ("excess") ≥ any pairwise overlap (a point under k units counts k−1 ≥ 1 there),
    #   and ≥ the excess of any subset of the units;
    # - a unit covered by its parent spills nothing out of it, and the parent's uncovered area is then at most
    #   area(parent) − Σ area(its units) + excess.
    union = shapely.union_all(g_m) if len(g_m) else shapely.Polygon()
    g_area = shapely.area(g_m)
    excess = {"grid": max(float(g_area.sum() - shapely.area(union)), 0.0) if len(g_m) else 0.0}
    m_area = shapely.area(m_m)
    excess["micro_grid"] = 0.0
    if len(m_m) > 1:
        try:
            excess["micro_grid"] = max(float(m_area.sum() - shapely.area(shapely.union_all(m_m))), 0.0)
        except shapely.errors.GEOSException:  # no bound: every micro-grid check runs in full
            excess["micro_grid"] = float("inf")
    if len(g_m):
        shapely.prepare(g_m)

    # overlaps within a level
    for level, rows, geoms in (("grid", grids, g_m), ("micro_grid", micros, m_m)):
        if len(geoms) < 2 or excess[level] < 0.5 * rules.overlap_m2:
            continue
        a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        keep = a < b
        a, b = a[keep], b[keep]
        inter = shapely.intersection(geoms[a], geoms[b])
        area = shapely.area(inter)
        for i in np.flatnonzero(area > rules.overlap_m2):
            problems.append(_problem(
                "overlap", "error",
                f"{rows[a[i]]['name']} 与 {rows[b[i]]['name']} 重叠 {area[i]:,.0f} m²", inter[i], proj,
                keys=[rows[a[i]]["key"], rows[b[i]]["key"]], area_m2=round(float(area[i]), 1)))

    inside = shapely.covers(ctx.community_m, g_m) if len(g_m) else np.array([], dtype=bool)
    uncovered = float(shapely.area(ctx.community_m) - shapely.area(union))
    if not (inside.all() and uncovered < 0.5 * rules.gap_area_m2):
        for piece in _pieces_over(shapely.difference(ctx.community_m, union), rules.gap_area_m2,
                                  rules.gap_width_m):
            problems.append(_problem("gap", "error", f"社区内有 {shapely.area(piece):,.0f} m² 不属于任何网格", piece,
                                     proj, area_m2=round(float(shapely.area(piece)), 1)))
    if len(g_m) and not inside.all():
        out = np.flatnonzero(~inside)
        outside = shapely.difference(g_m[out], ctx.community_m)
        oa = shapely.area(outside)
        for j in np.flatnonzero(oa > rules.outside_m2):
            i = out[j]
            problems.append(_problem("outside_community", "error",
                                     f"{grids[i]['name']} 有 {oa[j]:,.0f} m² 超出社区边界", outside[j], proj,
                                     keys=[keys[i]], area_m2=round(float(oa[j]), 1)))

    # micro-grids tile their grid
    if micros:
        parent = np.array([r["parent_key"] for r in micros], dtype=object)
        index = {k: i for i, k in enumerate(keys)}
        pi = np.array([index.get(p, -1) for p in parent], dtype=np.int64)
        has = pi >= 0
        covered = np.zeros(len(micros), dtype=bool)
        if has.any():
            covered[has] = shapely.covers(g_m[pi[has]], m_m[has])
        n_in = np.bincount(pi[has], minlength=len(grids))
        spilling = np.bincount(pi[has], weights=(~covered[has]).astype(float), minlength=len(grids)) > 0
        bound = g_area - np.bincount(pi[has], weights=m_area[has], minlength=len(grids)) + excess["micro_grid"]
        for gi in np.flatnonzero((n_in > 0) & (spilling | (bound >= 0.5 * rules.gap_area_m2))):
            g = grids[gi]
            mu = shapely.union_all(m_m[pi == gi])
            for what, diff in (("未被微网格覆盖", shapely.difference(g_m[gi], mu)),
                               ("微网格超出网格", shapely.difference(mu, g_m[gi]))):
                for piece in _pieces_over(diff, rules.gap_area_m2, rules.gap_width_m):
                    problems.append(_problem("micro_tiling", "error",
                                             f"{g['name']}: {shapely.area(piece):,.0f} m² {what}", piece, proj,
                                             keys=[g["key"]], area_m2=round(float(shapely.area(piece)), 1)))

    # contiguity
    for rows, geoms in ((grids, g_m), (micros, m_m)):
        if not len(geoms):
            continue
        parts, idx = shapely.get_parts(geoms, return_index=True)
        big = shapely.area(parts) > rules.gap_area_m2
        pieces = np.bincount(idx[big], minlength=len(geoms))
        for i in np.flatnonzero(pieces > 1):
            problems.append(_problem("not_contiguous", "error", f"{rows[i]['name']} 分成 {pieces[i]} 块不相连的区域",
                                     geoms[i], proj, keys=[rows[i]["key"]], pieces=int(pieces[i])))

    # households per grid (point-on-surface rule)
    owner = owner_of_points(ctx.b_pts, grids)
    hh = np.bincount(owner[owner >= 0], weights=ctx.buildings["households"][owner >= 0], minlength=len(grids))
    pop = np.bincount(owner[owner >= 0], weights=ctx.buildings["population"][owner >= 0], minlength=len(grids))
    counts = []
    for row_i, g in enumerate(grids):
        status = "ok"
        if (g.get("kind") or "comprehensive") == "comprehensive":
            if hh[row_i] < band.grid_households_min:
                status = "below"
            elif hh[row_i] > band.grid_households_max:
                status = "above"
        counts.append({"key": g["key"], "code": g["code"], "name": g["name"], "kind": g.get("kind"),
                       "households": int(hh[row_i]), "population": int(pop[row_i]), "status": status,
                       "buildings": int(np.sum(owner == row_i))})
        if status != "ok":
            limit = band.grid_households_min if status == "below" else band.grid_households_max
            word = "低于下限" if status == "below" else "超过上限"
            problems.append(_problem("households_band", rules.band_severity or band.grid_households_band_severity,
                                     f"{g['name']} 有 {int(hh[row_i])} 户, {word} {limit} 户", g_m[row_i], proj,
                                     keys=[g["key"]], households=int(hh[row_i]),
                                     band=[band.grid_households_min, band.grid_households_max]))

    # buildings cut by a grid line, compounds split between grids
    if len(g_m):
        tree = shapely.STRtree(g_m)
        for rule, geoms, ids, names, sev in (
            ("building_cut", ctx.b_m, ctx.buildings["id"], None, "error"),
            ("compound_split", ctx.c_m, ctx.compounds["id"], ctx.compounds["name"], "warning"),
        ):
            if not len(geoms):
                continue
            si, gi = tree.query(geoms, predicate="intersects")
            # a shape strictly inside one grid is whole: skip the overlay for those pairs
            inside = shapely.contains_properly(g_m[gi], geoms[si])
            share = np.ones(len(si))
            rest = np.flatnonzero(~inside)
            share[rest] = shapely.area(shapely.intersection(geoms[si[rest]], g_m[gi[rest]])) / np.maximum(
                shapely.area(geoms[si[rest]]), 1e-9)
            sig = share > rules.cut_share
            n = np.bincount(si[sig], minlength=len(geoms))
            for i in np.flatnonzero(n > 1):
                in_grids = sorted({keys[g] for g in gi[sig & (si == i)]})
                label = f"楼栋 {ids[i]}" if names is None else f"小区 {names[i]}"
                msg = (f"{label} 被网格线切分到 {n[i]} 个网格" if rule == "building_cut"
                       else f"{label} 分属 {n[i]} 个网格")
                extra = {"building_id": int(ids[i])} if names is None else {"compound_id": int(ids[i])}
                problems.append(_problem(rule, sev, msg, geoms[i], proj, keys=in_grids, **extra))

    elapsed = time.perf_counter() - t0
    errors = sum(p["severity"] == "error" for p in problems)
    return {"plan_id": state.plan_id, "revision": state.revision, "ok": errors == 0, "errors": errors,
            "warnings": len(problems) - errors, "problems": problems, "grids": counts,
            "band": [band.grid_households_min, band.grid_households_max], "rules": asdict(rules),
            "epsg": proj.epsg, "elapsed_ms": round(elapsed * 1000, 2)}


_CONTEXTS: dict[tuple, Context] = {}
#: Validation results of one community's rows, by (plan, community, rows digest, context, rules): a street plan
#: re-validates only the communities an operation changed.
_RESULTS: dict[tuple, dict] = {}


def _stamps(conn: Connection, community_ids: list[int]) -> dict[int, tuple]:
    from sqlalchemy import text

    # set-based: one aggregate per table over all the communities (a correlated query per community costs ~1.5 ms
    # each, which a street plan's live validation would pay on every operation)
    rows = conn.execute(text("""
        WITH ids AS (SELECT DISTINCT unnest(CAST(:ids AS integer[])) AS id)
        SELECT ids.id, coalesce(b.n, 0) || ':' || coalesce(b.mx, 0), coalesce(u.hh, 0) || ':' || coalesce(u.n, 0),
               coalesce(k.n, 0) || ':' || coalesce(k.mx, 0), cb.boundary_id
        FROM ids
        LEFT JOIN (SELECT community_id, count(*) AS n, max(id) AS mx FROM buildings
                   WHERE community_id = ANY(CAST(:ids AS integer[])) GROUP BY 1) b ON b.community_id = ids.id
        LEFT JOIN (SELECT bb.community_id, sum(uu.households) AS hh, count(*) AS n FROM units uu
                   JOIN buildings bb ON bb.id = uu.building_id
                   WHERE bb.community_id = ANY(CAST(:ids AS integer[])) GROUP BY 1) u ON u.community_id = ids.id
        LEFT JOIN (SELECT community_id, count(*) AS n, max(id) AS mx FROM compounds
                   WHERE community_id = ANY(CAST(:ids AS integer[])) GROUP BY 1) k ON k.community_id = ids.id
        LEFT JOIN (SELECT id, boundary_id FROM communities_at(now())) cb ON cb.id = ids.id
    """), {"ids": [int(i) for i in community_ids]}).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def contexts_for(conn: Connection, community_ids: list[int]) -> dict[int, Context]:
    """Validation contexts of several communities (one fingerprint query), cached per community and fingerprint."""
    keys = {cid: (str(conn.engine.url), cid, *stamp) for cid, stamp in _stamps(conn, community_ids).items()}
    missing = [cid for cid, key in keys.items() if key not in _CONTEXTS]
    # the missing ones are loaded together (three queries in all), not three queries per community
    data = _frames(conn, missing) if missing else {}
    out = {}
    for cid, key in keys.items():
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            if len(_CONTEXTS) > 256:
                _CONTEXTS.clear()
            ctx = _CONTEXTS[key] = Context(conn, cid, data[cid])
        out[cid] = ctx
    return out


def context_for(conn: Connection, community_id: int) -> Context:
    """The validation context of a community, cached per (community, buildings/compounds/boundary fingerprint)."""
    return contexts_for(conn, [community_id])[community_id]


def _rules_key(rules: ValidationRules) -> tuple:
    band = get_settings().rules
    return (*asdict(rules).values(), band.grid_households_min, band.grid_households_max,
            band.grid_households_band_severity)


def validate_plan_state(conn: Connection, state: PlanState, rules: ValidationRules | None = None,
                        cache: bool | None = None) -> dict:
    """Validate a plan state community by community (a street plan: each community of the street, its grids
    against its own boundary, buildings and compounds). With `cache` (default: street plans) a community whose
    rows are unchanged since an earlier validation reuses that answer, so an operation costs the validation of the
    community it touched."""
    rules = rules or ValidationRules()
    cache = state.is_street if cache is None else cache
    t0 = time.perf_counter()
    # only communities holding rows (a rollback's street plan holds just the communities it restores)
    present = {r.get("community_id") for r in state.rows.values()}
    ctxs = contexts_for(conn, [c for c in state.communities if c in present])
    rk = _rules_key(rules)
    problems, grids, per = [], [], []
    for cid, code in state.communities.items():
        sub = state.sub(cid)
        if not sub.rows:
            continue
        digest = hashlib.blake2b("|".join(f"{k}:{sub.digests.get(k, '')}" for k in sorted(sub.rows)).encode(),
                                 digest_size=16).hexdigest() if len(sub.digests) == len(sub.rows) else None
        key = (str(conn.engine.url), state.plan_id, cid, digest, ctxs[cid].serial, rk)
        hit = _RESULTS.get(key) if cache and digest else None
        if hit is None:
            hit = validate_state(sub, ctxs[cid], rules)
            if cache and digest:
                if len(_RESULTS) > 2048:
                    _RESULTS.clear()
                _RESULTS[key] = hit
            fresh = True
        else:
            fresh = False
        tag = {"community": code} if state.is_street else {}
        problems += [{**p, **tag} for p in hit["problems"]]
        grids += [{**g, **tag} for g in hit["grids"]]
        per.append({"community": code, "validated": fresh, "errors": hit["errors"], "warnings": hit["warnings"],
                    "elapsed_ms": hit["elapsed_ms"] if fresh else 0.0, "epsg": hit["epsg"]})
    errors = sum(p["severity"] == "error" for p in problems)
    band = get_settings().rules
    out = {"plan_id": state.plan_id, "revision": state.revision, "ok": errors == 0, "errors": errors,
           "warnings": len(problems) - errors, "problems": problems, "grids": grids,
           "band": [band.grid_households_min, band.grid_households_max], "rules": asdict(rules),
           "epsg": per[0]["epsg"] if per else None,
           "elapsed_ms": round((time.perf_counter() - t0) * 1000, 2)}
    if state.is_street:
        out["scope"] = "street"
        out["communities"] = per
        out["validated_communities"] = sum(p["validated"] for p in per)
    return out


def validate(conn: Connection, plan_id: int, rules: ValidationRules | None = None) -> dict:
    """Validate a stored plan (reads the plan, reuses the cached community contexts)."""
    t0 = time.perf_counter()
    state = load_state(conn, plan_id)
    out = validate_plan_state(conn, state, rules)
    out["total_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    return out
