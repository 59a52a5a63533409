"""Compounds (小区): which parcels make each one and what it is planted to be against grids and micro-grids; walls;
refs, names and the layer.

Planted types (against grids, and against micro-grids): 0 same, 1 larger, 2 smaller, 3 straddling.  A compound
equal to its grid (or micro-grid) is the union of the same faces; the others are walled inside their parcels,
set back from the parcel's core, some with an L-shape, an enclave or a public lane.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from demo.arrays import row_order
from demo.district import layer_frame
from demo.geometry import as_multi, dissolve, frame_extents
from demo.parcels import Cores, Faces, GridPlan, Parcels
from demo.programme import LARGER, NORMAL, SAME, STRAD, Units
from demo.superblocks import Superblocks
from demo.vocabulary import CN_NUM, ORGS, PREFIX, ROADS, SUFFIX

#: Compound kinds, by index: planned estates, old neighbourhoods, work-unit quarters (单位宿舍), open courtyards.
KINDS = np.array(["commercial", "old", "work_unit", "open"], dtype=object)
#: Planted types, by index.
PLANTED = np.array(["same", "larger", "smaller", "straddling"], dtype=object)

_SETBACK_MARGIN_M = 1.0  # a distinct wall stays this far beyond the classifier's 'same' tolerance


def min_distinct_setback() -> float:
    """Metres a wall must be set back from its micro-grid's line to be told apart from it (not 'same').

    The walls are mitred offsets of the unit's outline, so the Hausdorff distance between them is at least the
    setback; it has to exceed the 'same' tolerance even at the sensitivity analysis's upper step.
    """
    from geo.classify.classification import get_rules  # lazy: the generator needs the classifier's settings only here

    rules = get_rules()
    return rules.same_hausdorff_m * (1.0 + rules.sensitivity_step) + _SETBACK_MARGIN_M


@dataclass
class Compounds:
    """Each compound's community, planted type and kind; per parcel, its compound and its role."""

    n: int
    comm: np.ndarray
    planted: np.ndarray  # against grids
    kind: np.ndarray  # index into KINDS
    of_parcel: np.ndarray  # compound of each parcel, -1 for none
    parcel_exact: np.ndarray  # the parcel's grid is its compound (same, larger)
    parcel_micro_exact: np.ndarray  # the parcel's micro-grid is its compound
    parcel_absorbs: np.ndarray  # the parcel's micro-grid may take road margin

    def alone_in_micro(self, parcels: Parcels, n_micro: int) -> np.ndarray:
        """Per compound: whether every micro-grid it lies in holds no other compound."""
        has = self.of_parcel >= 0
        pairs = np.unique(np.column_stack([self.of_parcel[has], parcels.micro[has]]), axis=0)
        shared = np.bincount(pairs[:, 1], minlength=n_micro) > 1
        out = np.ones(self.n, bool)
        out[pairs[shared[pairs[:, 1]], 0]] = False
        return out

    def planted_micro(self, parcels: Parcels) -> np.ndarray:
        """What each compound was built to be against micro-grids."""
        out = np.full(self.n, 2, dtype=np.int64)
        has = self.of_parcel >= 0
        pairs = np.unique(np.column_stack([self.of_parcel[has], parcels.micro[has]]), axis=0)
        n_micro = np.bincount(pairs[:, 0], minlength=self.n)
        out[n_micro >= 2] = 3
        me = np.zeros(self.n, bool)
        me[self.of_parcel[has & self.parcel_micro_exact]] = True
        out[me] = 0
        out[self.planted <= 1] = 1
        return out


