"""Bulk writes and reads of whole layers: loading a district, reading a layer at a boundary version."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from sqlalchemy import Connection, Engine, text

from geo.errors import DomainError
from geo.spatial.crs import STORAGE_SRID
from geo.spatial.geometry import as_multipolygons, ewkb_hex, require_valid
from geo.store.versions import at_or_now

#: Administrative levels with versioned boundaries, from large to small.
LEVELS = ("streets", "communities", "grids", "micro_grids")
BOUNDARY_TABLES = {
    "streets": ("street_boundaries", "street_id"),
    "communities": ("community_boundaries", "community_id"),
    "grids": ("grid_boundaries", "grid_id"),
    "micro_grids": ("micro_grid_boundaries", "micro_grid_id"),
}


class StoreError(DomainError, RuntimeError):
    """A write the store refuses (nothing was written)."""

    slug = "store-refused"
    kind = "conflict"


class InvalidDate(DomainError, ValueError):
    """A date or datetime that cannot be read (the caller's input)."""

    slug = "validation-error"
    title = "Invalid request"


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Stream rows into a table with COPY (the fastest bulk path); None becomes NULL."""
    cols = ", ".join(columns)
    raw = conn.connection.driver_connection
    if raw is None:  # only a connection that was closed underneath has no driver connection
        raise RuntimeError("the connection has no driver connection to COPY through")
    with raw.cursor().copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _nullable(series: pd.Series) -> list:
    """Values with pandas' missing markers turned into None, numpy scalars into Python ones."""
    return [None if v is None or (not isinstance(v, str) and pd.isna(v)) else (v.item() if hasattr(v, "item") else v)
            for v in series.tolist()]


def _columns(df: pd.DataFrame, names: Sequence[str]) -> list[list]:
    return [_nullable(df[n]) if n in df.columns else [None] * len(df) for n in names]


def database_is_empty(engine: Engine) -> bool:
    """True when no street, compound or building is stored yet."""
    with engine.connect() as conn:
        return not conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM streets) OR EXISTS (SELECT 1 FROM buildings)")
        ).scalar()


def create_version(conn: Connection, valid_from: dt.datetime, label: str, created_by: str | None = None) -> int:
    """Insert a boundary version and return its id."""
    return conn.execute(
        text(
            "INSERT INTO boundary_versions (valid_from, label, created_by) VALUES (:f, :l, :b) RETURNING id"
        ),
        {"f": valid_from, "l": label, "b": created_by},
    ).scalar_one()


def _reset_sequences(conn: Connection, tables: Iterable[str]) -> None:
    for t in tables:
        conn.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), coalesce((SELECT max(id) FROM {t}), 0) + 1, "
                 "false)")
        )


def _insert_level(conn: Connection, level: str, ident: pd.DataFrame, gdf: gpd.GeoDataFrame,
                  extra_cols: Sequence[str], version_id: int, valid_from: dt.datetime) -> None:
    geoms = as_multipolygons(gdf.geometry.to_crs(STORAGE_SRID).values)
    require_valid(geoms, f"{level} boundaries")
    cols = ["id", "code", "name", *extra_cols]
    copy_rows(conn, level, cols, zip(*_columns(ident, cols), strict=True))
    table, fk = BOUNDARY_TABLES[level]
    copy_rows(
        conn, table, ["id", fk, "version_id", "valid_from", "geom"],
        zip(ident["id"].tolist(), ident["id"].tolist(), [version_id] * len(ident), [valid_from] * len(ident),
            ewkb_hex(geoms).tolist(), strict=True),
    )


