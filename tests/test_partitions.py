"""Monthly partitions of the incidents and their rollups (migration 0022).

The migration copies what is stored (whatever columns another migration added), keeps every rollup count, and
turns references to an incident into composite foreign keys the database still enforces; rows written for a month
without a partition land in the default partition and are moved into their month when it is created, with the
rollups untouched; downgrading gives the plain tables back with the same rows.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from geo.incidents import retention
from geo.settings import get_settings
from geo.store import db

PARTITIONS = "0022_incident_partitions"
BEFORE = "0021_incident_history"
CST = dt.timezone(dt.timedelta(hours=8))
#: reported_at of the stored cases: recent months, and one a decade back (a partition of its own, none between)
REPORTED = [dt.datetime(2015, 3, 9, 10, tzinfo=CST), *(dt.datetime.now(CST) - dt.timedelta(days=d)
                                                         for d in (3, 40, 95, 200))]


def _seed(conn) -> list[int]:
    """Cases with events and a photo each, written before the migration (the rollup triggers count them)."""
    conn.execute(text("INSERT INTO incident_classes (code, name, time_limit_hours) VALUES ('A01', '暴露垃圾', 24) "
                      "ON CONFLICT DO NOTHING"))
    ids = []
    for k, at in enumerate(REPORTED):
        iid = conn.execute(text(
            "INSERT INTO incidents (geom, reported_at, class_code, source, state, closed_at, due_at) "
            "VALUES (ST_SetSRID(ST_MakePoint(113.1 + :k * 0.001, 29.37), 4326), :at, 'A01', 'patrol', "
            "CASE WHEN :k % 2 = 0 THEN 'closed' ELSE 'dispatched' END, "
            "CASE WHEN :k % 2 = 0 THEN CAST(:at AS timestamptz) + interval '20 hours' END, "
            "CAST(:at AS timestamptz) + interval '24 hours') RETURNING id"), {"k": k, "at": at}).scalar_one()
        conn.execute(text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor) "
                          "VALUES (:i, NULL, 'dispatched', CAST(:at AS timestamptz) + interval '1 hour', 't')"),
                     {"i": iid, "at": at})
        conn.execute(text("INSERT INTO incident_photos (incident_id, media_type, size_bytes, sha256, path) "
                          "VALUES (:i, 'image/jpeg', 10, :h, 'x.jpg')"), {"i": iid, "h": f"{iid:064d}"})
        ids.append(iid)
    return ids


def _rollup(conn) -> list:
    return conn.execute(text(
        "SELECT level, month, closed_month, handled_month, class_code, received, registered, due, on_time "
        "FROM incident_rollup WHERE (received, registered, due, on_time) <> (0, 0, 0, 0) ORDER BY 1, 2, 3, 4, 5"
    )).all()


def _snapshot(conn) -> dict:
    return {
        "incidents": conn.execute(text("SELECT id, reported_at, state, external_ref, lon FROM incidents "
                                       "ORDER BY id")).all(),
        "events": conn.execute(text("SELECT incident_id, to_state, at FROM incident_events ORDER BY id")).all(),
        "photos": conn.execute(text("SELECT incident_id, sha256 FROM incident_photos ORDER BY id")).all(),
        "rollup": _rollup(conn),
    }


@pytest.fixture
def before_partitions(empty_database_url):
    """A database at the revision before 0022 holding cases, and a column a parallel migration added."""
    db.migrate(empty_database_url, BEFORE)
    engine = db.make_engine(empty_database_url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE incidents ADD COLUMN external_ref text"))
        ids = _seed(conn)
        conn.execute(text("UPDATE incidents SET external_ref = 'ext-' || id"))
        snap = _snapshot(conn)
    yield empty_database_url, engine, ids, snap
    engine.dispose()


def test_migration_copies_the_cases_into_monthly_partitions(before_partitions):
    """Every row, column (also one added by another migration) and rollup count survives; each case sits in its
    local month's partition; the decade-old one in a partition of its own, with no empty years between."""
    url, engine, ids, snap = before_partitions
    db.migrate(url, PARTITIONS)
    with engine.connect() as conn:
        assert _snapshot(conn) == snap
        assert conn.execute(text("SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'incidents'::regclass"
                                 )).scalar_one() == "r"
        pk = conn.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'incidents_pkey'"
                               )).scalar_one()
        assert pk == "PRIMARY KEY (id, reported_at)"
        homes = dict(conn.execute(text(
            "SELECT id, tableoid::regclass::text FROM incidents")).all())
        for iid, at in zip(ids, REPORTED, strict=True):
            assert homes[iid] == f"incidents_p{at:%Y%m}", (iid, at)
        names = {p["partition"] for p in retention.partitions(conn)}
        jit = conn.execute(text("SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = "
                                "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar_one()
        assert "jit=off" in jit  # JIT would compile every partition's expressions again
        assert "incidents_p201503" in names and "incidents_p201504" not in names
        assert {"incidents_default", "incident_events_default", "incident_rollup_default",
                "incident_heat_rollup_default"} <= names
        now = dt.datetime.now(CST)
        ahead = (now.replace(day=1) + dt.timedelta(days=62)).strftime("%Y%m")
        for table in ("incidents", "incident_events", "incident_rollup", "incident_heat_rollup"):
            assert f"{table}_p{ahead}" in names, table  # created ahead
        # events and photos point at their incident by (id, reported_at), filled from the id
        assert conn.execute(text("SELECT count(*) FROM incident_events e JOIN incidents i "
                                 "ON (i.id, i.reported_at) = (e.incident_id, e.incident_reported_at)")).scalar_one() \
            == len(ids)


def test_references_are_still_enforced(before_partitions):
    """Writers name an incident by its id alone; an unknown id is refused; deleting a case removes its events
    and photos (the composite foreign keys cascade); ids continue from the same sequence."""
    url, engine, ids, _ = before_partitions
    db.migrate(url, PARTITIONS)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor) "
                          "VALUES (:i, 'dispatched', 'handled', now(), 't')"), {"i": ids[1]})
        got = conn.execute(text("SELECT e.incident_reported_at = i.reported_at FROM incident_events e "
                                "JOIN incidents i ON i.id = e.incident_id WHERE e.to_state = 'handled'")).scalar_one()
        assert got is True
        new_id = conn.execute(text(
            "INSERT INTO incidents (geom, reported_at, class_code, source, state) "
            "VALUES (ST_SetSRID(ST_MakePoint(113.2, 29.4), 4326), now(), 'A01', 'patrol', 'collected') "
            "RETURNING id")).scalar_one()
        assert new_id == max(ids) + 1
    for table, values in (("incident_events", "(999999, NULL, 'dispatched', now(), 't')"),):
        with pytest.raises(IntegrityError) as err, engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {table} (incident_id, from_state, to_state, at, actor) VALUES {values}"))
        assert isinstance(err.value.orig, psycopg.errors.ForeignKeyViolation)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        # the copied key cannot be pointed elsewhere: the composite foreign key checks the pair
        conn.execute(text("UPDATE incident_photos SET incident_reported_at = incident_reported_at - interval '1 day'"))
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM incidents WHERE id = :i"), {"i": ids[2]})
        left = conn.execute(text("SELECT (SELECT count(*) FROM incident_events WHERE incident_id = :i) + "
                                 "(SELECT count(*) FROM incident_photos WHERE incident_id = :i)"),
                            {"i": ids[2]}).scalar_one()
        assert left == 0


