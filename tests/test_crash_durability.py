"""No acknowledged write is lost in a crash: kill -9 the postmaster and its children under a write load.

Runs on a cluster of its own (initdb'd for this test, same settings as the project's), so the rest of the suite
is not disturbed. Writers commit audit entries through the domain's `session_scope`, exactly as every API write
does, and remember each id whose commit returned; after the kill and a restart every remembered id must be there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from geo.access.audit import record
from geo.store import db, localdb
from geo.store.db import session_scope

pytestmark = pytest.mark.skipif(
    not (localdb.PG_BIN / "initdb").exists(), reason="needs the PostgreSQL server binaries to make its own cluster"
)

WRITERS = 4
ACKNOWLEDGED_BEFORE_KILL = 300  # the kill comes after at least this many commits, whatever the machine's speed


def _postgres_processes(postmaster: int) -> list[int]:
    """The postmaster and every process whose parent it is."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def _gone(pid: int) -> bool:
    """Whether the process has exited (or is a zombie nobody reaps)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_every_acknowledged_write_survives_kill_9(own_cluster):
    admin_url = own_cluster.url()
    db.migrate(admin_url)
    engine = db.make_engine(own_cluster.service_url())
    acknowledged: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                with session_scope(engine) as session:
                    entry = record(session, None, "crash.write", "writer", f"{n}-{i}")
                    entry_id = entry.id
            except Exception:  # the server is gone: what was not acknowledged may be lost
                if stop.is_set():
                    return
                time.sleep(0.05)
                continue
            with lock:
                acknowledged.append(entry_id)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(WRITERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while len(acknowledged) < ACKNOWLEDGED_BEFORE_KILL and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(acknowledged) >= ACKNOWLEDGED_BEFORE_KILL, "the writers made no progress"

    postmaster = int((own_cluster.data / "postmaster.pid").read_text().split()[0])
    killed = _postgres_processes(postmaster)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # SIGKILL is delivered asynchronously: restarting while the old postmaster still looks alive would skip the start
    deadline = time.monotonic() + 120
    while not all(_gone(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    engine.dispose()

    localdb.up(own_cluster)  # crash recovery replays the WAL
    engine = db.make_engine(own_cluster.service_url())
    with engine.connect() as conn:
        present = set(conn.execute(text("SELECT id FROM audit_log WHERE action = 'crash.write'")).scalars())
    engine.dispose()
    with lock:
        lost = sorted(set(acknowledged) - present)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged writes were lost: {lost[:10]}"
