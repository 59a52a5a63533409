"""The hexagon rollup (六边形月汇总): incidents per cell size, local month and cell, built without blocking writers.

`incident_heat_rollup` (migration 0011) holds counts per (cell size, month, q, r) for the sizes registered in
`incident_heat_sizes` with the frame they are binned in; the incidents' statement triggers keep every registered
size up to date in each write's own transaction. A heatmap reads whole months from it (`geo.incidents.heatmap`).
A size is registered and built on the first request that needs it (`ensure_heat_rollup`), and a build never holds
up a report or a transition:

1. One builder per size at a time (a transaction-scoped advisory lock, held by a transaction of its own for the
   whole build, so it is right behind PgBouncer's transaction pooling): another request for that size meanwhile
   answers from the incidents.
2. Sizes to drop (the same size binned in another frame, an abandoned build, the oldest beyond MAX_ROLLUP_SIZES)
   are retired first: marked (``built_at = '-infinity'``, so no reader uses them) and emptied a chunk per short
   transaction, so a writer on one of their cells waits for one chunk at most.
3. The size is registered as building (``built_at = 'infinity'``) in a transaction holding ``LOCK TABLE incidents
   IN SHARE MODE`` for a few milliseconds, taken with NOWAIT: it never queues in front of a writer and is granted
   only while no write to incidents is in flight (tried REGISTER_ATTEMPTS times, else the request answers from
   the incidents). Hence every writer statement after it sees the size, and its trigger keeps the size's counts
   (writers run in READ COMMITTED, where a trigger's queries see what committed before them); and the retired
   sizes are unregistered there, where no writer's trigger can still be about to add cells of a size that is gone
   (a foreign-key error for that writer).
4. The counts are built by ONE statement, so from one snapshot X: each cell gets base(X) − (its increments already
   in X) added to its current value. Writers committed before X are in base(X) and their increments cancel;
   writers committing after X add their own increments. The size is marked built (``built_at``, its time) in the
   same transaction. Writers are never waited for; one writing a cell the statement upserts waits for its commit.

A transaction that has itself written incidents does not build (a build elsewhere cannot see its rows), nor does
one under REPEATABLE READ (its snapshot would not see the build): both answer from the incidents, with the same
numbers (tests/test_incident_rollup.py compares the paths).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from geo.incidents.hexagons import SQRT3, LocalFrame, hex_axial_sql

log = logging.getLogger(__name__)

#: Hexagon sizes kept in incident_heat_rollup at most (every write to incidents maintains each one).
MAX_ROLLUP_SIZES = 4
#: Rows of a retired size deleted per transaction.
RETIRE_CHUNK = 5000
#: Tries to find a moment with no incident write in flight to register a size in.
REGISTER_ATTEMPTS = 10
#: How long a builder waits for a row lock a writer holds before giving up the attempt: under PostgreSQL's default
#: deadlock_timeout (1 s), so should the two ever wait on each other, the builder is the one that gives way.
BUILD_LOCK_TIMEOUT = "500ms"
#: Advisory lock namespace of the builders (one lock per size inside it).
_LOCK_CLASS = 0x47414845
#: SQLSTATEs that end a build attempt (the request answers from the incidents): lock not available, deadlock,
#: serialization failure, a size unregistered meanwhile (foreign key), a read-only database or role.
_GIVE_WAY = {"55P03", "40P01", "40001", "23503", "25006", "42501"}


def frame_row(frame: LocalFrame, size: float) -> dict:
    """The incident_heat_sizes row of hexagons of `size` binned in `frame` (without its build time)."""
    return {"cell_m": float(size), "lon0": frame.lon0, "lat0": frame.lat0, "kx": frame.kx, "ky": frame.ky,
            "k": SQRT3 * float(size)}


def built_sql(frame: LocalFrame, size: float) -> tuple[str, dict]:
    """A SQL condition (and its parameters) true while the rollup holds built hexagons of `size` in `frame`: to
    check, in the statement that reads the rollup, that no retirement began since `ensure_heat_rollup`."""
    row = frame_row(frame, size)
    params = {f"heat_{k}": v for k, v in row.items()}
    sql = ("EXISTS (SELECT 1 FROM incident_heat_sizes s WHERE s.cell_m = :heat_cell_m AND isfinite(s.built_at) "
           "AND (s.lon0, s.lat0, s.kx, s.ky, s.k) = (:heat_lon0, :heat_lat0, :heat_kx, :heat_ky, :heat_k))")
    return sql, params


def size_built(conn: Connection, frame: LocalFrame, size: float) -> bool:
    """Whether `conn` sees built hexagons of `size` binned in `frame` in the rollup."""
    sql, params = built_sql(frame, size)
    return bool(conn.execute(text(f"SELECT {sql}"), params).scalar_one())


def ensure_heat_rollup(conn: Connection, frame: LocalFrame, size: float) -> bool:
    """Whether incident_heat_rollup holds hexagons of `size` binned in `frame` as `conn` sees them, building them in
    separate transactions when missing (without blocking incident writes); False: answer from the incidents."""
    if size_built(conn, frame, size):
        return True
    may_build = conn.execute(text(
        "SELECT current_setting('transaction_isolation') = 'read committed' AND NOT EXISTS ("
        "  SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted"
        "  AND relation = to_regclass('incidents') AND mode NOT IN ('AccessShareLock', 'RowShareLock'))"
    )).scalar_one()
    if not may_build:
        return False
    # READ COMMITTED: the caller's next statement sees what the builder committed
    return build_heat_size(conn.engine, frame, size) and size_built(conn, frame, size)


def build_heat_size(engine: Engine, frame: LocalFrame, size: float, *,
                    after_registration: Callable[[], None] | None = None) -> bool:
    """Register hexagons of `size` binned in `frame` and build their counts (see the module docstring), in
    transactions of their own; whether they are built. `after_registration` runs between registering and building
    (tests write incidents there)."""
    # The builder's lock is a transaction lock held by a transaction of its own, open for the whole build: behind
    # PgBouncer in transaction mode that transaction keeps one server connection, and the lock ends with it (commit,
    # rollback or a lost client), where a session lock's unlock could reach another server connection and leave the
    # lock held by a pooled one. It takes no snapshot and no xid, so it holds back neither vacuum nor writers.
    with engine.connect() as guard:
        # integers written into the SQL, not bound: a statement with parameters leaves its portal, and with it a
        # snapshot (backend_xmin), open until the connection's next statement, which here is the build's end
        lock = f"SELECT pg_try_advisory_xact_lock({_LOCK_CLASS:d}, {round(float(size) * 1000):d})"
        if not guard.execute(text(lock)).scalar_one():
            guard.rollback()
            return False  # another request is building this size
        try:
            with engine.connect() as b:
                try:
                    return _build(b, frame, size, after_registration)
                finally:
                    b.rollback()
        except DBAPIError as exc:
            if _sqlstate(exc) not in _GIVE_WAY:
                raise
            log.info("hexagon size %g m not built now (%s): answering from the incidents", size, _sqlstate(exc))
            return False
        finally:
            guard.rollback()  # ends the lock's transaction: the lock is released


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _build(b: Connection, frame: LocalFrame, size: float, after_registration: Callable[[], None] | None) -> bool:
    want = frame_row(frame, size)
    row = b.execute(text("SELECT cell_m, lon0, lat0, kx, ky, k, isfinite(built_at) AS built "
                         "FROM incident_heat_sizes WHERE cell_m = :cell_m"), want).mappings().first()
    if row is not None and row["built"] and {k: row[k] for k in want} == want:
        b.commit()
        return True  # built by another request meanwhile
    victims = b.execute(text(
        "SELECT cell_m FROM incident_heat_sizes WHERE cell_m <> :cell_m ORDER BY built_at DESC, cell_m OFFSET :keep"),
        {**want, "keep": MAX_ROLLUP_SIZES - 1}).scalars().all()
    victims = [*victims, *([want["cell_m"]] if row is not None else [])]
    b.commit()
    if victims:
        _retire(b, victims)
    if not _register(b, want, victims):
        return False
    if after_registration is not None:
        after_registration()
    for _ in range(3):
        try:
            return _count(b, frame, size)
        except DBAPIError as exc:
            b.rollback()
            if _sqlstate(exc) not in ("55P03", "40P01"):
                raise
    # given up: retired, so the next request for this size (or any new size) clears it first
    b.execute(text("UPDATE incident_heat_sizes SET built_at = '-infinity' WHERE cell_m = :cell_m "
                   "AND built_at = 'infinity'"), want)
    b.commit()
    return False


def _retire(b: Connection, sizes: list[float]) -> None:
    """Stop answering from these sizes and empty their rows a chunk per transaction; they are unregistered (with
    the few rows writers add meanwhile) when the new size is registered."""
    b.execute(text(f"SET LOCAL lock_timeout = '{BUILD_LOCK_TIMEOUT}'"))
    b.execute(text("UPDATE incident_heat_sizes SET built_at = '-infinity' WHERE cell_m = ANY(:sizes)"),
              {"sizes": sizes})
    b.commit()
    while True:
        b.execute(text(f"SET LOCAL lock_timeout = '{BUILD_LOCK_TIMEOUT}'"))
        deleted = b.execute(text(
            "DELETE FROM incident_heat_rollup h USING (SELECT cell_m, month, q, r FROM incident_heat_rollup "
            "WHERE cell_m = ANY(:sizes) LIMIT :chunk) d "
            "WHERE (h.cell_m, h.month, h.q, h.r) = (d.cell_m, d.month, d.q, d.r)"),
            {"sizes": sizes, "chunk": RETIRE_CHUNK}).rowcount
        b.commit()
        if deleted < RETIRE_CHUNK:
            return


def _register(b: Connection, want: dict, retired: list[float]) -> bool:
    """Register the size as building at a moment no incident write is in flight (NOWAIT); False if none came."""
    for attempt in range(REGISTER_ATTEMPTS):
        b.execute(text(f"SET LOCAL lock_timeout = '{BUILD_LOCK_TIMEOUT}'"))
        try:
            b.execute(text("LOCK TABLE incidents IN SHARE MODE NOWAIT"))
        except DBAPIError as exc:
            b.rollback()
            if _sqlstate(exc) != "55P03":
                raise
            time.sleep(0.02 * (attempt + 1))  # a write is in flight: writes are short, try again in a moment
            continue
        # only sizes still retired: another builder may have registered one of them again meanwhile
        b.execute(text("DELETE FROM incident_heat_sizes WHERE cell_m = ANY(:sizes) AND built_at = '-infinity'"),
                  {"sizes": retired})
        b.execute(text("INSERT INTO incident_heat_sizes (cell_m, lon0, lat0, kx, ky, k, built_at) "
                       "VALUES (:cell_m, :lon0, :lat0, :kx, :ky, :k, 'infinity')"), want)
        b.commit()
        return True
    return False


def _count(b: Connection, frame: LocalFrame, size: float) -> bool:
    """Add base(X) − (increments in X) to every cell of the size, from one snapshot X, and mark the size built."""
    x, y = frame.forward_sql("i.lon", "i.lat")
    q, r = hex_axial_sql(x, y, size)
    b.execute(text("SET LOCAL jit = off"))  # compiling these expressions costs more than it saves
    b.execute(text(f"SET LOCAL lock_timeout = '{BUILD_LOCK_TIMEOUT}'"))
    b.execute(text(f"""
        INSERT INTO incident_heat_rollup AS h (cell_m, month, q, r, n)
        SELECT :cell_m, month, q, r, sum(n) FROM (
            SELECT month, q, r, count(*) AS n FROM (
                SELECT date_trunc('month', i.reported_at, incident_rollup_tz()) AS month, {q} AS q, {r} AS r
                FROM incidents i WHERE i.reported_at IS NOT NULL AND i.lon IS NOT NULL) p
            GROUP BY month, q, r
            UNION ALL
            SELECT month, q, r, -n FROM incident_heat_rollup WHERE cell_m = :cell_m) d
        GROUP BY month, q, r HAVING sum(n) <> 0
        ORDER BY month, q, r  -- the order every writer's trigger locks cells in
        ON CONFLICT (cell_m, month, q, r) DO UPDATE SET n = h.n + EXCLUDED.n"""), {"cell_m": float(size)})
    built = b.execute(text("UPDATE incident_heat_sizes SET built_at = now() WHERE cell_m = :cell_m "
                           "AND built_at = 'infinity' RETURNING cell_m"), {"cell_m": float(size)}).first()
    b.commit()
    return built is not None
