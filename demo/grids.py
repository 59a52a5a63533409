"""Grids (网格) and micro-grids (微网格): road margins handed over (属地兜底), every partition as a coverage union of
the same faces, grid and micro-grid codes and names, their layers.

The margin of a piece whose grid (or micro-grid) must equal a compound goes, along the road, to a neighbouring
grid of the same community; micro-grids, grids, communities and streets are then dissolved from the faces, so
they share edges exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from demo.arrays import row_order
from demo.compounds import Compounds
from demo.district import DISTRICT_NAME, layer_frame
from demo.geometry import dissolve
from demo.parcels import Cores, Faces, GridPlan, Parcels
from demo.programme import DED_TYPES, NORMAL
from demo.streets_and_communities import Jurisdictions
from demo.vocabulary import BUREAUS, CN_NUM, INDUSTRY, PLACE_A

log = logging.getLogger(__name__)

_GRID_ROW_M = 200.0  # row height when numbering grids west->east, north->south


@dataclass
class Partition:
    """The partition layers' geometry (metres, around (0, 0)), indexed like their plans, and the whole district."""

    micro: np.ndarray
    grids: np.ndarray
    communities: np.ndarray
    streets: np.ndarray
    district: shapely.Geometry


def hand_over_margins(faces: Faces, parcels: Parcels, cores: Cores, comp: Compounds) -> tuple[np.ndarray, Compounds]:
    """Give each margin face of an exact piece (grid = compound, micro-grid = compound) to a neighbouring piece.

    A micro-exact piece's margin stays in its grid; where it cannot, the piece is no longer micro-exact (the
    returned compounds say so).  An exact piece's margin goes to a comprehensive piece of the same community, else
    any of the community, else the nearest.  Returns the parcel whose micro-grid holds each face."""
    mi = np.flatnonzero(faces.margin)
    mg = faces.geom[mi]
    own = faces.parcel[mi]
    tree = shapely.STRtree(mg)
    a, b = tree.query(mg, predicate="intersects")
    keep = a < b
    a, b = a[keep], b[keep]
    shared = shapely.length(shapely.intersection(mg[a], mg[b]))
    keep = shared > 0.5
    src = np.r_[a[keep], b[keep]]
    dst = np.r_[b[keep], a[keep]]
    mexact, absorbs = comp.parcel_micro_exact.copy(), comp.parcel_absorbs.copy()
    recv = np.where(absorbs[own], own, -1)
    grid, comm = parcels.grid, parcels.comm

    def spread(target: np.ndarray, ok: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
        """Hand `target` faces on along shared edges, breadth-first, where `ok`; lowest receiving parcel wins."""
        while True:
            lab = recv[src]
            m = (lab >= 0) & (recv[dst] < 0) & target[dst]
            if not m.any():
                return
            d, lab = dst[m], lab[m]
            good = ok(lab, d)
            d, lab = d[good], lab[good]
            if not len(d):
                return
            o = np.lexsort((lab, d))
            d, lab = d[o], lab[o]
            f = np.r_[True, d[1:] != d[:-1]]
            recv[d[f]] = lab[f]

    t1 = mexact[own]
    spread(t1, lambda lab, d: grid[lab] == grid[own[d]])
    lost = t1 & (recv < 0)
    if lost.any():
        bad = np.unique(own[lost])
        mexact[bad] = False
        absorbs[bad] = True
        sel = np.isin(own, bad)
        recv[sel] = own[sel]
    t2 = comp.parcel_exact[own]
    comp_abs = absorbs & (parcels.kind <= NORMAL)
    spread(t2, lambda lab, d: (comm[lab] == comm[own[d]]) & comp_abs[lab])
    spread(t2, lambda lab, d: comm[lab] == comm[own[d]])
    left = np.flatnonzero(recv < 0)
    log.debug("micro-exact reverted %d, margin fallback %d", int(lost.sum()), len(left))
    if len(left):
        cand = np.flatnonzero(absorbs)
        df = pd.DataFrame({"f": left, "c": comm[own[left]]}).merge(
            pd.DataFrame({"p": cand, "c": comm[cand], "comp": comp_abs[cand]}), on="c"
        )
        dist = shapely.distance(mg[df["f"].to_numpy()], cores.core[df["p"].to_numpy()])
        df["d"] = np.where(df["comp"].to_numpy(), dist, dist + 1e6)
        best = df.sort_values(["f", "d", "p"], kind="stable").drop_duplicates("f")
        recv[best["f"].to_numpy()] = best["p"].to_numpy()
        still = recv < 0
        recv[still] = own[still]
    owner = faces.parcel.copy()
    owner[mi] = recv
    return owner, replace(comp, parcel_micro_exact=mexact, parcel_absorbs=absorbs)


def dissolve_partitions(
    faces: Faces, owner: np.ndarray, parcels: Parcels, plan: GridPlan, jur: Jurisdictions
) -> Partition:
    """Micro-grids from their faces, grids from micro-grids, communities from grids, streets from communities."""
    micro = dissolve(faces.geom, parcels.micro[owner], plan.n_micro)
    grids = dissolve(micro, plan.micro_grid, plan.n_grids)
    communities = dissolve(grids, plan.comm, jur.n_comm)
    streets = dissolve(communities, jur.comm_street, jur.n_streets)
    return Partition(micro, grids, communities, streets, shapely.coverage_union_all(streets))


def number_grids(plan: GridPlan, grid_geom: np.ndarray, comm_code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid sequence within the community (north→south in 200 m rows, then west→east) and code (community + 3)."""
    gxy = shapely.get_coordinates(shapely.centroid(grid_geom))
    seq = row_order(plan.comm, gxy[:, 0], gxy[:, 1], _GRID_ROW_M) + 1
    return seq, _child_codes(comm_code[plan.comm], seq, 3)


def number_micro_grids(
    plan: GridPlan, micro_geom: np.ndarray, grid_code: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Micro-grid sequence within the grid (80 m rows) and code (grid code + 2 digits)."""
    mxy = shapely.get_coordinates(shapely.centroid(micro_geom))
    seq = row_order(plan.micro_grid, mxy[:, 0], mxy[:, 1], 80.0) + 1
    return seq, _child_codes(grid_code[plan.micro_grid], seq, 2)


def _child_codes(parent: np.ndarray, seq: np.ndarray, digits: int) -> np.ndarray:
    """The parent's code followed by the sequence number, zero-padded."""
    return np.char.add(parent.astype(str), np.char.zfill(seq.astype(str), digits)).astype(object)


def grid_names(rng: np.random.Generator, plan: GridPlan, seq: np.ndarray, comm_name: np.ndarray) -> np.ndarray:
    """'<community>第k网格' for comprehensive grids, '<site>专属网格' for dedicated ones (sites named by type)."""
    short = np.array([x[:-2] for x in comm_name], dtype=object)[plan.comm]
    name = (short + "第" + seq.astype(str).astype(object) + "网格").astype(object)
    dg = np.flatnonzero(~plan.comprehensive)
    name[dg] = _site_names(rng, plan.dedicated[dg]) + "专属网格"
    return name


def _site_names(rng: np.random.Generator, dtype: np.ndarray) -> np.ndarray:
    """Names of dedicated sites by type: schools, hospitals, companies, parks, offices."""
    n = len(dtype)
    p = np.array(PLACE_A, dtype=object)[rng.integers(0, len(PLACE_A), n)]
    k = rng.integers(1, 20, n)
    x = rng.random(n)
    cn = np.array(CN_NUM, dtype=object)[np.minimum(k, 20)]
    industry = np.array(INDUSTRY, dtype=object)[k % len(INDUSTRY)]
    bureau = np.array(BUREAUS, dtype=object)[k % len(BUREAUS)]
    school = np.where(x < 0.45, p + "小学", np.where(x < 0.8, "岳阳市第" + cn + "中学", p + "幼儿园"))
    hospital = np.where(
        x < 0.5, p + "社区卫生服务中心", np.where(x < 0.8, "岳阳市第" + cn + "人民医院", "岳阳" + p + "医院")
    )
    company = "岳阳" + p + industry + "有限公司"
    park = np.where(x < 0.7, p + "公园", p + "湿地公园")
    office = np.where(x < 0.5, DISTRICT_NAME + bureau, p + "街道便民服务中心")
    return np.select([dtype == 0, dtype == 1, dtype == 2, dtype == 3], [school, hospital, company, park], office)


def grids_frame(
    plan: GridPlan, code: np.ndarray, name: np.ndarray, comm_code: np.ndarray, geom: np.ndarray
) -> gpd.GeoDataFrame:
    """The grids layer by code: comprehensive or dedicated (with its type)."""
    kind = np.where(plan.comprehensive, "comprehensive", "dedicated").astype(object)
    dtyp = np.full(plan.n_grids, None, dtype=object)
    ded = (plan.dedicated >= 0) & ~plan.comprehensive
    dtyp[ded] = DED_TYPES[plan.dedicated[ded]]
    columns = {"code": code, "name": name, "kind": kind, "dedicated_type": dtyp, "community_code": comm_code[plan.comm]}
    return layer_frame(columns, geom, np.argsort(code, kind="stable"))


def micro_grids_frame(
    plan: GridPlan, code: np.ndarray, seq: np.ndarray, grid_code: np.ndarray, grid_name: np.ndarray, geom: np.ndarray
) -> gpd.GeoDataFrame:
    """The micro-grids layer by code, named '<grid>第k微网格'."""
    name = (grid_name[plan.micro_grid] + "第" + seq.astype(str).astype(object) + "微网格").astype(object)
    columns = {"code": code, "name": name, "grid_code": grid_code[plan.micro_grid]}
    return layer_frame(columns, geom, np.argsort(code, kind="stable"))
