"""PgBouncer (Debian's) in transaction mode in front of a cluster of its own (`localdb.pgbouncer_up`).

300 client connections at once share at most `POOL` server connections (the server allows 100 in all); what
transaction mode breaks is shown and its fix checked: psycopg's server-side prepared statements (an engine made
with ``pooled=True`` prepares none) and LISTEN (the change listener connects to the server itself,
`db.listen_url`). The app runs through PgBouncer too.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.store import db, localdb
from tests.pgbouncer import AVAILABLE, SKIP_REASON, pgbouncer_cluster

pytestmark = pytest.mark.skipif(not AVAILABLE, reason=SKIP_REASON)

#: Server connections PgBouncer may open for the service role (far fewer than the clients).
POOL = 10
CLIENTS = 300


@pytest.fixture(scope="module")
def bouncer():
    """(cluster, psycopg URL through PgBouncer as the service role): a migrated cluster of its own."""
    with pgbouncer_cluster("pgbouncer-test-", POOL) as cluster:
        yield cluster, localdb.pgbouncer_url(cluster).replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def app_engine(bouncer):
    """The service's engine as deployed behind PgBouncer: pooled (no prepared statements), LISTEN direct."""
    cluster, _ = bouncer
    engine = db.make_engine(localdb.pgbouncer_url(cluster), pooled=True, direct_url=cluster.service_url())
    try:
        yield engine
    finally:
        engine.dispose()


def _server_connections(cluster) -> int:
    with psycopg.connect(cluster.url().replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        return c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                         (localdb.SERVICE_ROLE,)).fetchone()[0]


def test_300_clients_share_a_bounded_number_of_server_connections(bouncer):
    cluster, url = bouncer
    with psycopg.connect(cluster.url().replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        assert int(c.execute("SHOW max_connections").fetchone()[0]) < CLIENTS  # directly, 300 could not connect
    all_connected = threading.Barrier(CLIENTS + 1, timeout=120)
    done = threading.Barrier(CLIENTS + 1, timeout=300)
    answers: list[int] = []
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with psycopg.connect(url, prepare_threshold=None, connect_timeout=60) as conn:
                all_connected.wait()
                for _ in range(3):  # three transactions each, every one waiting for a free server connection
                    with conn.transaction():
                        answers.append(conn.execute("SELECT %s::int FROM pg_sleep(0.02)", (i,)).fetchone()[0])
        except BaseException as exc:  # reported below
            errors.append(exc)
            all_connected.abort()
        finally:
            done.wait()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    all_connected.wait()  # 300 client connections open at once
    peak = 0
    while len(answers) < 3 * CLIENTS and not errors:
        peak = max(peak, _server_connections(cluster))
        time.sleep(0.05)
    done.wait()
    assert not errors, errors[:3]
    assert sorted(answers) == sorted(i for i in range(CLIENTS) for _ in range(3))
    assert 1 <= peak <= POOL, peak


def test_transaction_mode_breaks_prepared_statements_and_pooled_engines_prepare_none(bouncer):
    cluster, url = bouncer
    query = "SELECT count(*) FROM pg_class WHERE relname <> %s"
    # psycopg prepares a statement on the server after its 5th run; the next transaction may get another server
    # connection (here: one held by another client), where that statement does not exist
    with psycopg.connect(url) as a, psycopg.connect(url) as b:
        a.autocommit = b.autocommit = True
        for _ in range(6):
            a.execute(query, ("x",))
        with b.transaction():
            b.execute("SELECT 1")  # B now holds the server connection A prepared on (PgBouncer reuses it first)
            with pytest.raises(psycopg.errors.InvalidSqlStatementName):
                a.execute(query, ("x",))
    engine = db.make_engine(localdb.pgbouncer_url(cluster), pooled=True)
    try:
        with engine.connect() as a, engine.connect() as b:
            assert a.connection.dbapi_connection.prepare_threshold is None
            for _ in range(6):
                a.execute(text("SELECT count(*) FROM pg_class WHERE relname <> :r"), {"r": "x"}).scalar()
            a.commit()
            b.execute(text("SELECT 1"))  # holds a server connection in its transaction
            assert a.execute(text("SELECT count(*) FROM pg_class WHERE relname <> :r"), {"r": "x"}).scalar() > 0
    finally:
        engine.dispose()


def test_listen_bypasses_the_pooler_and_hears_commits_made_through_it(bouncer, app_engine):
    cluster, _ = bouncer
    assert f":{cluster.credentials()['port']}/" in db.listen_url(app_engine)
    with psycopg.connect(db.listen_url(app_engine), autocommit=True) as listener:
        listener.execute("LISTEN gridatlas_changes")
        with app_engine.begin() as conn:
            conn.execute(text("SELECT pg_notify('gridatlas_changes', 'grid_boundaries')"))
        heard = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    assert heard == ["grid_boundaries"]


def test_the_app_through_pgbouncer(bouncer, app_engine):
    from api.main import create_app

    cluster, _ = bouncer
    with TestClient(create_app(app_engine), raise_server_exceptions=False) as client:
        for i in range(12):  # more than psycopg's prepare threshold on each pooled connection
            assert client.get("/readyz").status_code == 200
            r = client.post("/v1/auth/token", data={"username": f"nobody{i}", "password": "wrong password"})
            assert r.status_code == 401, r.text
    assert _server_connections(cluster) <= POOL