def test_rows_in_the_default_partition_move_to_their_month(migrated_engine):
    """A case of a month without a partition lands in the default partition; creating the month moves it (and
    its events) there, with the rollup counts unchanged and the triggers still counting new writes."""
    with migrated_engine.begin() as conn:
        _seed(conn)
        old = dt.datetime(2001, 5, 20, 12, tzinfo=CST)
        conn.execute(text(
            "INSERT INTO incidents (geom, reported_at, class_code, source, state) "
            "VALUES (ST_SetSRID(ST_MakePoint(113.1, 29.37), 4326), :at, 'A01', 'patrol', 'registered')"), {"at": old})
        conn.execute(text("INSERT INTO incident_events (incident_id, from_state, to_state, at, actor) "
                          "SELECT id, NULL, 'registered', reported_at, 't' FROM incidents WHERE reported_at = :at"),
                     {"at": old})
        where = "SELECT tableoid::regclass::text FROM {} WHERE {} = :at"
        assert conn.execute(text(where.format("incidents", "reported_at")), {"at": old}).scalar_one() \
            == "incidents_default"
        rollup = _rollup(conn)
        assert any(r.month.year == 2001 and r.received == 1 for r in rollup)
    with migrated_engine.begin() as conn:
        created = conn.execute(text("SELECT incident_partitions_ensure(:a, :a)"), {"a": old}).scalar_one()
        assert created == 4  # the month of the four partitioned tables
    with migrated_engine.connect() as conn:
        assert conn.execute(text(where.format("incidents", "reported_at")), {"at": old}).scalar_one() \
            == "incidents_p200105"
        assert conn.execute(text(where.format("incident_events", "at")), {"at": old}).scalar_one() \
            == "incident_events_p200105"
        assert _rollup(conn) == rollup
        # the new partition has its parent's grants (the service's group)
        role = get_settings().app_role
        assert conn.execute(text("SELECT has_table_privilege(:r, 'incidents_p200105', 'INSERT')"),
                            {"r": role}).scalar_one()
        # the month created is emptied from the default partition; another month (2015) stays there until created
        assert conn.execute(text("SELECT count(*) FROM incidents_default WHERE reported_at = :at"),
                            {"at": old}).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM incidents_default")).scalar_one() == 1
    with migrated_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO incidents (geom, reported_at, class_code, source, state) "
            "VALUES (ST_SetSRID(ST_MakePoint(113.1, 29.37), 4326), :at, 'A01', 'patrol', 'registered')"),
            {"at": old + dt.timedelta(days=1)})
        n = conn.execute(text("SELECT sum(received) FROM incident_rollup WHERE level = 0 AND month = :m"),
                         {"m": dt.datetime(2001, 5, 1, tzinfo=CST)}).scalar_one()
        assert n == 2


def test_downgrade_gives_the_plain_tables_back(before_partitions):
    """Down to 0016: plain tables with the same rows and counts, the single-column references back; up again."""
    url, engine, _, snap = before_partitions
    db.migrate(url, PARTITIONS)
    from alembic import command

    command.downgrade(db.alembic_config(url), BEFORE)
    with engine.connect() as conn:
        assert _snapshot(conn) == snap
        assert conn.execute(text("SELECT count(*) FROM pg_partitioned_table WHERE partrelid IN "
                                 "('incidents'::regclass, 'incident_events'::regclass)")).scalar_one() == 0
        fk = conn.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                               "WHERE conname = 'incident_photos_incident_id_fkey'")).scalar_one()
        assert fk == "FOREIGN KEY (incident_id) REFERENCES incidents(id) ON DELETE CASCADE"
    db.migrate(url, PARTITIONS)
    with engine.connect() as conn:
        assert _snapshot(conn) == snap