def assign_roles(
    rng: np.random.Generator, units: Units, sb: Superblocks, parcels: Parcels, plan: GridPlan, cores: Cores
) -> Compounds:
    """Decide the compounds: unit-level ones (same, larger, straddling) and, inside grids that hold several, the
    larger cores; their kinds; which parcels' micro-grids equal their compound and which take road margin."""
    npar = len(parcels.geom)
    ut, pu, pidx = parcels.kind, parcels.unit, parcels.piece
    core_area = cores.core_area
    nu = len(units.kind)
    key = np.full(npar, -1, dtype=np.int64)
    unit_level = np.isin(ut, [SAME, LARGER]) | ((ut == STRAD) & np.isin(pidx, [1, 2]))
    key[unit_level] = pu[unit_level]
    cand = ((ut == NORMAL) | ((ut == STRAD) & np.isin(pidx, [0, 3]))) & (core_area > 6000)
    ci = np.flatnonzero(cand)
    pick = ci[np.argsort(-rng.random(len(ci)) ** (20e3 / np.maximum(core_area[ci], 1.0)), kind="stable")]
    pick = np.sort(pick[: units.n_small])
    key[pick] = nu + pick
    has = key >= 0
    par_comp = np.full(npar, -1, dtype=np.int64)
    uniq, inv = np.unique(key[has], return_inverse=True)
    par_comp[has] = inv
    ncomp = len(uniq)
    first = np.full(ncomp, -1, dtype=np.int64)
    hp = np.flatnonzero(has)
    first[inv[::-1]] = hp[::-1]
    comp_utype = ut[first]
    comp_cell = parcels.cell[first]
    unit_comp = uniq < nu
    planted = np.select([comp_utype == SAME, comp_utype == LARGER, (comp_utype == STRAD) & unit_comp], [0, 1, 3], 2)
    # compound kind: planned estates where a compound is a grid, old and open ones where grids hold several
    cxy = sb.xy[comp_cell]
    r = np.hypot(cxy[:, 0], cxy[:, 1]) / sb.radius
    p_old = np.clip(0.55 - 0.3 * r, 0.15, 0.55)
    u = rng.random(ncomp)
    kind = np.where(
        planted <= 1,
        np.select([u < 0.55, u < 0.55 + 0.75 * p_old, u < 0.93], [0, 1, 2], 3),
        np.select([u < 0.24, u < 0.24 + p_old, u < 0.24 + p_old + 0.18], [0, 1, 2], 3),
    )
    # micro-exact: a compound alone in its micro-grid whose micro-grid is exactly the compound
    micro_n = np.bincount(parcels.micro, minlength=plan.n_micro)
    single = (par_comp >= 0) & (planted[np.maximum(par_comp, 0)] == 2)
    single &= micro_n[parcels.micro] == 1
    me = single & (rng.random(npar) < 0.35)
    par_exact = np.isin(ut, [SAME, LARGER])
    absorb = ~par_exact & ~me
    # every non-exact grid keeps at least one parcel that takes road margin
    g_abs = np.bincount(parcels.grid, weights=absorb, minlength=plan.n_grids)
    bad = np.flatnonzero((g_abs == 0) & ~np.isin(plan.kind, [SAME, LARGER]))
    if len(bad):
        fix = np.flatnonzero(np.isin(parcels.grid, bad) & me)
        _, fi = np.unique(parcels.grid[fix], return_index=True)
        me[fix[fi]] = False
        absorb = ~par_exact & ~me
    return Compounds(
        n=ncomp, comm=parcels.comm[first], planted=planted, kind=kind, of_parcel=par_comp, parcel_exact=par_exact,
        parcel_micro_exact=me, parcel_absorbs=absorb,
    )


