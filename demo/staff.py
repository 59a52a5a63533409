"""Staff (网格员队伍): grid chiefs, full- and part-time grid workers, seconded cadres, volunteers, building and unit
heads, stewards (管家); the people and their assignments, with deliberate gaps and overloads; person names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from demo.buildings_and_units import Buildings
from demo.parcels import GridPlan
from demo.vocabulary import GIVEN, SURNAMES

log = logging.getLogger(__name__)

_GAP = 0.05  # deliberate staffing gaps


@dataclass
class Staff:
    """The people and assignments layers (rows by person ref), and the name of each grid's chief."""

    people: pd.DataFrame
    assignments: pd.DataFrame
    grid_chief_name: np.ndarray


def person_names(rng: np.random.Generator, n: int) -> np.ndarray:
    """n Chinese names: a surname (common ones likelier) and one or two given-name characters."""
    sur = np.array(list(SURNAMES), dtype=object)
    giv = np.array(list(GIVEN), dtype=object)
    w = 1.0 / (np.arange(len(sur)) + 6.0)
    s = sur[rng.choice(len(sur), n, p=w / w.sum())]
    g1 = giv[rng.integers(0, len(giv), n)]
    g2 = np.where(rng.random(n) < 0.72, giv[rng.integers(0, len(giv), n)], "")
    return (s + g1 + g2).astype(object)


