"""The process's cache of finished vector tiles (瓦片缓存), and the boundary versions they are cut at, in memory.

A tile is kept already compressed (gzip from `GZIP_FROM` bytes), under everything that decides its bytes: layer,
z/x/y, the caller's jurisdiction (None: the whole district), the boundary version in force at the time asked (now,
`at` or `datetime`) and the time itself (for now, the local day: staffing is dated), and the generation of
change notifications heard. The versions (id, valid_from) are held in memory, so a cached tile costs no database
round trip; `ChangeListener` (the locate index's listener on the notifications of migration 0013, reused here)
bumps the generation on every boundary, compound, building or staff write committed by anyone, and the writing
process bumps it itself as its session commits (`tiles_changed`), so an edit, publish or import makes every older
tile unreachable at once. The cache is bounded in bytes (settings ``tile_cache_mb``), least recently used first out.

What no notification covers is bounded in time instead, by `MAX_AGE_S`, the minute browsers are already allowed
to keep a tile (``Cache-Control: max-age``): compound and building tiles (`UNNOTIFIED_LAYERS`: a compound's stored
class comes from a classification run, a building's households from its units, written without a notification),
every tile read from a standby (it lags the primary that notifies), and the list of versions. Street, community,
grid and micro-grid tiles read from the primary stay until a change is heard or the byte bound evicts them.
Incident tiles are never cached: every report and every state change alters them, their deadline lights change
with the clock, and no notification says so (`UNCACHED_LAYERS`).
"""

from __future__ import annotations

import bisect
import datetime as dt
import gzip
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine

from geo.features import tiles as ft
from geo.features.collections import When

if TYPE_CHECKING:
    from geo.locate.holder import IndexHolder

#: How long (s) an entry or the list of versions is kept at most: what browsers may keep a tile (max-age).
MAX_AGE_S = 60.0
#: Tiles this small gain nothing from gzip: kept (and sent) as they are.
GZIP_FROM = 512
GZIP_LEVEL = 6
#: Layers whose tiles change without a change notification or a boundary version: cut on every request.
UNCACHED_LAYERS = frozenset({"incidents"})
#: Layers whose tiles carry something written without a notification: kept `MAX_AGE_S` at most.
UNNOTIFIED_LAYERS = frozenset({"compounds", "buildings"})
#: Bytes an entry costs besides its body (key, record, the LRU's links), for the byte bound.
ENTRY_OVERHEAD = 400

ListenConnector = Callable[[], AbstractContextManager[Any]]
_CACHES: weakref.WeakSet[TileCache] = weakref.WeakSet()


@dataclass(frozen=True)
class CachedTile:
    """A finished tile: its body (gzip-compressed when `gzipped`), fingerprint, boundary version, size uncompressed."""

    body: bytes
    gzipped: bool
    stamp: str
    version_id: int | None
    size: int
    expires: float

    def plain(self) -> bytes:
        """The MVT bytes uncompressed (for a client that does not accept gzip)."""
        return gzip.decompress(self.body) if self.gzipped else self.body

    @property
    def empty(self) -> bool:
        return self.size == 0


def finish(tile: ft.Tile, ttl_s: float = math.inf) -> CachedTile:
    """A cut tile made ready to send and keep (`ttl_s` seconds at most): gzip-compressed from `GZIP_FROM` bytes."""
    data = tile.data
    zipped = len(data) >= GZIP_FROM
    body = gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0) if zipped else data
    return CachedTile(body, zipped, tile.stamp, tile.version_id, len(data), time.monotonic() + ttl_s)