def load_district(engine: Engine, district, valid_from: dt.datetime | None = None,
                  label: str = "初始版本 (演示区)") -> dict[str, int]:
    """Write a generated district (demo.synth.District) into an empty database in one transaction."""
    if not database_is_empty(engine):
        raise StoreError("the database already holds a district; load into an empty database")
    valid_from = valid_from or dt.datetime(2025, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    streets = district.streets.reset_index(drop=True).assign(id=lambda d: np.arange(1, len(d) + 1))
    street_id = dict(zip(streets["code"], streets["id"], strict=True))
    communities = district.communities.reset_index(drop=True).assign(id=lambda d: np.arange(1, len(d) + 1))
    communities["street_id"] = communities["street_code"].map(street_id)
    community_id = dict(zip(communities["code"], communities["id"], strict=True))
    grids = district.grids.reset_index(drop=True).assign(id=lambda d: np.arange(1, len(d) + 1))
    grids["community_id"] = grids["community_code"].map(community_id)
    grid_id = dict(zip(grids["code"], grids["id"], strict=True))
    micro = district.micro_grids.reset_index(drop=True).assign(id=lambda d: np.arange(1, len(d) + 1))
    micro["grid_id"] = micro["grid_code"].map(grid_id)
    micro_id = dict(zip(micro["code"], micro["id"], strict=True))
    for name, df, col in (("communities", communities, "street_id"), ("grids", grids, "community_id"),
                          ("micro-grids", micro, "grid_id")):
        if df[col].isna().any():
            raise StoreError(f"{int(df[col].isna().sum())} {name} name a parent code that does not exist")

    compounds = district.compounds.reset_index(drop=True).assign(id=lambda d: d["ref"].astype(int))
    compounds["community_id"] = compounds["community_code"].map(community_id)
    buildings = district.buildings.reset_index(drop=True).assign(id=lambda d: d["ref"].astype(int))
    buildings["community_id"] = buildings["community_code"].map(community_id)
    buildings["compound_id"] = buildings["compound_ref"]
    units = district.units.reset_index(drop=True).assign(id=lambda d: np.arange(1, len(d) + 1))
    unit_id = units.set_index(["building_ref", "number"])["id"]
    people = district.people.reset_index(drop=True).assign(id=lambda d: d["ref"].astype(int))

    a = district.assignments.reset_index(drop=True).copy()
    a["grid_id"] = a["target_code"].where(a["target_type"] == "grid").map(grid_id)
    a["micro_grid_id"] = a["target_code"].where(a["target_type"] == "micro_grid").map(micro_id)
    a["building_id"] = a["target_building_ref"].where(a["target_type"] == "building")
    keys = pd.MultiIndex.from_arrays([a["target_building_ref"].fillna(-1).astype(int),
                                      a["target_unit_number"].fillna(-1).astype(int)])
    a["unit_id"] = pd.Series(unit_id.reindex(keys).to_numpy(), index=a.index).where(a["target_type"] == "unit")
    a["person_id"] = a["person_ref"]
    for col in ("grid_id", "micro_grid_id", "building_id", "unit_id", "person_id", "households"):
        a[col] = a[col].astype("Int64")  # mapping through NaN makes floats; ids must stay integers
    a = a.assign(id=np.arange(1, len(a) + 1))

    incidents = district.incidents.reset_index(drop=True).assign(id=lambda d: d["ref"].astype(int))

    with engine.begin() as conn:
        version_id = create_version(conn, valid_from, label, "gridatlas demo")
        _insert_level(conn, "streets", streets, district.streets, [], version_id, valid_from)
        _insert_level(conn, "communities", communities, district.communities, ["street_id"], version_id, valid_from)
        _insert_level(conn, "grids", grids, district.grids, ["kind", "dedicated_type", "community_id"],
                      version_id, valid_from)
        _insert_level(conn, "micro_grids", micro, district.micro_grids, ["grid_id"], version_id, valid_from)
        for table, df, cols in (
            ("compounds", compounds, ["id", "name", "kind", "has_property_management", "has_owners_committee",
                                      "community_id", "address"]),
            ("buildings", buildings, ["id", "code", "name", "community_id", "compound_id", "floors", "use",
                                      "address"]),
        ):
            geoms = as_multipolygons(df.geometry.to_crs(STORAGE_SRID).values)
            require_valid(geoms, table)
            copy_rows(conn, table, [*cols, "geom"], zip(*_columns(df, cols), ewkb_hex(geoms).tolist(), strict=True))
        units["building_id"] = units["building_ref"]
        copy_rows(conn, "units", ["id", "building_id", "number", "households", "population"],
                  zip(*_columns(units, ["id", "building_id", "number", "households", "population"]), strict=True))
        people["home_building_id"] = people["home_building_ref"]
        pcols = ["id", "name", "phone", "phone_public", "party_member", "home_building_id"]
        copy_rows(conn, "people", pcols, zip(*_columns(people, pcols), strict=True))
        acols = ["id", "person_id", "role", "target_type", "grid_id", "micro_grid_id", "building_id", "unit_id",
                 "households", "valid_from"]
        copy_rows(conn, "staff_assignments", acols, zip(*_columns(a, acols), strict=True))
        icols = ["id", "reported_at", "class_code", "source", "state", "description", "reporter", "department",
                 "due_at", "closed_at"]
        pts = shapely.points(shapely.get_coordinates(incidents.geometry.to_crs(STORAGE_SRID).values))
        copy_rows(conn, "incidents", [*icols, "geom"],
                  zip(*_columns(incidents, icols), ewkb_hex(pts).tolist(), strict=True))
        _reset_sequences(conn, ["streets", "communities", "grids", "micro_grids",
                                *[t for t, _ in BOUNDARY_TABLES.values()], "compounds", "buildings", "units", "people",
                                "staff_assignments", "incidents"])
        from geo.incidents.attribution import attribute_incidents

        attribute_incidents(conn)
    for t in ("buildings", "compounds", "units", "incidents", "grid_boundaries", "micro_grid_boundaries",
              "staff_assignments", "people"):
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(f"ANALYZE {t}"))
    return district.counts()


def parse_at(at: str | dt.date | dt.datetime | None, tz: str = "Asia/Shanghai") -> dt.datetime | None:
    """A date or datetime (string or object) as an aware datetime; a bare date means the end of that local day.

    InvalidDate (a ValueError; 422 validation-error over HTTP) when a string is neither."""
    from zoneinfo import ZoneInfo

    if at is None or at == "":
        return None
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at) if ("T" in at or " " in at) else dt.date.fromisoformat(at)
        except ValueError as exc:
            raise InvalidDate(f"'{at}' is not a date (YYYY-MM-DD) or an ISO datetime") from exc
    if isinstance(at, dt.datetime):
        return at if at.tzinfo else at.replace(tzinfo=ZoneInfo(tz))
    # The boundaries "in force on a date" are those at the close of that day, so a redraw that day counts.
    return dt.datetime.combine(at, dt.time.max, tzinfo=ZoneInfo(tz))


def read_level(conn: Connection, level: str, at: dt.datetime | None = None, where: str = "",
               params: dict | None = None) -> gpd.GeoDataFrame:
    """A level's units and boundaries in force at `at` (now when None) as a GeoDataFrame in EPSG:4326."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
    sql = f"SELECT * FROM {level}_at({at_or_now()}) {where} ORDER BY code"
    return gpd.read_postgis(text(sql), conn, geom_col="geom", params={"at": at, **(params or {})})


def version_at(conn: Connection, at: dt.datetime | None = None) -> dict | None:
    """The boundary version in force at `at` (now when None)."""
    # a version is in force from its valid_from until the next one starts: the latest that has started
    row = conn.execute(
        text(f"SELECT id, valid_from, label FROM boundary_versions WHERE valid_from <= {at_or_now()} "
             "ORDER BY valid_from DESC LIMIT 1"),
        {"at": at},
    ).mappings().first()
    return dict(row) if row else None
