"""The service connects as a role that is not a superuser, and the audit log is append-only for it.

A superuser could switch triggers off (`SET session_replication_role = replica`) and then rewrite the audit log;
the service's role cannot, and has no UPDATE/DELETE/TRUNCATE on the log at all.
"""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geo.access.audit import record
from geo.store import db


@pytest.fixture
def service_engine(engine):
    """The suite's engine, which runs as the service's role; skips where the deployment has a single role."""
    admin_user = db.make_engine(db.admin_database_url()).url.username
    if engine.url.username == admin_user:
        pytest.skip("DATABASE_URL names one role for both the schema owner and the service (no separate roles)")
    return engine


def test_the_service_role_is_not_a_superuser(service_engine):
    with service_engine.connect() as conn:
        row = conn.execute(text(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )).one()
    assert tuple(row) == (False, False, False, False)


@pytest.mark.parametrize("statement", [
    "SET session_replication_role = replica",
    "UPDATE audit_log SET actor = 'someone else'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
])
def test_the_audit_log_cannot_be_rewritten_by_the_service(db_session, service_engine, statement):
    entry = record(db_session, None, "test.entry", "test", 1)
    conn = db_session.connection()
    before = conn.execute(text("SELECT count(*), max(id) FROM audit_log")).one()
    assert before[1] == entry.id
    savepoint = conn.begin_nested()
    with pytest.raises(DBAPIError) as caught:
        conn.execute(text(statement))
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege)
    savepoint.rollback()
    assert conn.execute(text("SELECT count(*), max(id) FROM audit_log")).one() == before


def test_the_service_can_append_to_the_audit_log_and_write_data(db_session, service_engine):
    entry = record(db_session, None, "test.append", "test", 2)
    conn = db_session.connection()
    assert conn.execute(text("UPDATE grids SET name = name WHERE id = (SELECT min(id) FROM grids)")).rowcount == 1
    assert conn.execute(text("SELECT action FROM audit_log WHERE id = :i"), {"i": entry.id}).scalar() \
        == "test.append"
