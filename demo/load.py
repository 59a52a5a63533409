"""The demo district: generate it (demo.synth), write it to a GeoPackage and load it into an empty database."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text

from geo.store.load import database_is_empty, load_district

#: Tables holding a district's data (not users, keys or the audit log), children first.
DISTRICT_TABLES = (
    "incident_events", "incidents", "staff_assignments", "people", "units", "buildings", "compounds",
    "micro_grid_boundaries", "micro_grids", "grid_boundaries", "grids", "community_boundaries", "communities",
    "street_boundaries", "streets", "boundary_versions",
)


def clear_district(engine: Engine) -> None:
    """Delete every district table's rows in one transaction (users, keys and audit stay)."""
    with engine.begin() as conn:
        existing = set(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
        tables = [t for t in DISTRICT_TABLES if t in existing]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def generate_and_load(engine: Engine | None, scale: float, seed: int, gpkg: Path | None = None,
                      replace: bool = False) -> dict:
    """Generate a district; write it to `gpkg` and/or the database; return counts and timings in seconds."""
    from demo.synth import generate_district

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    district = generate_district(scale=scale, seed=seed)
    timings["generate_s"] = time.perf_counter() - t0
    if gpkg is not None:
        t0 = time.perf_counter()
        gpkg.parent.mkdir(parents=True, exist_ok=True)
        gpkg.unlink(missing_ok=True)
        district.to_gpkg(gpkg)
        timings["gpkg_s"] = time.perf_counter() - t0
    if engine is not None:
        if replace:
            clear_district(engine)
        t0 = time.perf_counter()
        load_district(engine, district)
        timings["load_s"] = time.perf_counter() - t0
    return {"counts": district.counts(), "timings": timings, "fingerprint": district.fingerprint()}


def load_demo_if_empty(engine: Engine, scale: float = 1.0, seed: int = 1) -> dict | None:
    """Load the demo district when the database holds none; None when data was already there."""
    if not database_is_empty(engine):
        return None
    return generate_and_load(engine, scale, seed)
