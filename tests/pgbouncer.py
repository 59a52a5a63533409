"""A PostgreSQL cluster of its own behind Debian's PgBouncer in transaction mode, for the tests that need one
(`tests/test_pgbouncer.py`, `tests/test_heat_rollup_lock.py`): started, migrated, and torn down to the last file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from geo.store import db, localdb

#: Whether PgBouncer and the PostgreSQL server binaries are installed.
AVAILABLE = localdb.PGBOUNCER.exists() and (localdb.PG_BIN / "initdb").exists()
SKIP_REASON = "needs PgBouncer and the PostgreSQL server binaries (apt-get install pgbouncer)"


@contextmanager
def pgbouncer_cluster(prefix: str, pool_size: int) -> Iterator[localdb.LocalCluster]:
    """A migrated cluster with PgBouncer in front (`pool_size` server connections for the service role); the test
    is skipped when PgBouncer is not installed."""
    if not AVAILABLE:
        pytest.skip(SKIP_REASON)
    # initdb refuses root: as root the cluster lives where the unprivileged owner can reach it
    parent = Path("/var/lib/gridatlas") if os.geteuid() == 0 else None
    if parent:
        parent.mkdir(parents=True, exist_ok=True)
    cluster = localdb.LocalCluster(Path(tempfile.mkdtemp(prefix=prefix, dir=parent)))
    try:
        localdb.up(cluster)
        db.migrate(cluster.url())
        localdb.pgbouncer_up(cluster, pool_size=pool_size)
        yield cluster
    finally:
        try:
            localdb.pgbouncer_down(cluster)
        finally:
            try:
                localdb.down(cluster)
            finally:
                shutil.rmtree(cluster.root, ignore_errors=True)