def draw_walls(
    rng: np.random.Generator, comp: Compounds, parcels: Parcels, cores: Cores, faces: Faces, n_micro: int
) -> np.ndarray:
    """Each compound's outline as a MultiPolygon: the faces of its grid or micro-grid where it equals one, else its
    cores pulled in by a setback, shaped; half of the 'same' ones as resurveyed by someone else."""
    ncomp = comp.n
    par_comp = comp.of_parcel
    geom = np.full(ncomp, None, dtype=object)
    # compounds equal to their grid (or micro-grid): union of the same faces
    exact_p = (par_comp >= 0) & (comp.parcel_exact | comp.parcel_micro_exact)
    core_faces = ~faces.margin & exact_p[faces.parcel]
    fc = par_comp[faces.parcel[core_faces]]
    ex = dissolve(faces.geom[core_faces], fc, ncomp)
    comp_exact = np.zeros(ncomp, bool)
    comp_exact[np.unique(fc)] = True
    geom[comp_exact] = ex[comp_exact]
    # walled compounds inside their parcels: union of cores, pulled in by a setback
    walled = np.flatnonzero((par_comp >= 0) & ~exact_p)
    wc = par_comp[walled]
    order = np.argsort(wc, kind="stable")
    walled, wc = walled[order], wc[order]
    uw, first = np.unique(wc, return_index=True)
    base = cores.core[walled[first]].copy()
    two = np.flatnonzero(np.diff(np.r_[first, len(wc)]) == 2)
    if len(two):
        base[two] = shapely.union(base[two], cores.core[walled[first[two] + 1]], grid_size=0.01)
    area, perimeter = shapely.area(base), shapely.length(base)
    sb = np.clip(0.11 * area / np.maximum(perimeter, 1.0), 3.0, 12.0)
    # A compound alone in its micro-grid yet planted smaller differs from that micro-grid only by its wall's
    # setback: keep that beyond the classifier's 'same' tolerance, or it would be recovered as 'same'.
    alone = comp.alone_in_micro(parcels, n_micro)[uw] & (comp.planted_micro(parcels)[uw] == 2)
    sb[alone] = np.maximum(sb[alone], min_distinct_setback())
    g = np.asarray(shapely.buffer(base, -sb, join_style="mitre", mitre_limit=3.0))
    g = _shape(rng, g, comp.planted[uw], parcels.theta[walled[first]])
    # an opening removes the slivers and spikes a corner cut can leave along a wall
    g = shapely.buffer(shapely.buffer(g, -1.0, join_style="mitre"), 1.0, join_style="mitre")
    geom[uw] = g
    # "same" compounds surveyed by someone else: shifted and rounded to a 1 m grid (≤ 1.3 m)
    same = np.flatnonzero((comp.planted == 0) & (rng.random(ncomp) < 0.5))
    if len(same):
        dxy = rng.uniform(-0.4, 0.4, (len(same), 2))
        moved = shapely.segmentize(geom[same], 30.0)
        xy, idx = shapely.get_coordinates(moved, return_index=True)
        moved = shapely.set_coordinates(moved, xy + dxy[idx])
        moved = shapely.set_precision(moved, 1.0)
        ok = shapely.is_valid(moved) & (np.abs(shapely.area(moved) / shapely.area(geom[same]) - 1) < 0.02)
        geom[same[ok]] = moved[ok]
    return as_multi(geom)


