"""Per-community serialisation of everything that writes grid, micro-grid or community boundaries.

Publish (geo.plans.publish), rollback and boundary imports (geo.io.importer) each check the boundaries in force and then
end and start boundary rows; two of them in the same community at once could each pass its check against the
other's old state (a publish overwriting an import committed in between). They all take the same transaction-scoped
advisory lock per community, through `lock_communities`, before reading the boundaries they check or end:
under READ COMMITTED every statement after the lock then sees what the previous holder committed (other isolation
levels are refused: their snapshot may predate the lock).

Locks are taken in ascending community id, so writers touching several communities (street plans, street
rollbacks, imports of many grids) cannot deadlock each other. They are held until the transaction ends (a
savepoint's rollback does not release them).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, text

#: The advisory lock's first key (hashtext of this); the second is the community id.
LOCK_NAME = "gridatlas.publish"


def lock_communities(conn: Connection, community_ids: Iterable[int | None]) -> list[int]:
    """Take the per-community boundary-writer lock of every community (ascending id; None ignored), waiting for
    any transaction holding one of them; returns the ids locked."""
    ids = sorted({int(c) for c in community_ids if c is not None})
    for cid in ids:
        level = conn.execute(text("SELECT current_setting('transaction_isolation'), "
                                  "pg_advisory_xact_lock(hashtext(:n), CAST(:c AS integer))"),
                             {"n": LOCK_NAME, "c": cid}).one()[0]
        if level != "read committed":
            # a snapshot taken before the lock was granted would hide what the previous holder committed
            raise RuntimeError(f"boundary writers need READ COMMITTED transactions, not {level.upper()}")
    return ids


__all__ = ["LOCK_NAME", "lock_communities"]
