"""The programme of a district: how many of everything a scale asks for, and the deck of units to place.

A unit is what one cut of a superblock (街区) becomes: a compound the size of a grid, a compound spanning 2-4
grids, a compound straddling two grids, a grid holding several compounds, or a dedicated site (专属网格).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Unit types; campus superblocks are a sixth kind of parcel, never a unit of the deck.
SAME, LARGER, STRAD, NORMAL, DED, CAMPUS = range(6)
#: Dedicated-site types, by index.
DED_TYPES = np.array(["school", "hospital", "company", "park", "office"], dtype=object)

# Seed 001 (Yueyang, Yueyanglou district) at scale 1.
SEED001_COMPOUNDS = 977
SEED001_SAME = 247
SEED001_GRIDS = 675
_INCIDENTS_PER_YEAR = 12000
_STREETS_AT_SCALE_1 = 9

_INBLOCK_DED = 0.4  # dedicated sites inside residential superblocks per residential unit
_LARGER_SHARE = 0.055  # compounds spanning 2-4 grids
_STRAD_SHARE = 0.035  # compounds straddling two grids
_INBLOCK_DED_P = [0.32, 0.10, 0.20, 0.16, 0.22]
_DED_MEDIAN = np.array([70e3, 80e3, 120e3, 100e3, 30e3])
_DED_SIGMA = np.array([0.5, 0.6, 0.6, 0.7, 0.4])


@dataclass(frozen=True)
class Targets:
    """What a scale asks for: counts grow linearly with it (scale 1 is seed 001's district)."""

    scale: float
    n_compounds: int
    n_grids: int
    n_streets: int
    n_incidents: int


def targets(scale: float) -> Targets:
    """The counts for `scale` (a positive finite number)."""
    if not (isinstance(scale, (int, float, np.integer, np.floating)) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    return Targets(
        scale=float(scale),
        n_compounds=max(8, round(SEED001_COMPOUNDS * scale)),
        n_grids=max(6, round(SEED001_GRIDS * scale)),
        n_streets=max(2, round(_STREETS_AT_SCALE_1 * scale)),
        n_incidents=max(20, round(_INCIDENTS_PER_YEAR * scale)),
    )


@dataclass
class Units:
    """The deck: one row per unit, in the order the superblocks take them."""

    kind: np.ndarray  # SAME … DED
    pieces: np.ndarray  # grid-level pieces the unit is cut into
    dedicated: np.ndarray  # dedicated type of a DED unit, else -1
    area: np.ndarray  # nominal area, m²
    n_grids: np.ndarray  # grids the unit makes (0 for a dedicated site: its superblock's campus grid holds it)
    n_small: int  # compounds to find inside grids that hold several
    cell: np.ndarray  # superblock of each unit (empty until dealt)


def draw_units(rng: np.random.Generator, t: Targets) -> Units:
    """Draw the deck of units for the targets, shuffled."""
    n_c, n_g = t.n_compounds, t.n_grids
    n_same = max(1, round(n_c * SEED001_SAME / SEED001_COMPOUNDS))
    n_larger = max(1, round(_LARGER_SHARE * n_c))
    n_strad = max(2, round(_STRAD_SHARE * n_c))
    m = rng.choice(np.array([2, 3, 4]), n_larger, p=[0.5, 0.35, 0.15])
    n_normal = n_g - n_same - int(m.sum()) - 2 * n_strad
    if n_normal < 2:
        n_same = max(1, n_same + n_normal - 2)
        n_normal = max(2, n_g - n_same - int(m.sum()) - 2 * n_strad)
    c_small = max(0, n_c - n_same - n_larger - n_strad)
    mean_k = float(np.clip((c_small / 0.95 - 2 * n_strad) / n_normal, 2.0, 4.0))
    k = int(mean_k) + (rng.random(n_normal) < mean_k - int(mean_k))
    n_res = n_same + n_larger + n_strad + n_normal
    n_ded = max(1, round(_INBLOCK_DED * n_res))
    dtyp = rng.choice(5, n_ded, p=_INBLOCK_DED_P)
    utype = np.repeat([SAME, LARGER, STRAD, NORMAL, DED], [n_same, n_larger, n_strad, n_normal, n_ded])
    pieces = np.concatenate([np.ones(n_same), m, np.full(n_strad, 4), k, np.ones(n_ded)]).astype(np.int64)
    dtype = np.concatenate([np.full(n_res, -1), dtyp]).astype(np.int64)
    area = np.concatenate(
        [
            42e3 * rng.lognormal(0, 0.3, n_same),
            m * 48e3 * rng.lognormal(0, 0.15, n_larger),
            4 * 32e3 * rng.lognormal(0, 0.15, n_strad),
            k * 29e3 * rng.lognormal(0, 0.2, n_normal),
            _DED_MEDIAN[dtyp] * rng.lognormal(0, _DED_SIGMA[dtyp]),
        ]
    )
    perm = rng.permutation(len(utype))
    kind = utype[perm]
    pieces = pieces[perm]
    n_grids = np.select([kind == SAME, kind == LARGER, kind == STRAD, kind == NORMAL], [1, pieces, 2, 1], 0)
    return Units(
        kind=kind, pieces=pieces, dedicated=dtype[perm], area=area[perm], n_grids=n_grids, n_small=c_small,
        cell=np.zeros(0, dtype=np.int64),
    )