def _shape(rng: np.random.Generator, g: np.ndarray, planted: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Irregular walls for compounds inside larger grids: L-shapes, inner enclaves, a public lane."""
    g = g.copy()
    n = len(g)
    cand = (planted == 2) & (shapely.area(g) > 4000)
    u = rng.random(n)
    # L-shape: cut a corner rectangle off the oriented envelope
    sel = np.flatnonzero(cand & (u < 0.2))
    if len(sel):
        umin, umax, vmin, vmax = frame_extents(g[sel], theta[sel])
        sel = sel[np.minimum(umax - umin, vmax - vmin) >= 120.0]
        env = shapely.oriented_envelope(g[sel])
        _, idx = shapely.get_coordinates(env, return_index=True)
        okk = np.bincount(idx, minlength=len(sel)) == 5
        sel, env = sel[okk], env[okk]
        xy = shapely.get_coordinates(env).reshape(-1, 5, 2)[:, :4]
        k = rng.integers(0, 4, len(sel))
        r = np.arange(len(sel))
        p0, p1, p3 = xy[r, k], xy[r, (k + 1) % 4], xy[r, (k + 3) % 4]
        fa, fb = rng.uniform(0.3, 0.45, (2, len(sel)))
        qa = p0 + fa[:, None] * (p1 - p0)
        qb = p0 + fb[:, None] * (p3 - p0)
        notch = shapely.polygons(np.stack([p0, qa, qa + (qb - p0), qb, p0], 1))
        cut = shapely.difference(g[sel], notch)
        good = shapely.area(cut) > 0.6 * shapely.area(g[sel])
        g[sel[good]] = cut[good]
    # enclave: a kindergarten or substation inside the wall that is not the compound's
    sel = np.flatnonzero(cand & (u >= 0.2) & (u < 0.27))
    if len(sel):
        pt = shapely.get_coordinates(shapely.point_on_surface(g[sel]))
        half = rng.uniform(9.0, 15.0, len(sel))
        th = theta[sel]
        c, s = np.cos(th), np.sin(th)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1], [-1, -1]], float)
        cu = corners[None, :, 0] * half[:, None]
        cv = corners[None, :, 1] * half[:, None]
        hole = np.asarray(
            shapely.polygons(
                np.stack(
                    [pt[:, :1] + cu * c[:, None] - cv * s[:, None], pt[:, 1:] + cu * s[:, None] + cv * c[:, None]], -1
                )
            )
        )
        inner = shapely.buffer(g[sel], -8.0)
        good = shapely.contains_properly(inner, hole)
        g[sel[good]] = shapely.difference(g[sel[good]], hole[good])
    # a public lane through the compound: two walled parts
    sel = np.flatnonzero(cand & (u >= 0.27) & (u < 0.35))
    if len(sel):
        cen = shapely.get_coordinates(shapely.centroid(g[sel]))
        umin, umax, vmin, vmax = frame_extents(g[sel], theta[sel])
        across_u = (umax - umin) >= (vmax - vmin)
        ang = theta[sel] + np.where(across_u, np.pi / 2, 0.0)
        length = 2 * np.hypot(umax - umin, vmax - vmin)
        d = np.stack([np.cos(ang), np.sin(ang)], 1) * length[:, None]
        line = shapely.linestrings(np.stack([cen - d, cen + d], 1))
        strip = shapely.buffer(line, rng.uniform(3.0, 4.0, len(sel)), cap_style="flat")
        cut = shapely.difference(g[sel], strip)
        parts = shapely.get_num_geometries(cut)
        good = (parts == 2) & (shapely.area(cut) > 0.8 * shapely.area(g[sel]))
        g[sel[good]] = cut[good]
    return g


def number_compounds(
    rng: np.random.Generator, comp: Compounds, geom: np.ndarray, comm_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Compound refs (1…, in community-code order, then north→south, west→east) and unique names by kind."""
    pxy = shapely.get_coordinates(shapely.point_on_surface(geom))
    grp = code_rank(comm_code)[comp.comm]
    r = row_order(grp, pxy[:, 0], pxy[:, 1], 150.0)
    order = np.lexsort((r, grp))
    ref = np.empty(comp.n, dtype=np.int64)
    ref[order] = np.arange(1, comp.n + 1)
    return ref, _names(rng, ref, comp.kind)


def code_rank(codes: np.ndarray) -> np.ndarray:
    """0-based rank of each code in code order (stable)."""
    return np.argsort(np.argsort(codes, kind="stable"), kind="stable")


def _names(rng: np.random.Generator, ref: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """Names drawn from each kind's pool in ref order, numbered '…2区' where a pool runs out or a name repeats."""
    out = np.full(len(ref), "", dtype=object)
    pools = {
        0: [p + s for p in PREFIX for s in SUFFIX],
        1: [r + CN_NUM[i] + "村" for r in ROADS for i in range(1, 13)]
        + [f"{r}{i}号小区" for r in ROADS for i in range(1, 120)],
        2: [o + t for o in ORGS for t in ("宿舍", "家属区", "生活区")]
        + [o + r + "宿舍" for o in ORGS for r in ROADS],
        3: [f"{r}{i}号院" for r in ROADS for i in range(1, 300)],
    }
    pools[0] = pools[0] + [x + "二期" for x in pools[0]] + [x + "三期" for x in pools[0]]
    order = np.argsort(ref, kind="stable")
    kinds = kind[order]
    for k in range(4):
        idx = order[kinds == k]
        pool = pools[k]
        perm = rng.permutation(len(pool))
        names = [pool[j] for j in perm[: len(idx)]]
        names += [f"{pool[perm[i % len(pool)]]}{i // len(pool) + 1}区" for i in range(len(names), len(idx))]
        out[idx] = names
    s = pd.Series(out[order])
    dup = s.duplicated()
    if dup.any():
        s[dup] = [f"{x}{i + 2}区" for i, x in enumerate(s[dup])]
    out[order] = s.to_numpy(dtype=object)
    return out


def compounds_frame(
    rng: np.random.Generator, comp: Compounds, parcels: Parcels, ref: np.ndarray, name: np.ndarray, geom: np.ndarray,
    comm_code: np.ndarray,
) -> gpd.GeoDataFrame:
    """The compounds layer by ref, with property management (物业) and owners' committees (业委会) drawn by kind."""
    kind = comp.kind
    pm_p = np.array([0.97, 0.35, 0.6, 0.1])[kind]
    oc_p = np.array([0.45, 0.1, 0.15, 0.02])[kind]
    has_pm = rng.random(comp.n) < pm_p
    has_oc = (rng.random(comp.n) < oc_p) & (has_pm | (rng.random(comp.n) < 0.2))
    address = compound_addresses(rng, geom, ref, name)  # drawn last: every earlier draw stays as it was
    columns = {
        "ref": ref, "name": name, "address": address, "kind": KINDS[kind], "has_property_management": has_pm,
        "has_owners_committee": has_oc, "community_code": comm_code[comp.comm],
        "planted_type": PLANTED[comp.planted], "planted_micro_type": PLANTED[comp.planted_micro(parcels)],
    }
    return layer_frame(columns, geom, np.argsort(ref, kind="stable"))


#: Depth (m) of the east-west bands that share a road: the compounds of one band face the same road.
ROAD_BAND_M = 300.0


def compound_addresses(rng: np.random.Generator, geom: np.ndarray, ref: np.ndarray,
                       name: np.ndarray | None = None) -> np.ndarray:
    """地址 per compound: "巴陵东路129号". Compounds of one east-west band share a road (drawn from ROADS); house
    numbers are odd and grow west→east with gaps, unique on each road (bands beyond the road list reuse a road
    further along its numbers). A compound named after its gate ("黄沙湾路178号院") keeps that address.
    `geom` in metres (the plan's coordinates)."""
    n = len(ref)
    if n == 0:
        return np.empty(0, dtype=object)
    xy = shapely.get_coordinates(shapely.point_on_surface(geom))
    band = np.unique(np.floor(xy[:, 1] / ROAD_BAND_M).astype(np.int64), return_inverse=True)[1].ravel()
    roads = np.array(ROADS, dtype=object)[rng.permutation(len(ROADS))]
    road = band % len(roads)
    order = np.lexsort((ref, xy[:, 0], band // len(roads), road))
    gaps = pd.Series(2 * rng.integers(1, 5, n)[order])
    number = np.empty(n, dtype=np.int64)
    number[order] = gaps.groupby(road[order]).cumsum().to_numpy() - 1
    address = (roads[road] + number.astype(str).astype(object) + "号").astype(object)
    if name is not None:
        gate = pd.Series(name, dtype=object).str.extract(_GATE_NAME, expand=False)
        named = gate.notna().to_numpy()
        address[named] = gate[named].to_numpy(dtype=object) + "号"
    return address


#: A compound name that is its gate's address: a road of the vocabulary, a number, 号 (院, 小区 …).
_GATE_NAME = "^((?:" + "|".join(ROADS) + r")\d+)号"
