"""Buildings (楼栋) and units (单元): households per grid and lot, residential buildings from templates on a
rotated lattice inside the cores, shops and public buildings on open land, dedicated sites' buildings; building
refs, codes and names; the buildings and units layers.

Buildings are placed last, inside the cores, so no grid or micro-grid line cuts a footprint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from demo.arrays import pick, rank_in_order, rank_within
from demo.compounds import Compounds, code_rank
from demo.district import layer_frame
from demo.geometry import slots
from demo.parcels import Cores, GridPlan, Parcels
from demo.programme import DED, NORMAL

log = logging.getLogger(__name__)

_OUT_OF_BAND = 0.05  # comprehensive grids deliberately outside 300-500 households

# Residential building templates: units lo/hi, floors lo/hi, households per floor per unit, unit width,
# depth, gaps along and across rows, square (tower).  Chosen by compound kind, escalated when a lot
# cannot hold its households.
_TPL = np.array(
    [
        # ulo uhi flo fhi hpf  unit_w depth  gx   gy  square
        [2, 3, 4, 6, 3, 13.0, 11.0, 10.0, 14.0, 0],  # 0 scattered walk-up (散居)
        [2, 4, 6, 7, 2, 12.5, 11.5, 10.0, 18.0, 0],  # 1 six-storey slab (多层板楼)
        [2, 4, 9, 11, 3, 14.0, 13.0, 14.0, 24.0, 0],  # 2 mid-rise (小高层)
        [2, 4, 12, 18, 2, 24.0, 24.0, 20.0, 26.0, 1],  # 3 point tower (高层塔楼), 24-32 m square
        [4, 6, 15, 18, 2, 14.0, 14.0, 14.0, 30.0, 0],  # 4 high-rise slab
        [4, 4, 18, 18, 2, 24.0, 24.0, 16.0, 20.0, 1],  # 5 last resort: 4-unit 18-storey tower, 32 m square
    ]
)
# The escalation path from each starting template (-1: no further step).
_PATH = np.array(
    [[0, 1, 2, 4, 3, 5], [1, 2, 4, 3, 5, -1], [2, 4, 3, 5, -1, -1], [3, 4, 5, -1, -1, -1], [4, 3, 5, -1, -1, -1]]
)
# Dedicated-site building templates per dedicated type: length, depth, floors lo/hi, gaps, m² per building, n lo/hi
_DED_TPL = np.array(
    [
        [60.0, 15.0, 4, 5, 25.0, 30.0, 15e3, 2, 6],  # school
        [45.0, 22.0, 6, 16, 20.0, 25.0, 20e3, 1, 5],  # hospital
        [60.0, 30.0, 1, 3, 15.0, 20.0, 15e3, 2, 10],  # company
        [14.0, 10.0, 1, 2, 40.0, 40.0, 40e3, 1, 4],  # park
        [30.0, 30.0, 6, 20, 20.0, 20.0, 12e3, 1, 4],  # office
    ]
)
_DED_USE = np.array(["school", "hospital", "commercial", "public", "office"], dtype=object)


@dataclass
class Buildings:
    """Buildings (residential ones first) and the units of the residential ones."""

    lot: np.ndarray  # parcel
    geom: np.ndarray
    floors: np.ndarray
    use: np.ndarray
    n_res: int
    unit_building: np.ndarray  # building of each unit (a residential one)
    unit_number: np.ndarray  # 1…
    unit_households: np.ndarray
    unit_population: np.ndarray


def _build_regions(parcels: Parcels, cores: Cores, comp: Compounds, walls: np.ndarray) -> np.ndarray:
    """Where buildings may stand in each parcel: its core pulled in (inside the wall for walled compounds)."""
    core = cores.core
    ok_core = ~shapely.is_empty(core) & (cores.core_area > 500)
    region = np.full(len(parcels.geom), None, dtype=object)
    in_exact = (comp.of_parcel >= 0) & (comp.parcel_exact | comp.parcel_micro_exact)
    walled = (comp.of_parcel >= 0) & ~in_exact
    other = (comp.of_parcel < 0) & (parcels.kind <= NORMAL)
    ded = parcels.kind >= DED
    region[in_exact] = shapely.buffer(core[in_exact], -4.0, join_style="mitre")
    wi = np.flatnonzero(walled)
    region[wi] = shapely.buffer(
        shapely.intersection(walls[comp.of_parcel[wi]], core[wi], grid_size=0.01), -3.0, join_style="mitre"
    )
    region[other] = shapely.buffer(core[other], -5.0, join_style="mitre")
    region[ded] = shapely.buffer(core[ded], -6.0, join_style="mitre")
    empty = shapely.from_wkt("POLYGON EMPTY")
    region[~ok_core] = empty
    region[shapely.is_missing(region)] = empty
    return region


def _grid_households(rng: np.random.Generator, plan: GridPlan) -> np.ndarray:
    """Households per grid: 318-482 for comprehensive grids, a few deliberately outside 300-500, 0 for dedicated."""
    ng = plan.n_grids
    hh = rng.integers(318, 483, ng)
    # a fixed share of comprehensive grids deliberately outside 300-500 (at least one each way)
    cg = np.flatnonzero(plan.comprehensive)
    n_out = max(1, round(_OUT_OF_BAND / 2 * len(cg)))
    out = rng.permutation(cg)[: 2 * n_out]
    low = np.zeros(ng, bool)
    high = np.zeros(ng, bool)
    low[out[:n_out]] = True
    high[out[n_out:]] = True
    hh[low] = rng.integers(170, 286, int(low.sum()))
    hh[high] = rng.integers(525, 720, int(high.sum()))
    hh[~plan.comprehensive] = 0
    return hh


def place_buildings(
    rng: np.random.Generator, parcels: Parcels, plan: GridPlan, cores: Cores, comp: Compounds, walls: np.ndarray
) -> Buildings:
    """Households per grid spread over its lots; residential buildings and their units; shops, public buildings
    and dedicated sites' buildings."""
    npar = len(parcels.geom)
    ut = parcels.kind
    core = cores.core
    ok_core = ~shapely.is_empty(core) & (cores.core_area > 500)
    other = (comp.of_parcel < 0) & (ut <= NORMAL)
    ded = ut >= DED
    region = _build_regions(parcels, cores, comp, walls)
    # households per comprehensive grid, then per lot
    ng = plan.n_grids
    hh = _grid_households(rng, plan)
    r_area = shapely.area(region)
    w = np.where(other, 0.35, 1.0) * r_area * (ut <= NORMAL)
    wg = np.bincount(parcels.grid, weights=w, minlength=ng)[parcels.grid]
    raw = hh[parcels.grid] * np.divide(w, wg, out=np.zeros(npar), where=wg > 0)
    fl = np.floor(raw).astype(np.int64)
    rem = hh - np.bincount(parcels.grid, weights=fl, minlength=ng).astype(np.int64)
    rank = rank_within(parcels.grid, -(raw - fl))
    lot_hh = fl + (rank < rem[parcels.grid])
    # templates: kind of compound decides the building type
    kind = np.where(comp.of_parcel >= 0, comp.kind[np.maximum(comp.of_parcel, 0)], -1)
    tpl = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [2, 1, 1, 0], 0)
    tpl = np.where((kind == 0) & (rng.random(npar) < 0.5), 3, tpl)
    tpl = np.where((kind == 3) & (rng.random(npar) < 0.4), 1, tpl)
    # rows follow the lot's own walls: the envelope direction nearest the superblock's orientation
    placeholder = core.copy()
    placeholder[~ok_core] = shapely.box(0, 0, 1, 1)
    env = shapely.oriented_envelope(placeholder)
    exy = shapely.get_coordinates(env)
    eidx = np.r_[0, np.cumsum(shapely.get_num_coordinates(env))[:-1]]
    d = exy[eidx + 1] - exy[eidx]
    phi = np.arctan2(d[:, 1], d[:, 0])
    off = np.round((parcels.theta - phi) / (np.pi / 2)) * (np.pi / 2)
    lot_theta = phi + off + np.deg2rad(rng.uniform(-2, 2, npar))
    res = _residential(rng, region, lot_theta, lot_hh, tpl, ut <= NORMAL, other, plan, parcels.grid, hh)
    # shops and public buildings on open land, from the candidates residential buildings left
    c_lot, c_geom, c_floors, c_use = [], [], [], []
    if res.leftover:
        cl = np.concatenate([v[0] for v in res.leftover])
        cr = np.concatenate([v[1] for v in res.leftover])
        ck = np.concatenate([v[2] for v in res.leftover])
        n_shop = rng.integers(1, 4, npar)
        sel = pick(cl, n_shop, ck, skip=res.taken)
        c_lot.append(cl[sel])
        c_geom.append(cr[sel])
        c_floors.append(rng.integers(2, 5, len(sel)))
        c_use.append(np.where(rng.random(len(sel)) < 0.25, "public", "commercial").astype(object))
    # other lots with no residential share still get shops
    bare = np.flatnonzero(other & ok_core & (lot_hh < 24))
    if len(bare):
        nb = len(bare)
        lot, rect = slots(
            region[bare], lot_theta[bare], np.full(nb, 30.0), np.full(nb, 14.0), np.full(nb, 12.0), np.full(nb, 14.0)
        )
        sel = pick(lot, rng.integers(1, 4, nb), rng.random(len(lot)))
        c_lot.append(bare[lot[sel]])
        c_geom.append(rect[sel])
        c_floors.append(rng.integers(2, 5, len(sel)))
        c_use.append(np.where(rng.random(len(sel)) < 0.25, "public", "commercial").astype(object))
    # dedicated sites
    di = np.flatnonzero(ded & ok_core)
    if len(di):
        dt = parcels.dedicated[di]
        t = _DED_TPL[dt]
        lot, rect = slots(region[di], lot_theta[di], t[:, 0], t[:, 1], t[:, 4], t[:, 5])
        nwant = np.clip(np.round(cores.core_area[di] / t[:, 6]), t[:, 7], t[:, 8]).astype(np.int64)
        sel = pick(lot, nwant, rng.random(len(lot)))
        dl = lot[sel]
        dr = rank_within(dl, np.arange(len(dl)))
        fl_ = rng.integers(t[dl, 2].astype(np.int64), t[dl, 3].astype(np.int64) + 1)
        du = _DED_USE[dt[dl]].copy()
        du[(dt[dl] == 2) & (dr == 0)] = "office"
        c_lot.append(di[dl])
        c_geom.append(rect[sel])
        c_floors.append(fl_)
        c_use.append(du)
    lots, geoms, floors, use = res.lot, res.geom, res.floors, np.full(len(res.lot), "residential", dtype=object)
    if c_lot:
        lots = np.concatenate([lots, *c_lot])
        geoms = np.concatenate([geoms, *c_geom])
        floors = np.concatenate([floors, np.concatenate(c_floors).astype(np.int64)])
        use = np.concatenate([use, *c_use])
    return Buildings(
        lot=lots, geom=geoms, floors=floors, use=use, n_res=len(res.lot), unit_building=res.unit_building,
        unit_number=res.unit_number, unit_households=res.unit_households, unit_population=res.unit_population,
    )


