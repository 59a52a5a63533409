"""The project-managed local cluster: idempotent start, recovery after kill -9, stop."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psycopg
import pytest

from geo.store import localdb

pytestmark = pytest.mark.skipif(os.environ.get("DATABASE_URL") is not None,
                                reason="DATABASE_URL is set: the local cluster is not used")


@pytest.fixture
def cluster(tmp_path_factory):
    var = Path("/tmp") / f"gridatlas-localdb-test-{os.getpid()}"
    c = localdb.LocalCluster(localdb.cluster_root(var))
    yield c
    try:
        localdb.down(c)
    finally:
        shutil.rmtree(c.root, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)


def _psql_url(c: localdb.LocalCluster) -> str:
    return c.url().replace("postgresql+psycopg://", "postgresql://")


def test_up_is_idempotent_recovers_from_kill_and_stops(cluster):
    url = localdb.up(cluster)
    assert url.startswith("postgresql+psycopg://gridatlas:") and "127.0.0.1" in url
    with psycopg.connect(_psql_url(cluster)) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == "gridatlas"
    pid_before = int((cluster.data / "postmaster.pid").read_text().split()[0])
    assert localdb.up(cluster) == url  # second up: a no-op, same server
    assert int((cluster.data / "postmaster.pid").read_text().split()[0]) == pid_before

    os.kill(pid_before, signal.SIGKILL)  # crash: the pid file stays behind
    deadline = time.monotonic() + 10
    while localdb.is_running(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (cluster.data / "postmaster.pid").exists()
    localdb.up(cluster)
    with psycopg.connect(_psql_url(cluster)) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1

    status = localdb.status(cluster)
    assert status["running"] and "***" in status["url"]
    assert localdb.down(cluster) is True
    assert localdb.down(cluster) is False
    assert not localdb.status(cluster)["running"]


def test_cluster_runs_as_unprivileged_user_when_root(cluster):
    if os.geteuid() != 0:
        pytest.skip("only meaningful as root")
    localdb.up(cluster)
    assert cluster.data.stat().st_uid != 0
