"""Reusing coverage reports (覆盖报表缓存) until the data under them changes, in every process.

A `ChangeWatch` per database LISTENs for the change notifications the triggers of migration 0013 send when a write
to boundaries, compounds, buildings, people or staff assignments commits (whoever wrote), and counts them: its
`generation`. Hearing is asynchronous, so before trusting the count `sync` sends a notification of its own on a
second channel and waits until the listener has it: the queue is in commit order, so every change committed before
the call has then been counted. A report stored with generation g is returned only while the generation is still
g; a transaction that has written, or reads at REPEATABLE READ (its snapshot may predate the count), is never
served nor stored. Units change only with their buildings (imports and loads), which notify.

`ReportCache` keeps the reports, bounded by the rows they hold; the watch thread ends after a minute unused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, text

log = logging.getLogger("gridatlas.coverage")
T = TypeVar("T")

CHANGE_CHANNEL = "gridatlas_changes"  # sent by the triggers of migration 0013
SYNC_CHANNEL = "gridatlas_coverage_sync"


class ChangeWatch:
    """Counts the database's change notifications on a connection of its own (a daemon thread)."""

    def __init__(self, url: str, *, idle_seconds: float = 60.0, sync_timeout: float = 1.0) -> None:
        self.url = url
        self.idle_seconds = idle_seconds
        self.sync_timeout = sync_timeout
        self.generation = 0
        self._token = uuid.uuid4().hex[:12]
        self._nonce = 0
        self._seen = 0
        self._listening = False
        self._used = time.monotonic()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._sender: Any = None
        self._thread = threading.Thread(target=self._run, name="coverage-change-watch", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the thread still runs (it ends when unused for `idle_seconds`)."""
        return self._thread.is_alive()

    def wait_listening(self, timeout: float) -> bool:
        """Wait (bounded) until the LISTEN is established."""
        with self._cond:
            return self._cond.wait_for(lambda: self._listening, timeout)

    def _idle(self) -> bool:
        return time.monotonic() - self._used > self.idle_seconds

    def _run(self) -> None:
        import psycopg

        # One connection for the thread's life: once it is lost (a restart, a dropped database) the thread ends
        # and the next use starts a new watch, whose generations never equal this one's.
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                conn.execute(f"LISTEN {SYNC_CHANNEL}")
                with self._cond:
                    self._listening = True
                    self._cond.notify_all()
                while not self._idle():
                    for note in conn.notifies(timeout=1.0):
                        with self._cond:
                            if note.channel == SYNC_CHANNEL:
                                token, _, n = note.payload.partition(":")
                                if token == self._token:
                                    self._seen = max(self._seen, int(n))
                            else:
                                self.generation += 1
                            self._cond.notify_all()
        except Exception as exc:
            log.info("coverage change watch stopped: %s", exc)
        finally:
            with self._cond:
                self._listening = False
                self.generation += 1
                self._cond.notify_all()
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None

    def sync(self) -> tuple[str, int] | None:
        """(watch, generation) once every change committed before this call has been heard (a watch started anew
        never repeats one); None when not listening or the listener did not answer in time (trust nothing then)."""
        import psycopg

        self._used = time.monotonic()
        with self._cond:
            if not self._listening:
                return None
        try:
            with self._send_lock:
                self._nonce += 1
                n = self._nonce
                if self._sender is None or self._sender.closed:
                    self._sender = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    # a notification needs a commit; this one needs no disk flush (the queue keeps commit order)
                    self._sender.execute("SET synchronous_commit = off")
                self._sender.execute("SELECT pg_notify(%s, %s)", (SYNC_CHANNEL, f"{self._token}:{n}"))
        except psycopg.Error:
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: self._seen >= n or not self._listening, self.sync_timeout):
                return None
            return (self._token, self.generation) if self._listening else None


_WATCHES: dict[str, ChangeWatch] = {}
_WATCHES_LOCK = threading.Lock()


def watch_for(conn: Connection) -> ChangeWatch | None:
    """The change watch of `conn`'s database (started on first use; None for a database that is not PostgreSQL)."""
    if conn.engine.dialect.name != "postgresql":
        return None
    from geo.store import db

    # the server itself when the engine goes through a transaction-mode pooler (LISTEN needs a session of its own)
    direct = getattr(db, "listen_url", None)
    url = direct(conn.engine) if direct else conn.engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False)
    with _WATCHES_LOCK:
        watch = _WATCHES.get(url)
        if watch is None or not watch.alive:
            watch = _WATCHES[url] = ChangeWatch(url)
            watch.wait_listening(2.0)
    return watch


def reusable(conn: Connection) -> bool:
    """Whether this transaction reads what is committed now (READ COMMITTED) on the primary (a standby can neither
    LISTEN nor be trusted to have replayed what the watch heard) and has written nothing."""
    row = conn.execute(text("SELECT current_setting('transaction_isolation') = 'read committed', "
                            "pg_current_xact_id_if_assigned() IS NULL AND NOT pg_is_in_recovery()")).one()
    return bool(row[0] and row[1])


class ReportCache:
    """Reports by key, each with the generation it was read at; bounded by rows, least recently used out."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self._entries: OrderedDict[tuple, tuple[Any, Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, generation: Any) -> Any:
        """The value stored under `key` at `generation`, else None (an entry of another generation is dropped)."""
        with self._lock:
            entry = self._entries.get(key) if generation is not None else None
            if entry is None or entry[0] != generation:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: tuple, generation: Any, value: Any, rows: int) -> None:
        """Keep `value` (holding `rows` rows), read at `generation`; older generations and the least recently used
        beyond the row budget go; a value larger than the whole budget is not kept."""
        if rows > self.max_rows:
            return
        with self._lock:
            for k in [k for k, e in self._entries.items() if e[0] != generation]:
                del self._entries[k]
            self._entries[key] = (generation, value, rows)
            total = sum(e[2] for e in self._entries.values())
            while total > self.max_rows:
                _, (_, _, r) = self._entries.popitem(last=False)
                total -= r

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: Other pages' assembled data (the classification map's), reused on the same terms as the coverage views.
PAGE_VIEWS = ReportCache(max_rows=200_000)


def cached_page(conn: Connection, key: tuple, build: Callable[[], T], rows: Callable[[T], int]) -> T:
    """`build()` reused while `key` is the same and no write the change notifications announce (boundaries,
    compounds, buildings, people, assignments) has committed since; `rows(value)` is its weight in the budget. A
    transaction that has written, or reads an older snapshot, neither reuses nor stores."""
    watch = watch_for(conn) if PAGE_VIEWS.max_rows and reusable(conn) else None
    generation = watch.sync() if watch is not None else None
    full = (conn.engine.url.render_as_string(hide_password=True), *key)
    found = PAGE_VIEWS.get(full, generation)
    if found is not None:
        return found
    value = build()
    if generation is not None:
        PAGE_VIEWS.put(full, generation, value, rows(value))
    return value