class _Roster:
    """Assignment rows collected role by role; each role's person keys are local until numbered."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.rows: list[dict[str, np.ndarray]] = []

    def add(
        self,
        role: str,
        n: int,
        target_type: str,
        code: np.ndarray | None = None,
        bref: np.ndarray | None = None,
        unit: np.ndarray | None = None,
        hh: np.ndarray | None = None,
        home: np.ndarray | None = None,
        party: float = 0.3,
        public: float = 0.5,
        person: np.ndarray | None = None,
    ) -> int:
        """Add n assignments of a role (party membership and public phone drawn with the given odds); its index."""
        rng = self.rng

        def given(x: np.ndarray | None) -> np.ndarray:
            """The column, or -1 throughout."""
            return np.full(n, -1) if x is None else np.asarray(x)

        self.rows.append(
            {
                "role": np.full(n, role, dtype=object),
                "target_type": np.full(n, target_type, dtype=object),
                "target_code": np.full(n, None, dtype=object) if code is None else np.asarray(code, dtype=object),
                "bref": given(bref),
                "unit": given(unit),
                "hh": given(hh),
                "home": given(home),
                "party": rng.random(n) < party,
                "public": rng.random(n) < public,
                "person": given(person),
            }
        )
        return len(self.rows) - 1


def appoint_staff(
    rng: np.random.Generator, plan: GridPlan, grid_code: np.ndarray, micro_code: np.ndarray, b: Buildings,
    b_ref: np.ndarray, par_grid: np.ndarray,
) -> Staff:
    """Staff every grid, micro-grid, residential building and unit, leaving a few gaps; stewards take 5-15
    households each over consecutive units of one grid, a few more or fewer."""
    ng = plan.n_grids
    go = np.argsort(grid_code, kind="stable")
    comp = plan.comprehensive
    nres = b.n_res
    b_ref = b_ref[:nres]
    b_grid = par_grid[b.lot[:nres]]
    # residential buildings per grid, for homes of grid staff
    rb = np.argsort(b_grid, kind="stable")
    rb_cnt = np.bincount(b_grid, minlength=ng)
    rb_start = np.r_[0, np.cumsum(rb_cnt)[:-1]]

    def home_in(grid_idx: np.ndarray, p: float) -> np.ndarray:
        """With odds p, a residential building of each grid as home (its ref); else -1."""
        grid_idx = np.asarray(grid_idx, dtype=np.int64)
        cnt = rb_cnt[grid_idx]
        has = (cnt > 0) & (rng.random(len(grid_idx)) < p)
        at = rb_start[grid_idx] + np.floor(rng.random(len(grid_idx)) * np.maximum(cnt, 1)).astype(np.int64)
        ref = np.full(len(grid_idx), -1, dtype=np.int64)
        ref[has] = b_ref[rb[at[has]]]
        return ref

    roster = _Roster(rng)
    add = roster.add
    # grid chief: one per grid; a community cadre sometimes leads two neighbouring grids
    reuse = comp[go] & (rng.random(ng) < 0.12)
    reuse[np.r_[True, plan.comm[go][1:] != plan.comm[go][:-1]]] = False
    log.debug("chiefs of two grids %d", int(reuse.sum()))
    chief_key = np.cumsum(~reuse) - 1
    chief_rows = add("grid_chief", ng, "grid", code=grid_code[go], home=home_in(go, 0.5), party=0.8, public=0.97,
                     person=chief_key)
    cgo = go[np.flatnonzero(comp[go])]
    ft = cgo[rng.random(len(cgo)) >= _GAP]
    add("grid_worker_fulltime", len(ft), "grid", code=grid_code[ft], home=home_in(ft, 0.5), party=0.5, public=0.97)
    npt = rng.choice(4, len(cgo), p=[0.06, 0.14, 0.35, 0.45])
    pt = np.repeat(cgo, npt)
    add("grid_worker_parttime", len(pt), "grid", code=grid_code[pt], home=home_in(pt, 0.6), party=0.3, public=0.8)
    nsc = rng.choice(3, len(cgo), p=[0.35, 0.45, 0.2])
    sc = np.repeat(cgo, nsc)
    add("seconded_cadre", len(sc), "grid", code=grid_code[sc], party=0.9, public=0.5)
    mo = np.argsort(micro_code, kind="stable")
    mo = mo[comp[plan.micro_grid[mo]]]
    nv = rng.choice([1, 2, 3], len(mo), p=[0.5, 0.35, 0.15])
    vol = np.repeat(mo, nv)
    add("volunteer", len(vol), "micro_grid", code=micro_code[vol], home=home_in(plan.micro_grid[vol], 0.8),
        party=0.35, public=0.2)
    # building heads, unit heads
    border = np.argsort(b_ref, kind="stable")
    bh = border[rng.random(nres) >= _GAP]
    bh_rows = add("building_head", len(bh), "building", bref=b_ref[bh], home=b_ref[bh], party=0.4, public=0.6)
    un_ref = b_ref[b.unit_building]
    uo = np.lexsort((b.unit_number, un_ref))
    uh = uo[rng.random(len(uo)) >= _GAP]
    log.debug("gaps: full-time %d, building heads %d, unit heads %d", len(cgo) - len(ft), nres - len(bh),
              len(uo) - len(uh))
    uh_rows = add("unit_head", len(uh), "unit", bref=un_ref[uh], unit=b.unit_number[uh], home=un_ref[uh], party=0.3,
                  public=0.4)
    st_id, unit_rows, ov, st_home = _stewards(rng, plan, b, b_grid, un_ref)
    st_rows = add("steward", len(st_id), "unit", bref=un_ref[unit_rows], unit=b.unit_number[unit_rows], hh=ov,
                  home=st_home[st_id], party=0.5, public=0.5, person=st_id)
    rows = roster.rows
    # people: one per row, except chiefs reused across grids, stewards across units, and unit heads of
    # unit 1 who are often their building's head
    offs = 0
    for i, r in enumerate(rows):
        n = len(r["role"])
        if i in (chief_rows, st_rows):
            r["pid"] = offs + r["person"]
            offs += int(r["person"].max() + 1) if n else 0
        else:
            r["pid"] = offs + np.arange(n)
            offs += n
    bhr, uhr = rows[bh_rows], rows[uh_rows]
    same_person = (uhr["unit"] == 1) & (rng.random(len(uhr["unit"])) < 0.3)
    cand_pid = _lookup(bhr["bref"], bhr["pid"], uhr["bref"])
    same_person &= cand_pid >= 0
    uhr["pid"] = np.where(same_person, cand_pid, uhr["pid"])
    a = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    used, pinv = np.unique(a["pid"], return_inverse=True)
    npeople = len(used)
    first_row = np.full(npeople, -1, dtype=np.int64)
    first_row[pinv[::-1]] = np.arange(len(pinv))[::-1]
    names = person_names(rng, npeople)
    tails = rng.choice(10**9, npeople, replace=False)
    pre = np.array(["13", "15", "18"], dtype=object)[rng.choice(3, npeople, p=[0.45, 0.3, 0.25])]
    phone = pre + np.char.zfill(tails.astype(str), 9).astype(object)
    home = a["home"][first_row]
    people = pd.DataFrame(
        {
            "ref": np.arange(1, npeople + 1),
            "name": names,
            "phone": phone,
            "phone_public": a["public"][first_row],
            "party_member": a["party"][first_row],
            "home_building_ref": _nullable(home),
        }
    )
    days = (np.datetime64("2026-10-15") - np.datetime64("2021-03-01")).astype(int)
    vf = np.datetime64("2021-03-01") + rng.integers(0, days, len(pinv)).astype("timedelta64[D]")
    asg = pd.DataFrame(
        {
            "person_ref": pinv + 1,
            "role": a["role"],
            "target_type": a["target_type"],
            "target_code": a["target_code"],
            "target_building_ref": _nullable(a["bref"]),
            "target_unit_number": _nullable(a["unit"]),
            "households": _nullable(a["hh"]),
            "valid_from": vf.astype(object),
        }
    )
    chief_name = np.full(ng, "", dtype=object)
    chief_name[go] = names[np.searchsorted(used, rows[chief_rows]["pid"])]
    return Staff(
        people=people,
        assignments=asg.sort_values(["person_ref"], kind="stable").reset_index(drop=True),
        grid_chief_name=chief_name,
    )


def _stewards(
    rng: np.random.Generator, plan: GridPlan, b: Buildings, b_grid: np.ndarray, un_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stewards (管家): 5-15 households each over consecutive units of one grid (by building ref, unit number);
    some gaps, some overloads.

    Returns per assignment the steward, the unit row and the households it covers; per steward the ref of his home
    building (that of his first unit)."""
    ng = plan.n_grids
    u_grid = b_grid[b.unit_building]
    so = np.lexsort((b.unit_number, un_ref, u_grid))
    covered = rng.random(len(so)) >= _GAP
    hh_c = np.where(covered, b.unit_households[so], 0)
    log.debug("units without steward %d", int((~covered).sum()))
    ug = u_grid[so]
    uend = np.cumsum(hh_c)
    ustart = uend - hh_c
    gtot = np.bincount(ug, weights=hh_c, minlength=ng).astype(np.int64)
    goff = np.r_[0, np.cumsum(gtot)[:-1]]
    ndraw = np.where(gtot > 0, gtot // 5 + 3, 0)
    sg = np.repeat(np.arange(ng), ndraw)
    load = rng.integers(6, 15, len(sg))
    dev = rng.random(len(sg))
    load = np.where(
        dev < 0.02, rng.integers(16, 23, len(sg)), np.where(dev < 0.04, rng.integers(2, 5, len(sg)), load)
    )
    cs = np.cumsum(load)
    first = np.r_[0, np.cumsum(ndraw)[:-1]]
    gcum = cs - np.repeat(np.r_[0, cs][first], ndraw)
    s_start = gcum - load
    live = s_start < gtot[sg]
    sg, s_start, s_end = sg[live], s_start[live], np.minimum(gcum[live], gtot[sg[live]])
    # a short last steward hands his households to the previous one when that stays within 15
    last = np.r_[sg[1:] != sg[:-1], True]
    short = last & (s_end - s_start < 5)
    prev = np.flatnonzero(short) - 1
    can = (prev >= 0) & (sg[np.maximum(prev, 0)] == sg[short]) & (s_end[short] - s_start[np.maximum(prev, 0)] <= 15)
    merge_i = np.flatnonzero(short)[can]
    s_end[merge_i - 1] = s_end[merge_i]
    keep = np.ones(len(sg), bool)
    keep[merge_i] = False
    sg, s_start, s_end = sg[keep], s_start[keep], s_end[keep]
    gs, ge = goff[sg] + s_start, goff[sg] + s_end
    fu = np.searchsorted(uend, gs, side="right")
    lu = np.searchsorted(ustart, ge, side="left") - 1
    nper = np.maximum(lu - fu + 1, 0)
    st_id = np.repeat(np.arange(len(sg)), nper)
    ui = np.repeat(fu, nper) + (np.arange(nper.sum()) - np.repeat(np.cumsum(nper) - nper, nper))
    ov = np.minimum(ge[st_id], uend[ui]) - np.maximum(gs[st_id], ustart[ui])
    ok = ov > 0
    st_id, ui, ov = st_id[ok], ui[ok], ov[ok]
    unit_rows = so[ui]
    st_home = np.full(len(sg), -1)
    fidx = np.unique(st_id, return_index=True)[1]
    st_home[st_id[fidx]] = un_ref[unit_rows[fidx]]
    return st_id, unit_rows, ov, st_home


def _lookup(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[i] where keys[i] == q for each q of query (keys unique), -1 where absent."""
    order = np.argsort(keys, kind="stable")
    sk, sv = keys[order], values[order]
    at = np.searchsorted(sk, query)
    found = at < len(sk)
    found[found] = sk[at[found]] == query[found]
    out = np.full(len(query), -1, dtype=np.int64)
    out[found] = sv[at[found]]
    return out


def _nullable(x: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Integers as a nullable Int64 array, NA where negative."""
    s = pd.array(np.where(x >= 0, x, 0), dtype="Int64")
    s[x < 0] = pd.NA
    return s