class TileCache:
    """Finished tiles by key, least recently used evicted past `max_bytes`; the boundary versions in memory."""

    def __init__(self, max_bytes: int, *, listen: ListenConnector | None = None, max_age_s: float = MAX_AGE_S,
                 tz: str = "Asia/Shanghai"):
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.tz = ZoneInfo(tz)
        self._entries: OrderedDict[tuple, CachedTile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: Bumped by every change heard; a key holds the generation its tile was read under.
        self.generation = 0
        # The versions as (valid_from ascending, ids), the generation they were read at, when they go stale.
        self._starts: list[dt.datetime] = []
        self._ids: list[int] = []
        self._versions_generation = -1
        self._versions_until = -1.0
        self._listen = listen
        self._listener: Any = None
        self._listener_lock = threading.Lock()
        self.hits = self.misses = 0
        _CACHES.add(self)

    @classmethod
    def for_engine(cls, engine: Engine, max_bytes: int, **kw: Any) -> TileCache:
        """A cache hearing the change notifications of `engine`'s database (the primary itself, past a pooler)."""
        if engine.dialect.name == "postgresql" and "listen" not in kw:
            import psycopg

            from geo.store.db import listen_url

            plain = listen_url(engine)
            kw["listen"] = lambda: psycopg.connect(plain, autocommit=True, connect_timeout=5)
        return cls(max_bytes, **kw)

    # -- change notifications (the duck type ChangeListener delivers to)

    def boundaries_changed(self) -> None:
        """Boundaries, compounds or buildings changed and are committed: every cached tile is out of date."""
        with self._lock:
            self.generation += 1
            self._entries.clear()
            self._bytes = 0

    def invalidate_staff(self) -> None:
        """Staff changed: grid tiles carry staffing, so every cached tile is out of date."""
        self.boundaries_changed()

    def start_listening(self) -> None:
        """LISTEN for the database's change notifications (once; before the versions are first read, so no commit
        after that read goes unheard)."""
        if self._listen is None or self._listener is not None:
            return
        with self._listener_lock:
            if self._listener is None:
                from geo.locate.holder import ChangeListener

                # ChangeListener calls only boundaries_changed and invalidate_staff on its target, as here
                listener = ChangeListener(cast("IndexHolder", self), self._listen)
                listener.start()
                self._listener = listener

    def heard_since(self, since: float, timeout: float) -> bool:
        """Whether the listener heard a boundary notification after monotonic time `since` (waiting up to
        `timeout` s); False without a listener."""
        return self._listener is not None and self._listener.heard_since(since, timeout)

    def close(self) -> None:
        """Stop listening (the cache stays usable, bounded by `max_age_s`)."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None

    # -- versions

    @property
    def versions_current(self) -> bool:
        """Whether the versions in memory were read after the latest change heard, and recently enough."""
        return self._versions_generation == self.generation and time.monotonic() < self._versions_until

    def load_versions(self, conn: Connection) -> None:
        """Read the boundary versions (one query)."""
        from geo.locate.holder import boundary_versions

        self.start_listening()
        generation = self.generation  # read before the query: a change heard meanwhile leaves them stale
        rows = boundary_versions(conn)
        with self._lock:
            self._starts = [r["valid_from"] for r in rows]
            self._ids = [int(r["id"]) for r in rows]
            self._versions_generation = generation
            self._versions_until = time.monotonic() + self.max_age_s

    def version_at(self, ts: dt.datetime | None) -> int | None:
        """The id of the boundary version in force at `ts` (now when None), from memory (`load_versions` first)."""
        i = bisect.bisect_right(self._starts, ts or dt.datetime.now(dt.UTC)) - 1
        return self._ids[i] if i >= 0 else None

    # -- tiles

    def key(self, layer: str, z: int, x: int, y: int, when: When, scope: str | None) -> tuple | None:
        """The key of a tile, or None when it must be read from the database: an uncached layer, or versions not
        current."""
        if layer in UNCACHED_LAYERS or not self.max_bytes or not self.versions_current:
            return None
        # now: the day too, for what is dated (staffing); an explicit time is part of the key as it is
        moment: object = when if (when.instant or when.interval) else dt.datetime.now(self.tz).date()
        return (layer, z, x, y, scope, moment, self.version_at(when.reference), self._versions_generation)

    def get(self, key: tuple | None) -> CachedTile | None:
        """The finished tile under `key` while fresh, else None."""
        if key is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() < entry.expires:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None

    def put(self, key: tuple, entry: CachedTile) -> None:
        """Keep `entry` under `key` (unless a change was heard since the key was made), evicting the least recently
        used past the byte bound."""
        cost = len(entry.body) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return
        with self._lock:
            if key[-1] != self.generation:
                return
            if key in self._entries:
                self._drop(key)
            self._entries[key] = entry
            self._bytes += cost
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key)
        self._bytes -= len(entry.body) + ENTRY_OVERHEAD

    def tile(self, conn: Connection, layer: str, z: int, x: int, y: int, when: When, scope: str | None,
             tz: str = "Asia/Shanghai", standby: bool = False) -> CachedTile:
        """The tile from the cache, else cut on `conn` (at the version held in memory) and kept; `standby`: `conn`
        reads a standby, so the tile is kept `max_age_s` at most."""
        if not self.versions_current:
            self.load_versions(conn)
        key = self.key(layer, z, x, y, when, scope)
        found = self.get(key)
        if found is not None:
            return found
        ttl = self.max_age_s if standby or layer in UNNOTIFIED_LAYERS else math.inf
        entry = finish(ft.tile(conn, layer, z, x, y, when, scope, tz, version_at=self.version_at), ttl)
        if key is not None:
            self.put(key, entry)
        return entry

    @property
    def size_bytes(self) -> int:
        """Bytes held (bodies and overhead)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)


def tiles_changed() -> None:
    """Every tile cache of this process forgets its tiles: call after a commit that changed what tiles show (the
    database's notification tells other processes)."""
    for cache in list(_CACHES):
        cache.boundaries_changed()
