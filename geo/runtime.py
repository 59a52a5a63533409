"""Process-level helpers for hot paths: pausing Python's cyclic garbage collector around bulk allocation."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while the block runs (re-entrant and thread-safe).

    Hot paths here allocate 10^5–10^6 short-lived, acyclic objects (shapely points while building the locate index,
    parsed batch rows, KPI group rows); each allocation burst would otherwise trigger collections that walk every
    live object of the process again and again. The collector resumes when the last paused block ends, and only if
    it was running when the first began.
    """
    global _holders, _was_enabled
    with _lock:
        if _holders == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _was_enabled:
                gc.enable()
