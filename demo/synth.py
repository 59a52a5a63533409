"""Deterministic synthetic district (合成辖区) around Yueyang: streets down to units, staff and incidents.

`generate_district(scale, seed)` works in metres (UTM 49N) and returns every layer in EPSG:4326.

Geometry is an exact hierarchy of partitions: jittered, twisted Voronoi superblocks (街区, half a road
each side) are cut by binary space partition into units (a compound the size of a grid, a compound
spanning 2-4 grids, a grid holding several compounds, a dedicated site, ...), units into parcels and
parcels into micro pieces.  Every piece is split into its buildable core and its road margin; the margin
of a piece whose grid must equal a compound is handed, along the road, to a neighbouring grid of the
same community (属地兜底).  All pieces are noded once (snap-rounded to 1 cm) and polygonised, so
micro-grids, grids, communities and streets are coverage unions of the same faces and share edges
exactly.  Buildings are placed last, inside the cores, so no grid or micro-grid line cuts a footprint.

One random stream runs through the stages in a fixed order, so the same (scale, seed) gives the same bytes.
"""

from __future__ import annotations

import numpy as np

from demo.buildings_and_units import buildings_frame, number_buildings, place_buildings, units_frame
from demo.compounds import assign_roles, compounds_frame, draw_walls, number_compounds
from demo.district import CENTER_LONLAT, DISTRICT_CODE, DISTRICT_NAME, LAYERS, METRIC_EPSG, District
from demo.grids import (
    dissolve_partitions,
    grid_names,
    grids_frame,
    hand_over_margins,
    micro_grids_frame,
    number_grids,
    number_micro_grids,
)
from demo.incidents import INCIDENT_CLASSES, INCIDENT_PERIOD_END, IncidentClass, draw_incidents
from demo.parcels import cut_cores, node_faces, split_units
from demo.programme import draw_units, targets
from demo.staff import appoint_staff
from demo.streets_and_communities import (
    communities_frame,
    group_jurisdictions,
    number_communities,
    number_streets,
    streets_frame,
)
from demo.superblocks import cluster_campuses, deal_units, lay_superblocks

__all__ = [
    "District",
    "generate_district",
    "IncidentClass",
    "INCIDENT_CLASSES",
    "DISTRICT_CODE",
    "DISTRICT_NAME",
    "CENTER_LONLAT",
    "METRIC_EPSG",
    "INCIDENT_PERIOD_END",
    "LAYERS",
]


def generate_district(scale: float = 1.0, seed: int = 0) -> District:
    """Build the synthetic Yueyang district: counts scale linearly with `scale`, same (scale, seed) → same bytes."""
    t = targets(scale)
    rng = np.random.default_rng(seed)
    # the programme, superblocks, communities and streets
    units = draw_units(rng, t)
    sb, u_cell = lay_superblocks(rng, units)
    units = deal_units(units, u_cell, sb)
    blocks = cluster_campuses(rng, sb)
    jur = group_jurisdictions(rng, sb, blocks, units, t.n_streets)
    # parcels, compounds' roles, the faces and every partition made of them
    parcels, plan, cell_cut = split_units(rng, units, sb, blocks, jur)
    cores = cut_cores(rng, sb, cell_cut, parcels)
    comp = assign_roles(rng, units, sb, parcels, plan, cores)
    faces = node_faces(cores)
    owner, comp = hand_over_margins(faces, parcels, cores, comp)
    part = dissolve_partitions(faces, owner, parcels, plan, jur)
    # what stands on the land
    walls = draw_walls(rng, comp, parcels, cores, faces, plan.n_micro)
    buildings = place_buildings(rng, parcels, plan, cores, comp, walls)
    # codes and names
    street_code, street_name = number_streets(rng, part.streets)
    comm_code, comm_name = number_communities(rng, part.communities, jur.comm_street, street_code)
    grid_seq, grid_code = number_grids(plan, part.grids, comm_code)
    micro_seq, micro_code = number_micro_grids(plan, part.micro, grid_code)
    comp_ref, comp_name = number_compounds(rng, comp, walls, comm_code)
    b_codes = number_buildings(buildings, parcels, comp, comp_ref, micro_code, comm_code)
    # people and events
    staff = appoint_staff(rng, plan, grid_code, micro_code, buildings, b_codes.ref, parcels.grid)
    incidents = draw_incidents(rng, t, part, buildings, staff.grid_chief_name)
    # the layers (site names and compound committees still draw from the stream, in this order)
    grid_name = grid_names(rng, plan, grid_seq, comm_name)
    compounds = compounds_frame(rng, comp, parcels, comp_ref, comp_name, walls, comm_code)
    comp_address = compounds.set_index("ref")["address"].reindex(comp_ref).to_numpy(dtype=object)  # by compound
    return District(
        streets=streets_frame(street_code, street_name, part.streets),
        communities=communities_frame(comm_code, comm_name, street_code[jur.comm_street], part.communities),
        grids=grids_frame(plan, grid_code, grid_name, comm_code, part.grids),
        micro_grids=micro_grids_frame(plan, micro_code, micro_seq, grid_code, grid_name, part.micro),
        compounds=compounds,
        buildings=buildings_frame(buildings, b_codes, parcels, comp, comp_ref, comm_code, comp_address),
        units=units_frame(buildings, b_codes.ref),
        people=staff.people,
        assignments=staff.assignments,
        incidents=incidents,
    )