@dataclass
class _Residential:
    """Residential buildings and their units, and the candidates left on open land."""

    lot: np.ndarray
    geom: np.ndarray
    floors: np.ndarray
    unit_building: np.ndarray
    unit_number: np.ndarray
    unit_households: np.ndarray
    unit_population: np.ndarray
    leftover: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (lot, rectangle, random key) per try
    taken: np.ndarray  # per lot, how many of the chosen try's candidates buildings took


def _residential(
    rng: np.random.Generator,
    region: np.ndarray,
    lot_theta: np.ndarray,
    lot_hh: np.ndarray,
    tpl: np.ndarray,
    housing: np.ndarray,
    other: np.ndarray,
    plan: GridPlan,
    par_grid: np.ndarray,
    hh: np.ndarray,
) -> _Residential:
    """Residential buildings on lots of 24+ households: try templates along an escalation path, each on four
    lattice phases, until the lot holds its households; then units and their households (12-36 each)."""
    npar = len(region)
    res_lots = np.flatnonzero((lot_hh >= 24) & housing)
    # a lot that never fits takes its highest-capacity try
    nl = len(res_lots)
    start = tpl[res_lots]
    done = np.zeros(nl, bool)
    best_it = np.full(nl, -1)
    best_cap = np.full(nl, -1.0)
    tries = []
    steps = [(k, ph) for k in range(_PATH.shape[1]) for ph in ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5))]
    for it, (k, ph) in enumerate(steps):
        act = np.flatnonzero(~done & (_PATH[start, k] >= 0))
        if not len(act):
            continue
        t = _TPL[_PATH[start[act], k]]
        units = rng.integers(t[:, 0].astype(np.int64), t[:, 1].astype(np.int64) + 1)
        bw = np.where(t[:, 9] == 1, t[:, 5] + 4.0 * (units - 2), units * t[:, 5] + 2.0)
        bd = np.where(t[:, 9] == 1, bw, t[:, 6])
        lot, rect = slots(region[res_lots[act]], lot_theta[res_lots[act]], bw, bd, t[:, 7], t[:, 8], ph)
        avail = np.bincount(lot, minlength=len(act))
        hpu = np.clip((t[:, 2] + t[:, 3]) / 2 * t[:, 4], 12, 36)
        need = np.ceil(lot_hh[res_lots[act]] / (units * hpu)).astype(np.int64)
        cap = avail * units * 36.0
        better = cap > best_cap[act]
        best_cap[act[better]] = cap[better]
        best_it[act[better]] = it
        fits = avail >= need
        best_it[act[fits]] = it
        done[act[fits]] = True
        tries.append((it, act, lot, rect, units, t, np.minimum(need, avail), rng.random(len(lot))))
    log.debug("lots over capacity %d", int((~done).sum()))
    b_lot, b_geom, b_units, b_hpf, b_flo = [], [], [], [], []
    taken = np.zeros(npar, dtype=np.int64)
    leftover = []
    for it, act, lot, rect, units, t, want, key in tries:
        mine = best_it[act] == it
        want = np.where(mine, want, 0)
        chosen = pick(lot, want, key)
        gl = res_lots[act]
        b_lot.append(gl[lot[chosen]])
        b_geom.append(rect[chosen])
        b_units.append(units[lot[chosen]])
        b_hpf.append(t[lot[chosen], 4])
        b_flo.append(t[lot[chosen], 2])
        taken[gl[mine]] = want[mine]
        # leftover candidates of 'other' lots host shops and public buildings
        keepc = mine[lot] & other[gl[lot]]
        if keepc.any():
            leftover.append((gl[lot[keepc]], rect[keepc], key[keepc]))
    lots = np.concatenate(b_lot) if b_lot else np.zeros(0, np.int64)
    geoms = np.concatenate(b_geom) if b_geom else np.zeros(0, object)
    n_units = np.concatenate(b_units).astype(np.int64) if b_units else np.zeros(0, np.int64)
    hpf = np.concatenate(b_hpf) if b_hpf else np.zeros(0)
    flo = np.concatenate(b_flo) if b_flo else np.zeros(0)
    # households: spread each lot's total evenly over its units, 12-36 per unit; a lot with too few
    # households for its buildings keeps fewer buildings / units
    nb_lot = np.bincount(lots, minlength=npar)
    u_lot = np.zeros(npar, dtype=np.int64)
    u_lot[lots] = n_units
    thin = lot_hh < 12 * nb_lot * u_lot
    nb_new = np.where(thin & (lot_hh < 24 * nb_lot), np.maximum(1, lot_hh // 24), nb_lot)
    u_new = np.where(thin, np.clip(lot_hh // (12 * np.maximum(nb_new, 1)), 2, np.maximum(u_lot, 2)), u_lot)
    keep = rank_within(lots, np.arange(len(lots))) < nb_new[lots]
    lots, geoms, hpf, flo = lots[keep], geoms[keep], hpf[keep], flo[keep]
    n_units = u_new[lots]
    nres = len(lots)
    # unit rows
    un_b = np.repeat(np.arange(nres), n_units)
    un_no = np.arange(len(un_b)) - np.repeat(np.cumsum(n_units) - n_units, n_units) + 1
    # the grid's households over all its units: a lot short of room hands its share to the others
    ug = par_grid[lots[un_b]]
    g_units = np.bincount(ug, minlength=plan.n_grids)
    base = hh[ug] // np.maximum(g_units[ug], 1)
    extra = hh[ug] - base * g_units[ug]
    seq = rank_within(ug, np.arange(len(ug)))
    un_hh = np.minimum(base + (seq < extra), 36)
    un_hh = np.maximum(un_hh, 12)
    un_pop = np.round(un_hh * rng.uniform(2.2, 3.0, len(un_hh))).astype(np.int64)
    hh_max = np.zeros(nres, dtype=np.int64)
    np.maximum.at(hh_max, un_b, un_hh)
    floors = np.maximum(flo, np.ceil(hh_max / hpf)).astype(np.int64)
    return _Residential(
        lot=lots, geom=geoms, floors=floors, unit_building=un_b, unit_number=un_no, unit_households=un_hh,
        unit_population=un_pop, leftover=leftover, taken=taken,
    )


@dataclass
class BuildingCodes:
    """Per building: ref (1…, district-wide), 5-digit code within the community, name."""

    ref: np.ndarray
    code: np.ndarray
    name: np.ndarray


def number_buildings(
    b: Buildings, parcels: Parcels, comp: Compounds, comp_ref: np.ndarray, micro_code: np.ndarray,
    comm_code: np.ndarray
) -> BuildingCodes:
    """Refs and codes in community, micro-grid, compound order, then rows north→south, west→east; names 'k栋'
    within the compound (or the grid outside compounds), 'k号楼' on dedicated sites."""
    bl = b.lot
    nb = len(bl)
    bxy = shapely.get_coordinates(shapely.centroid(b.geom))
    comm_rank = code_rank(comm_code)[parcels.comm[bl]]
    b_comp = comp.of_parcel[bl]
    top = 1e9
    row = np.floor((top - bxy[:, 1]) / 40.0)
    comp_key = np.where(b_comp >= 0, comp_ref[np.maximum(b_comp, 0)], 10**9)
    micro_key = code_rank(micro_code)[parcels.micro[bl]]
    order = np.lexsort((np.arange(nb), bxy[:, 0], row, comp_key, micro_key, comm_rank))
    seq = rank_in_order(comm_rank, order) + 1
    ref = np.empty(nb, dtype=np.int64)
    ref[order] = np.arange(1, nb + 1)
    scope = np.where(b_comp >= 0, b_comp, comp.n + parcels.grid[bl])
    k = (rank_within(scope, ref) + 1).astype(str).astype(object)
    name = np.where(parcels.kind[bl] >= DED, k + "号楼", k + "栋").astype(object)
    return BuildingCodes(ref=ref, code=np.char.zfill(seq.astype(str), 5).astype(object), name=name)


def buildings_frame(
    b: Buildings, codes: BuildingCodes, parcels: Parcels, comp: Compounds, comp_ref: np.ndarray, comm_code: np.ndarray,
    comp_address: np.ndarray | None = None,
) -> gpd.GeoDataFrame:
    """The buildings layer by ref: code, name, address (the compound's address and the name: "巴陵东路129号3栋";
    none outside compounds), community, compound (nullable), floors, use."""
    bl = b.lot
    bcomp = comp.of_parcel[bl]
    bcr = pd.array(np.where(bcomp >= 0, comp_ref[np.maximum(bcomp, 0)], 0), dtype="Int64")
    bcr[bcomp < 0] = pd.NA
    address = np.full(len(bl), None, dtype=object)
    if comp_address is not None:
        inside = bcomp >= 0
        address[inside] = comp_address[bcomp[inside]] + codes.name[inside]
    columns = {
        "ref": codes.ref, "code": codes.code, "name": codes.name, "address": address,
        "community_code": comm_code[parcels.comm[bl]],
        "compound_ref": bcr, "floors": b.floors, "use": b.use,
    }
    return layer_frame(columns, b.geom, np.argsort(codes.ref, kind="stable"))


def units_frame(b: Buildings, building_ref: np.ndarray) -> pd.DataFrame:
    """The units layer by building ref and unit number."""
    units = pd.DataFrame(
        {
            "building_ref": building_ref[b.unit_building], "number": b.unit_number, "households": b.unit_households,
            "population": b.unit_population,
        }
    )
    return units.sort_values(["building_ref", "number"], kind="stable").reset_index(drop=True)

