"""The store's foundations: migrations, geometry checks, boundary versions, health probes, problem+json."""

from __future__ import annotations

import datetime as dt

import pytest
import shapely
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, InternalError

from geo.spatial.geometry import GeometryError, as_multipolygons, require_valid
from geo.store import db
from geo.store.load import StoreError, load_district, parse_at, read_level

BOWTIE = "MULTIPOLYGON(((113.1 29.37, 113.101 29.371, 113.101 29.37, 113.1 29.371, 113.1 29.37)))"


def test_migrations_upgrade_and_downgrade(empty_database_url):
    db.migrate(empty_database_url)
    engine = db.make_engine(empty_database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"streets", "grids", "grid_boundaries", "compounds", "buildings", "units", "people",
            "staff_assignments", "incidents", "users", "audit_log", "boundary_versions"} <= tables
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM incident_classes WHERE major_code IS NULL")).scalar() == 6
    db.downgrade(empty_database_url, "base")
    assert "grids" not in set(inspect(engine).get_table_names())
    db.migrate(empty_database_url)
    heads, current = db.migration_heads(empty_database_url)
    assert heads == current
    engine.dispose()


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready" and body["postgis"].startswith("3")


def test_readyz_without_postgis_is_a_clear_503(empty_database_url):
    from fastapi.testclient import TestClient

    from api.main import create_app

    engine = db.make_engine(empty_database_url)
    with TestClient(create_app(engine)) as c:
        r = c.get("/readyz")
    engine.dispose()
    assert r.status_code == 503
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "PostGIS" in r.json()["detail"]


def test_readyz_unreachable_database_is_a_clear_503():
    from fastapi.testclient import TestClient

    from api.main import create_app

    engine = db.make_engine("postgresql+psycopg://nobody:wrong@127.0.0.1:1/none")
    with TestClient(create_app(engine)) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and "unreachable" in r.json()["detail"]


def test_errors_are_problem_json(client):
    r = client.get("/no/such/route")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["status"] == 404 and r.json()["instance"] == "/no/such/route"


def test_docs_render_without_internet(client):
    html = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


@pytest.mark.parametrize("wkt, reason", [(BOWTIE, "invalid"), ("MULTIPOLYGON EMPTY", "empty")])
def test_database_refuses_invalid_and_empty_geometries(db_session, wkt, reason):
    with pytest.raises(IntegrityError, match="geom_valid"), db_session.begin_nested():
        db_session.execute(
            text("INSERT INTO compounds (name, kind, has_property_management, has_owners_committee, geom) "
                 "VALUES ('坏小区', 'old', false, false, ST_GeomFromText(:w, 4326))"),
            {"w": wkt},
        )


def test_python_validation_names_the_problem():
    with pytest.raises(GeometryError) as exc:
        require_valid([shapely.from_wkt(BOWTIE), shapely.from_wkt("POLYGON EMPTY"), None], "grids")
    reasons = dict(exc.value.problems)
    assert "Self-intersection" in reasons[0]
    assert reasons[1] == "empty geometry" and reasons[2] == "null geometry"
    with pytest.raises(GeometryError, match="not polygons"):
        as_multipolygons([shapely.Point(0, 0)])


