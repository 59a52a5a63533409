"""All-or-nothing writes with a dry run (试运行): begin, do the work, keep it or roll it back.

Importers (boundaries, incidents) and the demo's removal share one shape: the caller's work runs in a transaction
of its own (given an engine) or a savepoint of the caller's transaction (given a connection); an exception rolls
it back and propagates; at the end a dry run rolls back what it did, otherwise it is committed (released). The
caller reports what was done (or would have been) from the work itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import Transaction


@contextmanager
def dry_run_transaction(target: Engine | Connection, dry_run: bool) -> Iterator[Connection]:
    """A transaction on an engine, or a savepoint inside the caller's; rolled back on error or when `dry_run`."""
    if isinstance(target, Engine):
        with target.connect() as conn, _kept_unless(conn.begin(), dry_run):
            yield conn
    else:
        with _kept_unless(target.begin_nested(), dry_run):
            yield target


@contextmanager
def _kept_unless(trans: Transaction, dry_run: bool) -> Iterator[None]:
    """Commit `trans` when the block ends normally and not `dry_run`; roll it back otherwise."""
    try:
        yield
    except BaseException:
        if trans.is_active:
            trans.rollback()
        raise
    if dry_run:
        trans.rollback()
    else:
        trans.commit()
