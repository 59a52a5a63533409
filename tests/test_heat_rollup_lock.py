"""The hexagon rollup's builder lock (`geo.incidents.heat_rollup.build_heat_size`) is right behind PgBouncer in
transaction mode: it is a transaction-scoped advisory lock, held by a transaction open for the whole build (so the
pooler keeps that server connection for it, and the lock ends with the transaction), never a session lock left
between transactions, and that transaction holds back neither vacuum (no snapshot, no xid) nor writers.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from geo.incidents import heat_rollup as hr
from geo.incidents.hexagons import LocalFrame
from tests.pgbouncer import pgbouncer_cluster

FRAME = LocalFrame(121.47, 31.23)
SIZE = 90.0


def _holders(engine) -> list:
    """Backends holding the builders' advisory lock of SIZE: (pid, state, backend_xmin, backend_xid)."""
    with engine.connect() as c:
        return c.execute(text(
            "SELECT a.pid, a.state, a.backend_xmin, a.backend_xid FROM pg_locks l JOIN pg_stat_activity a "
            "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :c AND l.objid = :k"),
            {"c": hr._LOCK_CLASS, "k": round(SIZE * 1000)}).all()


def test_builder_lock_is_held_by_an_open_transaction_and_ends_with_it(migrated_engine):
    seen: dict = {}

    def meanwhile() -> None:
        seen["holders"] = _holders(migrated_engine)
        seen["second"] = hr.build_heat_size(migrated_engine, FRAME, SIZE)  # another request for the same size
        with migrated_engine.connect() as c:  # a writer is not held up by the lock's transaction
            c.execute(text("SET LOCAL lock_timeout = '1s'"))
            c.execute(text("LOCK TABLE incidents IN ROW EXCLUSIVE MODE"))
            c.rollback()

    assert hr.build_heat_size(migrated_engine, FRAME, SIZE, after_registration=meanwhile)
    [(_pid, state, xmin, xid)] = seen["holders"]
    # a session lock would sit on an idle connection between the build's transactions; this one is inside one
    assert state == "idle in transaction" and xmin is None and xid is None
    assert seen["second"] is False
    assert _holders(migrated_engine) == []  # released with its transaction, though the pooled connection lives on
    with migrated_engine.connect() as c:
        assert hr.size_built(c, FRAME, SIZE)


def test_builder_lock_is_released_when_the_build_fails(migrated_engine):
    def boom() -> None:
        raise RuntimeError("the build's process fails mid-way")

    with pytest.raises(RuntimeError):
        hr.build_heat_size(migrated_engine, FRAME, SIZE, after_registration=boom)
    assert _holders(migrated_engine) == []
    # the abandoned registration is retired by the next build of the size, which completes
    assert hr.build_heat_size(migrated_engine, FRAME, SIZE)
    with migrated_engine.connect() as c:
        assert hr.size_built(c, FRAME, SIZE)


@pytest.fixture(scope="module")
def bouncer():
    """(cluster, engine through PgBouncer in transaction mode, 4 server connections): a migrated cluster of its own."""
    from geo.store import db, localdb

    with pgbouncer_cluster("heat-lock-test-", 4) as cluster:
        engine = db.make_engine(localdb.pgbouncer_url(cluster), pooled=True)
        try:
            yield cluster, engine
        finally:
            engine.dispose()


def test_builder_lock_through_pgbouncer_in_transaction_mode(bouncer):
    """Between the build's transactions another client takes the server connection the build started on; every
    builder lock is gone afterwards on the server itself (a session lock would stay on that pooled connection and
    keep the size from ever building again), and a later build of the size takes the lock."""
    from geo.store import db

    cluster, engine = bouncer
    direct = db.make_engine(cluster.url())
    others = [engine.connect() for _ in range(2)]

    def meanwhile() -> None:
        for other in others:  # hold server connections in open transactions, as other clients' requests would
            other.execute(text("SELECT 1"))

    try:
        assert hr.build_heat_size(engine, FRAME, SIZE, after_registration=meanwhile)
        with direct.connect() as c:
            assert c.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :c"),
                             {"c": hr._LOCK_CLASS}).scalar_one() == 0
        with engine.connect() as c:  # a new frame: the size is retired and built again, so the lock is needed
            assert hr.build_heat_size(engine, LocalFrame(121.5, 31.2), SIZE)
            assert hr.size_built(c, LocalFrame(121.5, 31.2), SIZE)
    finally:
        for other in others:
            other.rollback()
            other.close()
        direct.dispose()