def test_grid_redrawn_on_a_date_answers_old_before_and_new_after(db_session):
    conn = db_session.connection()
    grid = conn.execute(text("SELECT id, code, boundary_id FROM current_grids ORDER BY code LIMIT 1")).one()
    redraw = dt.datetime(2026, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    version = conn.execute(text("INSERT INTO boundary_versions (valid_from, label) VALUES (:t, 'redraw') RETURNING id"),
                           {"t": redraw}).scalar()
    conn.execute(text("UPDATE grid_boundaries SET valid_to = :t WHERE id = :b"), {"t": redraw, "b": grid.boundary_id})
    conn.execute(
        text("INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) "
             "SELECT grid_id, :v, :t, ST_Multi(ST_Buffer(geom, -0.0001)) FROM grid_boundaries WHERE id = :b"),
        {"v": version, "t": redraw, "b": grid.boundary_id},
    )
    before = read_level(conn, "grids", parse_at("2026-05-31"), "WHERE code = :c", {"c": grid.code})
    after = read_level(conn, "grids", parse_at("2026-06-02"), "WHERE code = :c", {"c": grid.code})
    assert len(before) == len(after) == 1
    assert before.iloc[0]["boundary_id"] == grid.boundary_id
    assert after.iloc[0]["version_id"] == version
    assert after.geometry.iloc[0].area < before.geometry.iloc[0].area
    # On the day of the redraw itself (a bare date means the end of that day) the new boundary is in force.
    assert read_level(conn, "grids", parse_at("2026-06-01"), "WHERE code = :c", {"c": grid.code}).iloc[0][
        "version_id"] == version


def test_two_versions_of_one_grid_cannot_overlap_in_time(db_session):
    conn = db_session.connection()
    b = conn.execute(text("SELECT id, grid_id, version_id FROM grid_boundaries LIMIT 1")).one()
    with pytest.raises((IntegrityError, InternalError), match="one_version_at_a_time"), db_session.begin_nested():
        conn.execute(
            text("INSERT INTO grid_boundaries (grid_id, version_id, valid_from, geom) "
                 "SELECT grid_id, version_id, valid_from + interval '1 day', geom FROM grid_boundaries WHERE id=:i"),
            {"i": b.id},
        )


def test_codes_are_checked(db_session):
    with pytest.raises(IntegrityError, match="code_format"), db_session.begin_nested():
        db_session.execute(text("INSERT INTO streets (code, name) VALUES ('12AB', '坏街道')"))


def test_loading_into_a_non_empty_database_is_refused(engine, district):
    with pytest.raises(StoreError, match="already holds"):
        load_district(engine, district)


def test_loaded_counts_match_the_generator(engine, district):
    with engine.connect() as conn:
        for table, layer in [("streets", "streets"), ("communities", "communities"), ("grids", "grids"),
                             ("micro_grids", "micro_grids"), ("compounds", "compounds"),
                             ("buildings", "buildings"), ("units", "units"), ("incidents", "incidents")]:
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == len(getattr(district, layer))
        # Every incident inside the district got a grid from the version in force when it was reported.
        missing = conn.execute(text("SELECT count(*) FROM incidents WHERE grid_id IS NULL")).scalar()
        assert missing == 0


def test_parse_at_rejects_garbage():
    with pytest.raises(ValueError, match="not a date"):
        parse_at("yesterday")


#: The migrations geo/models.py declares ("heads": all of them; name one while a new migration awaits its model).
MODELLED_REVISION = "heads"


def test_models_match_the_migrated_schema(empty_database_url):
    """Alembic's autogenerate finds no difference between geo/models.py and the migrated database."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from geoalchemy2 import alembic_helpers
    from sqlalchemy import CheckConstraint
    from sqlalchemy.dialects.postgresql import ExcludeConstraint

    import geo.access.sessions  # noqa: F401  (its table is part of the metadata)
    import geo.access.throttle  # noqa: F401  (its table is part of the metadata)
    from geo.store.models import Base

    db.migrate(empty_database_url, MODELLED_REVISION)
    engine = db.make_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            # Partitions (incident_rollup_l0 …) are their parent's storage, declared by the parent alone.
            partitions = set(conn.execute(text(
                "SELECT relname FROM pg_class WHERE relispartition AND relkind = 'r'")).scalars())

            def include(obj, name, type_, reflected, compare_to):
                if type_ == "table" and name in partitions:
                    return False
                # a foreign key to a partitioned table has a clone per partition (pg_constraint.conparentid)
                if type_ == "foreign_key_constraint" and reflected and obj.referred_table.name in partitions:
                    return False
                return alembic_helpers.include_object(obj, name, type_, reflected, compare_to)

            context = MigrationContext.configure(conn, opts={
                "include_object": include, "compare_type": True, "compare_server_default": True})
            diff = compare_metadata(context, Base.metadata)
            # Autogenerate does not compare CHECK and EXCLUDE constraints: their names must match too.
            in_db = set(conn.execute(text(
                "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint c "
                "JOIN pg_class r ON r.oid = c.conrelid "
                "WHERE contype IN ('c', 'x') AND connamespace = 'public'::regnamespace AND NOT r.relispartition "
                "AND conrelid <> 'spatial_ref_sys'::regclass")).scalars())  # PostGIS's own table
    finally:
        engine.dispose()
    assert diff == [], "\n".join(map(str, diff))
    declared = {f"{t.name}.{c.name}" for t in Base.metadata.tables.values() for c in t.constraints
                if isinstance(c, (CheckConstraint, ExcludeConstraint))}
    assert declared == in_db, (sorted(declared - in_db), sorted(in_db - declared))


def test_favicon_is_served_for_pages_that_name_none(client):
    """Browsers ask every origin for /favicon.ico; answering it keeps page consoles free of 404s."""
    r = client.get("/favicon.ico", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/static/favicon.svg"
    icon = client.get("/favicon.ico", follow_redirects=True)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
