"""The locate index holder (索引持有者): the index of the boundaries in force now (and a few past ones for ``at=``),
swapped in with one reference assignment, so a reader never sees a half-built index.

A boundary change reaches the index incrementally (增量更新): the new `boundary_versions` rows say which units
changed (rows of those versions, rows they ended), only those units are read, and `geo.locate.index.patch_index`
makes a new index sharing everything else (a pass over the changed levels' cell arrays, no polygon of an
unchanged unit touched: a small fraction of a full build; `scripts/bench locate`). A change without a new version (psql,
compounds or buildings), dated in the past, or touching more than `max_patch_units` units (a large import) is a
full rebuild in a background thread, the previous index answering meanwhile; every answer names the boundary
version of the grid that answered it (`LocateIndex.version_of`).

`IndexHolder` hears of changes from the database itself (`ChangeListener`: ``LISTEN`` on the notifications the
triggers of migration 0013 send at commit, whoever wrote), from `notify_boundaries_changed` in this process, and,
as a last resort, from a cheap fingerprint poll. The process that writes does not wait for any of these:
`apply_after_commit` (called by publish, rollback and boundary imports) applies the change to this process's
holders as the writer's session commits, before its request answers. A lookup waits for a change heard from
elsewhere at most ``locate_stale_wait_s`` (settings; none by default). It also keeps the staff directory
(`geo.locate.directory`).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.orm import Session

from geo.errors import DomainError
from geo.locate.directory import StaffDirectory
from geo.locate.index import BOUNDARY_TABLES, LocateIndex, patch_index, read_units
from geo.locate.raster import DEFAULT_MAX_CELLS

log = logging.getLogger("gridatlas.locate")

#: Units (all levels) a change may touch and still be patched in; more is a full rebuild in the background.
MAX_PATCH_UNITS = 2000
#: How long the writer's own notification (`notify_boundaries_changed`) waits for the rebuild it caused.
WRITER_WAIT_SECONDS = 60.0

def change_points(conn: Connection) -> list[dt.datetime]:
    """Every instant at which some boundary starts or ends, ascending: between two of them the set is constant."""
    parts = " UNION ".join(f"SELECT valid_from AS t FROM {t} UNION SELECT valid_to FROM {t}"
                           for t, _, _ in BOUNDARY_TABLES.values())
    return list(conn.execute(text(f"SELECT DISTINCT t FROM ({parts}) s WHERE t IS NOT NULL ORDER BY t")).scalars())


def boundary_versions(conn: Connection) -> list[dict]:
    """Every boundary version (id, valid_from, label), ascending."""
    rows = conn.execute(text("SELECT id, valid_from, label FROM boundary_versions ORDER BY valid_from")).mappings()
    return [dict(r) for r in rows]


def fingerprint(conn: Connection) -> str:
    """A cheap summary that changes when boundaries, compounds or buildings are added, ended or removed."""
    parts = [f"(SELECT count(*) || ':' || coalesce(max(id), 0) || ':' || count(valid_to) FROM {t})"
             for t, _, _ in BOUNDARY_TABLES.values()]
    parts += [f"(SELECT count(*) || ':' || coalesce(max(id), 0) FROM {t})"
              for t in ("compounds", "buildings", "boundary_versions")]
    return conn.execute(text(f"SELECT concat_ws('|', {', '.join(parts)})")).scalar_one()


@dataclass
class Delta:
    """What changed since a state was read: new versions, the units they touched per level, new change points."""

    fingerprint: str
    versions: list[dict] = field(default_factory=list)
    touched: dict[str, list[int]] = field(default_factory=dict)
    points: list[dt.datetime] = field(default_factory=list)


#: Fingerprint parts (see `fingerprint`) of what no boundary version records: compounds, buildings.
_UNVERSIONED_PARTS = slice(len(BOUNDARY_TABLES), len(BOUNDARY_TABLES) + 2)


def read_delta(conn: Connection, state: _State, max_units: int) -> Delta | None:
    """The boundary changes committed since `state` was read (only the changed rows), or None when they cannot be
    patched in: a version removed, dated in the past or future, boundaries changed without a new version,
    compounds or buildings changed, or more than `max_units` units touched."""
    until = state.index.valid_until
    if until is not None and dt.datetime.now(dt.UTC) >= until:
        return None  # a version dated ahead has come into force: build the new interval whole
    fp = fingerprint(conn)
    if fp == state.fingerprint:
        return Delta(fp)
    if fp.split("|")[_UNVERSIONED_PARTS] != state.fingerprint.split("|")[_UNVERSIONED_PARTS]:
        return None
    known = [int(v["id"]) for v in state.versions]
    # one round trip: the versions not known yet, how many known ones are still there, the snapshot's time
    rows = conn.execute(text("""
        SELECT v.id, v.valid_from, v.label, k.n, now() AS now
        FROM (SELECT count(*) AS n FROM boundary_versions WHERE id = ANY(:k)) k
        LEFT JOIN boundary_versions v ON NOT (v.id = ANY(:k)) ORDER BY v.valid_from
    """), {"k": known}).mappings().all()
    if rows[0]["n"] != len(known):
        return None
    now = rows[0]["now"]
    versions = [{k: r[k] for k in ("id", "valid_from", "label")} for r in rows if r["id"] is not None]
    latest = state.change_points[-1] if state.change_points else None
    if (not versions or state.index.valid_until is not None
            or any(v["valid_from"] > now or (latest is not None and v["valid_from"] < latest) for v in versions)):
        return None
    ids, starts = [v["id"] for v in versions], [v["valid_from"] for v in versions]
    touched: dict[str, list[int]] = {}
    points: set[dt.datetime] = set(starts)
    union = " UNION ALL ".join(f"SELECT '{key}' AS level, {fk} AS unit, valid_from, valid_to FROM {table} "
                               "WHERE version_id = ANY(:v) OR valid_to = ANY(:t)"
                               for key, (table, fk, _) in BOUNDARY_TABLES.items())
    for level, unit, start, end in conn.execute(text(union), {"v": ids, "t": starts}).all():
        touched.setdefault(level, []).append(int(unit))
        points |= {t for t in (start, end) if t is not None}
    touched = {level: sorted(set(units)) for level, units in touched.items()}
    if sum(len(v) for v in touched.values()) > max_units or any(t > now for t in points):
        return None
    return Delta(fp, versions, touched, sorted(points))


class IndexUnavailable(DomainError):
    """The locate index cannot be built now (the database is down, not migrated or not loaded)."""

    slug = "locate-index-unavailable"
    kind = "unavailable"
    title = "Service not ready"


# ---------------------------------------------------------------------------------------------- the holder

Connector = Callable[[], AbstractContextManager[Connection]]
#: Opens the connection a ChangeListener LISTENs on (a psycopg connection in autocommit mode).
ListenConnector = Callable[[], AbstractContextManager[Any]]
_HOLDERS: weakref.WeakSet = weakref.WeakSet()


@dataclass
class _State:
    """An immutable snapshot: what the current index was built from; replaced whole, never mutated."""

    index: LocateIndex
    key: dt.datetime | None
    change_points: list[dt.datetime]
    versions: list[dict]
    fingerprint: str
    generation: int = 0
    cache: OrderedDict = field(default_factory=OrderedDict)


def _key_for(points: list[dt.datetime], ts: dt.datetime) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The change point starting the interval holding `ts` (None before the first) and the next one."""
    i = bisect.bisect_right(points, ts) - 1
    return (points[i] if i >= 0 else None), (points[i + 1] if i + 1 < len(points) else None)


