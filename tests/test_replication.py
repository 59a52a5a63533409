"""Hot standby (流复制热备) and failover on clusters of their own.

A primary made by the project's tooling (`geo.store.localdb`) and a hot standby made from it with
``pg_basebackup`` streaming replication (`localdb.standby_up`). The app writes to the primary and reads tiles and
OGC features from the standby (`GRIDATLAS_READ_DATABASE_URL`, here ``app.state.read_engine``): a write through the
API becomes visible in a replica read; the read really ran on the standby (its pg_stat_activity shows the tile
query under the read engine's application_name, the primary's never does); the lag is in ``X-Replica-Lag`` and
/readyz; a stopped standby sends reads to the primary. Last, failover: the primary stops, the service answers 503
with Retry-After, the tooling promotes the standby, and the same app (a multi-host URL with
``target_session_attrs=read-write``) answers 200 and writes to the new primary without a restart.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from geo.store import db, localdb

pytestmark = pytest.mark.skipif(
    not (localdb.PG_BIN / "pg_basebackup").exists(), reason="needs the PostgreSQL server binaries (pg_basebackup)"
)

#: The longest a committed write may take to be readable on the standby (a correctness bound on a shared machine;
#: streaming replication on loopback typically takes milliseconds).
REPLICATION_BOUND_S = 30.0
#: The longest the service may take to answer 200 again after the standby is promoted.
FAILOVER_BOUND_S = 60.0


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="module")
def pair(district):
    """(primary, standby): a migrated primary holding the test district and a hot standby streaming from it;
    both stopped and deleted at the end, whatever happened."""
    parent = Path("/var/lib/gridatlas") if os.geteuid() == 0 else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="replication-test-", dir=parent))
    root.chmod(0o755)  # the clusters' unprivileged owner must reach the two folders inside
    primary = localdb.LocalCluster(root / "pg")
    standby = localdb.LocalCluster(localdb.standby_root(primary.root))
    try:
        localdb.up(primary)
        db.migrate(primary.url())
        from geo.store.load import load_district

        engine = db.make_engine(primary.service_url())
        load_district(engine, district)
        engine.dispose()
        with psycopg.connect(_plain(primary.url()), autocommit=True) as conn:
            # every statement in the servers' logs: the marker of where a query ran (the standby copies the
            # setting with the data directory)
            conn.execute("ALTER SYSTEM SET log_statement = 'all'")
            conn.execute("SELECT pg_reload_conf()")
        localdb.standby_up(primary, standby)
        yield primary, standby
    finally:
        try:
            localdb.down(standby)
        finally:
            try:
                localdb.down(primary)
            finally:
                shutil.rmtree(root, ignore_errors=True)


def _admin_token(engine) -> dict:
    from api.auth import issue_token
    from geo.access.users import create_user

    with db.session_scope(engine) as session:
        user = create_user(session, f"admin-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex, "admin", None)
    return {"Authorization": f"Bearer {issue_token(user)}"}


def _tile_of(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return z, x, y


def _logged(cluster: localdb.LocalCluster, needle: str, since: int) -> bool:
    """Whether the server logged a statement containing `needle` after byte `since` of its log."""
    with cluster.log.open("rb") as f:
        f.seek(since)
        return needle.encode() in f.read()


def _log_size(cluster: localdb.LocalCluster) -> int:
    return cluster.log.stat().st_size


def _read_connections(cluster: localdb.LocalCluster) -> int:
    with psycopg.connect(_plain(cluster.url()), autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (db.READ_APPLICATION_NAME,)).fetchone()[0]


def test_standby_streams_and_refuses_writes(pair):
    primary, standby = pair
    assert localdb.is_standby(standby)
    rows = localdb.replication_status(primary.url("postgres"))
    assert [r["state"] for r in rows] == ["streaming"], rows
    marker = uuid.uuid4().hex
    with psycopg.connect(_plain(primary.url()), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS replication_probe (v text)")
        conn.execute("INSERT INTO replication_probe VALUES (%s)", (marker,))
    with psycopg.connect(_plain(standby.url()), autocommit=True) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        deadline = time.monotonic() + REPLICATION_BOUND_S
        while not (conn.execute("SELECT to_regclass('replication_probe')").fetchone()[0]
                   and conn.execute("SELECT 1 FROM replication_probe WHERE v = %s", (marker,)).fetchone()):
            assert time.monotonic() < deadline, "the write never reached the standby"
            time.sleep(0.05)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO replication_probe VALUES ('x')")
    with psycopg.connect(_plain(primary.url()), autocommit=True) as conn:
        conn.execute("DROP TABLE replication_probe")


def test_reads_on_the_standby_writes_on_the_primary_lag_visible(pair):
    from api.main import create_app

    primary, standby = pair
    engine = db.make_engine(primary.service_url())
    replica = db.make_read_engine(standby.service_url())
    app = create_app(engine)
    app.state.read_engine = replica
    try:
        headers = _admin_token(engine)
        with engine.connect() as conn:
            lon, lat = conn.execute(text("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) AS c "
                                         "FROM current_grids ORDER BY code LIMIT 1) g")).one()
        with TestClient(app, raise_server_exceptions=False) as client:
            z, x, y = _tile_of(lon, lat, 15)
            marks = _log_size(primary), _log_size(standby)
            r = client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", headers=headers)
            assert r.status_code == 200, r.text
            assert float(r.headers["X-Replica-Lag"]) >= 0
            # the tile was cut on the standby, by the read engine's connections; the primary never ran it
            time.sleep(0.2)  # the log is written by the server, not by us
            assert _logged(standby, "ST_AsMVT", marks[1]) and not _logged(primary, "ST_AsMVT", marks[0])
            assert _read_connections(standby) >= 1 and _read_connections(primary) == 0

            # a write goes to the primary (the standby would refuse it: a 500, not a 201) ...
            body = {"lon": lon, "lat": lat, "class_code": "A01", "source": "patrol", "description": "复制测试"}
            w = client.post("/v1/incidents", json=body, headers=headers)
            assert w.status_code == 201, w.text
            assert "X-Replica-Lag" not in w.headers
            iid = w.json()["id"]
            # ... and becomes visible in a replica read within the bound
            deadline = time.monotonic() + REPLICATION_BOUND_S
            while True:
                f = client.get(f"/ogc/collections/incidents/items/{iid}", headers=headers)
                if f.status_code == 200:
                    break
                assert f.status_code == 404 and time.monotonic() < deadline, (f.status_code, f.text)
                time.sleep(0.05)
            assert "X-Replica-Lag" in f.headers
            time.sleep(0.2)
            assert _logged(primary, "INSERT INTO incidents", marks[0])
            assert not _logged(standby, "INSERT", marks[1])  # no write was even attempted there

            ready = client.get("/readyz").json()
            assert ready["replica"]["reachable"] and ready["replica"]["standby"], ready
            assert ready["replica"]["lag_s"] is not None and ready["replica"]["lag_s"] >= 0

            # a stopped standby: reads go to the primary (no lag header), /readyz says so, then back again
            localdb.down(standby)
            time.sleep(db.LAG_CACHE_S + 0.1)
            r = client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", headers=headers)
            assert r.status_code == 200 and "X-Replica-Lag" not in r.headers, r.headers
            assert client.get("/readyz").json()["replica"]["reachable"] is False
            localdb.standby_up(primary, standby)
            time.sleep(db.LAG_CACHE_S + 0.1)
            r = client.get(f"/tiles/grids/{z}/{x}/{y}.mvt", headers=headers)
            assert r.status_code == 200 and "X-Replica-Lag" in r.headers
    finally:
        replica.dispose()
        engine.dispose()


def test_failover_promote_the_standby_and_the_service_reconnects(pair):
    """Runs last in this module: the primary is stopped for good and the standby becomes the primary."""
    from api.main import create_app

    primary, standby = pair
    engine = db.make_engine(localdb.failover_url(primary, standby))
    try:
        headers = _admin_token(engine)
        with engine.connect() as conn:
            port = conn.execute(text("SELECT inet_server_port()")).scalar()
            lon, lat = conn.execute(text("SELECT ST_X(c), ST_Y(c) FROM (SELECT ST_PointOnSurface(geom) AS c "
                                         "FROM current_grids ORDER BY code LIMIT 1) g")).one()
        assert port == primary.credentials()["port"]
        body = {"lon": lon, "lat": lat, "class_code": "A01", "source": "patrol", "description": "切换测试"}
        with TestClient(create_app(engine), raise_server_exceptions=False) as client:
            assert client.post("/v1/incidents", json=body, headers=headers).status_code == 201

            localdb.down(primary)  # the primary is lost
            gap = client.post("/v1/incidents", json=body, headers=headers)
            assert gap.status_code == 503, gap.text
            assert gap.headers["content-type"].startswith("application/problem+json")
            assert int(gap.headers["Retry-After"]) > 0
            assert client.get("/readyz").status_code == 503

            t0 = time.monotonic()
            localdb.failover(primary, standby)  # fence the old primary, promote the standby
            assert not localdb.is_standby(standby)
            while (r := client.post("/v1/incidents", json=body, headers=headers)).status_code != 201:
                assert r.status_code == 503 and time.monotonic() - t0 < FAILOVER_BOUND_S, (r.status_code, r.text)
                time.sleep(0.2)
            assert client.get("/readyz").status_code == 200
        with engine.connect() as conn:
            assert conn.execute(text("SELECT inet_server_port()")).scalar() == standby.credentials()["port"]
            assert conn.execute(text("SELECT NOT pg_is_in_recovery()")).scalar()

        # the old primary may not come back as a second primary; the tooling rebuilds it as the new one's standby
        with pytest.raises(localdb.LocalDBError, match="promoted standby"):
            localdb.up(primary)
        localdb.rejoin(primary, standby)
        assert localdb.is_standby(primary)
        assert [r["state"] for r in localdb.replication_status(standby.url("postgres"))] == ["streaming"]
        engine.dispose()
        with engine.connect() as conn:  # the multi-host URL skips the read-only old primary
            assert conn.execute(text("SELECT inet_server_port()")).scalar() == standby.credentials()["port"]
    finally:
        engine.dispose()