class IndexHolder:
    """Owns the current LocateIndex (and a few for past dates); rebuilds in the background and swaps atomically."""

    def __init__(self, connect: Connector, *, cache_size: int = 4, poll_seconds: float | None = 30.0,
                 staff_ttl_seconds: float = 60.0, max_cells: int = DEFAULT_MAX_CELLS,
                 listen: ListenConnector | None = None, stale_wait_seconds: float | None = None,
                 max_patch_units: int = MAX_PATCH_UNITS):
        if stale_wait_seconds is None:
            from geo.settings import get_settings

            stale_wait_seconds = get_settings().locate_stale_wait_s
        self._connect = connect
        self.stale_wait_seconds = stale_wait_seconds
        self.max_patch_units = max_patch_units
        # Held while the state is read and replaced by a patch (milliseconds), never during a full build.
        self._update_lock = threading.Lock()
        #: Changes patched in (`swaps`: full builds swapped in); counters for tests and the benchmark.
        self.patches = 0
        # When the latest change was heard: lookups wait for its rebuild until stale_wait_seconds after it, not more.
        self._changed_at = -math.inf
        self._listen = listen
        self._listener: ChangeListener | None = None
        # Bumped by every change notification; a snapshot built from an older generation may be out of date.
        self._generation = 0
        self.cache_size = cache_size
        self.poll_seconds = poll_seconds
        self.staff_ttl_seconds = staff_ttl_seconds
        self.max_cells = max_cells
        self._state: _State | None = None
        self._build_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._key_locks: dict = {}
        self._cond = threading.Condition()
        self._requested = 0
        self._completed = 0
        self._full_requested = False
        self._refresh_thread: threading.Thread | None = None
        self._next_poll = time.monotonic() + (poll_seconds or 0)
        self._staff: StaffDirectory | None = None
        self._staff_lock = threading.Lock()
        self._staff_loading = False
        self.swaps = 0
        _HOLDERS.add(self)

    @classmethod
    def for_engine(cls, engine: Engine, **kw: Any) -> IndexHolder:
        """A holder reading through `engine`, each build inside one REPEATABLE READ snapshot, listening for the
        database's change notifications (migration 0013) on a connection of its own."""
        if engine.dialect.name == "postgresql" and "listen" not in kw:
            import psycopg

            from geo.store.db import listen_url

            plain = listen_url(engine)  # the server itself when the engine goes through PgBouncer
            kw["listen"] = lambda: psycopg.connect(plain, autocommit=True, connect_timeout=5)
        return cls(lambda: engine.connect().execution_options(isolation_level="REPEATABLE READ"), **kw)

    # -- building

    def _build_state(self) -> _State:
        generation = self._generation  # read before the snapshot: a change committed after it bumps it again
        with self._connect() as conn:
            fp = fingerprint(conn)
            points = change_points(conn)
            versions = boundary_versions(conn)
            now = dt.datetime.now(dt.UTC)
            key, until = _key_for(points, now)
            index = LocateIndex.from_db(conn, key or now, valid_from=key, valid_until=until,
                                        max_cells=self.max_cells)
        log.info("locate index built in %.2f s: %s", index.build_seconds, index.summary()["units"])
        return _State(index, key, points, versions, fp, generation)

    def _patched_state(self, state: _State, generation: int) -> _State | None:
        """`state` with every boundary change committed since it was read patched in (the same state when none),
        or None when the change needs a full rebuild (see the module's docstring)."""
        with self._connect() as conn:
            delta = read_delta(conn, state, self.max_patch_units)
            if delta is None:
                return None
            if not delta.touched:
                return dataclasses.replace(state, fingerprint=delta.fingerprint, generation=generation)
            frames = {key: read_units(conn, key, None, ids) for key, ids in delta.touched.items()}
        points = sorted(set(state.change_points) | set(delta.points))
        now = dt.datetime.now(dt.UTC)
        key, until = _key_for(points, now)
        index = patch_index(state.index, frames, delta.touched, versions={v["id"]: v for v in delta.versions},
                            valid_from=key, valid_until=until, max_cells=self.max_cells)
        log.info("locate index patched in %.3f s: %s", index.build_seconds,
                 {k: len(v) for k, v in delta.touched.items()})
        versions = sorted(state.versions + delta.versions, key=lambda v: v["valid_from"])
        return _State(index, key, points, versions, delta.fingerprint, generation, state.cache)

    def catch_up(self) -> bool:
        """Patch the changes committed since the index in service was read into it, now, in this thread (the
        writer's own process, right after its commit); whether that was possible (else a full rebuild is started
        in the background and the previous index answers meanwhile)."""
        if self._state is None:
            return True  # the first lookup builds from the database as it is then
        generation = self._generation
        try:
            with self._update_lock:
                state = self._state
                new = self._patched_state(state, max(generation, state.generation))
                if new is not None:
                    self.patches += new.index is not state.index
                    self._state = new
        except Exception:
            log.exception("patching the locate index failed; rebuilding it in the background")
            new = None
        if new is None:
            self.boundaries_changed()
            return False
        with self._cond:
            self._cond.notify_all()
        return True

    def _state_now(self) -> _State:
        state = self._state
        if state is None:
            with self._build_lock:
                if self._state is None:
                    self._start_listening()  # before the first snapshot, so no commit after it goes unheard
                    self._state = self._build_state()
                    self.swaps += 1
                state = self._state
        return state

    @property
    def ready(self) -> bool:
        """Whether an index is built (requests will not wait for a first build)."""
        return self._state is not None

    def _stale_wait(self) -> float:
        """Seconds a lookup may still wait for the rebuild under way (0 once the change is that old)."""
        return max(0.0, self._changed_at + self.stale_wait_seconds - time.monotonic())

    def peek(self) -> LocateIndex | None:
        """The current index when it is built and still in force, or stale but past its wait (no waiting, no
        database), else None."""
        state = self._state
        if state is None or (state.generation != self._generation and self._stale_wait() > 0):
            return None
        until = state.index.valid_until
        if until is not None and dt.datetime.now(dt.UTC) >= until:
            return None
        return state.index

    @property
    def staff_loaded(self) -> bool:
        """Whether the staff directory is in memory (using it will not wait for the database)."""
        return self._staff is not None

    def index_for(self, ts: dt.datetime | None = None) -> LocateIndex:
        """The index for the boundaries in force at `ts` (now when None); built on first use, cached. Raises
        `IndexUnavailable` when it cannot be built."""
        try:
            return self._index_for(ts)
        except DomainError:
            raise
        except Exception as exc:  # the database is down or not loaded: say so rather than fail obscurely
            raise IndexUnavailable(f"the locate index could not be built: {exc}") from exc

    def _rebuilt_since(self, generation: int) -> bool:
        state = self._state
        return (state is not None and state.generation >= generation) or self._refresh_thread is None

    @property
    def stale(self) -> bool:
        """Whether boundaries changed since the index in service was built (a rebuild is under way)."""
        state = self._state
        return state is not None and state.generation != self._generation

    def _index_for(self, ts: dt.datetime | None) -> LocateIndex:
        state = self._state_now()
        if state.generation != self._generation:
            # Boundaries changed since this snapshot: give the rebuild under way a moment (a small district's is done
            # by then), then answer from the previous index rather than hold the request for seconds; its answers
            # carry their grids' versions (a failed rebuild leaves the old one in service).
            with self._cond:
                generation = self._generation
                self._cond.wait_for(lambda: self._rebuilt_since(generation), self._stale_wait())
            state = self._state_now()
        self._maybe_poll()
        now = dt.datetime.now(dt.UTC)
        key, _ = _key_for(state.change_points, ts or now)
        if key == state.key:
            return state.index
        if ts is None:
            # A version dated in the future has come into force since the last build: rebuild (once), and wait for
            # it as after a change heard.
            with self._cond:
                if self._refresh_thread is None:
                    self._changed_at = time.monotonic()
                    self._request_locked()
                ticket = self._requested
                self._cond.wait_for(lambda: self._completed >= ticket, self._stale_wait())
            return self._state_now().index
        return self._past_index(state, key, ts)

    def _past_index(self, state: _State, key: dt.datetime | None, ts: dt.datetime) -> LocateIndex:
        with self._cache_lock:
            if key in state.cache:
                state.cache.move_to_end(key)
                return state.cache[key]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._cache_lock:
                if key in state.cache:
                    return state.cache[key]
            _, until = _key_for(state.change_points, ts)
            with self._connect() as conn:
                index = LocateIndex.from_db(conn, key or ts, valid_from=key, valid_until=until,
                                            max_cells=self.max_cells)
            with self._cache_lock:
                state.cache[key] = index
                while len(state.cache) > self.cache_size:
                    state.cache.popitem(last=False)
                self._key_locks.pop(key, None)
            return index

    def version_at(self, ts: dt.datetime | None = None) -> dict | None:
        """The boundary version in force at `ts` (now when None), from the snapshot."""
        state = self._state_now()
        ts = ts or dt.datetime.now(dt.UTC)
        found = None
        for v in state.versions:
            if v["valid_from"] <= ts:
                found = v
            else:
                break
        return dict(found) if found else None

    # -- refreshing

    def refresh(self, wait: bool = False, timeout: float | None = None) -> None:
        """Rebuild the current index in a background thread and swap it in when complete; `wait` blocks until then
        (at most `timeout` seconds when given)."""
        with self._cond:
            self._full_requested = True
            ticket = self._request_locked()
            if wait:
                self._cond.wait_for(lambda: self._completed >= ticket, timeout)

    def _request_locked(self) -> int:
        self._requested += 1
        if self._refresh_thread is None:
            self._refresh_thread = threading.Thread(target=self._refresh_loop, name="locate-index-refresh",
                                                    daemon=True)
            self._refresh_thread.start()
        return self._requested

    def _refresh_loop(self) -> None:
        while True:
            with self._cond:
                target = self._requested
                generation = self._generation
                full, self._full_requested = self._full_requested, False
            try:
                self._update(generation, full)
            except Exception:  # keep serving the old index; the next poll or notify tries again
                log.exception("rebuilding the locate index failed; the previous index stays in service")
            with self._cond:
                self._completed = target
                self._cond.notify_all()
                if self._requested == target:
                    self._refresh_thread = None
                    return

    def _update(self, generation: int, full: bool = False) -> None:
        """Bring the index up to date: a patch when the change allows it (and no full build was asked for), else a
        full build (outside the lock, the previous index answering meanwhile) with whatever committed after its
        snapshot patched on top."""
        with self._update_lock:
            state = self._state
            new = self._patched_state(state, generation) if state is not None and not full else None
            if new is not None and state is not None:
                self.patches += new.index is not state.index
                self._state = new  # one reference assignment: readers see the old or the new snapshot, whole
                return
        built = self._build_state()
        with self._update_lock:
            newer = self._patched_state(built, built.generation)
            self._state = newer if newer is not None else built
            self.swaps += 1

    def _maybe_poll(self) -> None:
        if not self.poll_seconds or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + self.poll_seconds
        threading.Thread(target=self._poll, name="locate-index-poll", daemon=True).start()

    def _poll(self) -> None:
        try:
            with self._connect() as conn:
                fp = fingerprint(conn)
        except Exception:
            log.exception("locate index poll failed")
            return
        state = self._state
        if state is not None and fp != state.fingerprint:
            self.boundaries_changed()

    # -- staff

    def staff_directory(self) -> StaffDirectory:
        """The staff directory; reloaded in the background once older than the TTL."""
        directory = self._staff
        if directory is None:
            with self._staff_lock:
                if self._staff is None:
                    with self._connect() as conn:
                        self._staff = StaffDirectory.load(conn)
                directory = self._staff
        elif time.monotonic() - directory.loaded_at > self.staff_ttl_seconds and not self._staff_loading:
            self._staff_loading = True
            threading.Thread(target=self._reload_staff, name="locate-staff-reload", daemon=True).start()
        return directory

    def _reload_staff(self) -> None:
        try:
            with self._connect() as conn:
                self._staff = StaffDirectory.load(conn)
        except Exception:
            log.exception("reloading the staff directory failed")
        finally:
            self._staff_loading = False

    def invalidate_staff(self) -> None:
        """Forget the staff directory (it is read again on next use)."""
        self._staff = None

    # -- change notifications

    def wait_rebuilt(self, timeout: float | None = None) -> bool:
        """Wait (at most `timeout` seconds) until the index in service was built after every change heard so far;
        whether it was."""
        with self._cond:
            generation = self._generation
            return self._cond.wait_for(lambda: self._rebuilt_since(generation), timeout)

    def boundaries_changed(self) -> None:
        """Boundaries (or compounds, buildings) changed and are committed: stop answering from the old snapshot."""
        with self._cond:  # one step, so a reader never sees the new generation with no rebuild under way
            self._generation += 1
            self._changed_at = time.monotonic()
            self._request_locked()

    def _start_listening(self) -> None:
        if self._listen is not None and self._listener is None:
            self._listener = ChangeListener(self, self._listen)
            self._listener.start()

    def close(self) -> None:
        """Stop listening for change notifications (the index stays usable)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None


def notify_boundaries_changed(since: float | None = None, wait_seconds: float | None = WRITER_WAIT_SECONDS) -> None:
    """Tell every index holder in this process that boundaries changed (call after the commit), and wait (at most
    `wait_seconds`) until each has rebuilt: the writer (a publish's background task) pays for the rebuild, so the
    process's next lookup reads the write, while lookups meanwhile answer from the previous index.

    `since` is a `time.monotonic()` taken before the commit: a holder whose listener has heard the database's
    notification since then already knows (so no second rebuild); one that has not within a moment is told here.
    """
    holders = list(_HOLDERS)
    for holder in holders:
        listener = holder._listener
        if since is not None and listener is not None and listener.heard_since(since, timeout=2.0):
            continue
        holder.boundaries_changed()
    if wait_seconds:
        for holder in holders:
            holder.wait_rebuilt(wait_seconds)


CHANGE_CHANNEL = "gridatlas_changes"  # sent by the triggers of migration 0013


class ChangeListener:
    """A daemon thread LISTENing for the database's change notifications on behalf of one IndexHolder.

    Other processes (a second uvicorn worker, an import from the command line) write boundaries too; the triggers
    of migration 0013 notify on commit, and this thread turns `boundaries` into `IndexHolder.boundaries_changed`
    and `staff` into `invalidate_staff`. After a lost connection it reconnects and assumes it missed a change.
    """

    def __init__(self, holder: IndexHolder, connect: ListenConnector, *, wait_seconds: float = 5.0):
        self._holder = weakref.ref(holder)
        self._connect = connect
        self._stop = threading.Event()
        self._listening = threading.Event()
        self._wait = wait_seconds
        self._heard = threading.Condition()
        self._last_heard = -math.inf
        self._thread = threading.Thread(target=self._run, name="locate-change-listener", daemon=True)

    def start(self) -> None:
        """Start the thread and wait (bounded) until it is listening."""
        self._thread.start()
        if not self._listening.wait(self._wait):
            log.warning("not listening for change notifications yet; the fingerprint poll still applies")

    def stop(self) -> None:
        """Ask the thread to end (within about a second)."""
        self._stop.set()

    @property
    def listening(self) -> bool:
        """Whether the LISTEN is established."""
        return self._listening.is_set()

    def _run(self) -> None:
        first = True
        while not self._stop.is_set() and self._holder() is not None:
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    self._listening.set()
                    if not first:
                        self._deliver("boundaries")
                        self._deliver("staff")
                    first = False
                    while not self._stop.is_set() and self._holder() is not None:
                        for note in conn.notifies(timeout=1.0):
                            self._deliver(note.payload)
            except Exception:
                self._listening.clear()
                if self._stop.wait(2.0):
                    return
                log.warning("change listener lost its connection; reconnecting", exc_info=True)

    def heard_since(self, since: float, timeout: float) -> bool:
        """Whether a boundary notification arrived after monotonic time `since` (waiting up to `timeout` s)."""
        with self._heard:
            return self._heard.wait_for(lambda: self._last_heard >= since, timeout if self.listening else 0)

    def _deliver(self, payload: str) -> None:
        holder = self._holder()
        if holder is None:
            return
        if payload == "staff":
            holder.invalidate_staff()
            return
        holder.boundaries_changed()
        with self._heard:
            self._last_heard = time.monotonic()
            self._heard.notify_all()


# ------------------------------------------------------------------------- the writer's own process, at commit

#: `Connection.info` key: the session that began a transaction on the connection (see `_remember_session`).
_SESSION_KEY = "gridatlas.locate.session"
#: `Session.info` key: the transaction wrote boundaries; this process's holders apply them when it commits.
_PENDING_KEY = "gridatlas.locate.pending"


def apply_after_commit(conn: Connection) -> None:
    """Boundaries were written on `conn` (publish, rollback, import): when its session commits, this process's
    index holders patch the change in before the commit returns, so the writer's request answers only once its
    own process locates with the new boundaries (other processes hear the database's notification). On a
    connection no session began (a script's ``engine.begin()``), the notification alone tells them."""
    ref = conn.info.get(_SESSION_KEY)
    session = ref() if ref is not None else None
    if session is not None and session.in_transaction():
        session.info[_PENDING_KEY] = True


def apply_committed() -> None:
    """Patch the committed boundary changes into every index holder of this process (each in milliseconds; a
    change too large for a patch starts a background rebuild instead). Never raises: the write is committed."""
    for holder in list(_HOLDERS):
        try:
            holder.catch_up()
        except Exception:
            log.exception("applying a committed boundary change to the locate index failed")
    from geo.features.tile_cache import tiles_changed

    tiles_changed()  # the tiles cut from the old boundaries, too


@event.listens_for(Session, "after_begin")
def _remember_session(session: Session, transaction: Any, connection: Connection) -> None:
    connection.info[_SESSION_KEY] = weakref.ref(session)


@event.listens_for(Session, "after_commit")
def _apply_on_commit(session: Session) -> None:
    if session.info.pop(_PENDING_KEY, False):
        apply_committed()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def notify_staff_changed() -> None:
    """Tell every live index holder that staff assignments changed: the directory is read again on next use."""
    for holder in list(_HOLDERS):
        holder.invalidate_staff()

