"""At most the pool's capacity of requests run in the app at once; the rest wait without holding anything.

Without the limit, 64 concurrent incident writes stalled completely (every worker thread waiting for a pool
connection held by a request waiting for a thread); `bench/bench_load.py` shows the throughput with it.
"""

from __future__ import annotations

import asyncio
import threading

from api.concurrency import ConcurrencyLimitMiddleware, pool_capacity


def _run(coroutine) -> None:
    """Run `coroutine` on a loop of its own, in a thread (browser tests leave a loop running in this one)."""
    errors: list[BaseException] = []

    def target():
        try:
            asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def test_no_more_requests_in_the_app_than_the_limit():
    inside, peak = 0, 0

    async def app(scope, receive, send):
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0)  # let every waiting request try to enter
        await asyncio.sleep(0)
        inside -= 1

    limited = ConcurrencyLimitMiddleware(app, limit=3)

    async def main():
        await asyncio.gather(*(limited({"type": "http", "path": f"/v1/x{i}"}, None, None) for i in range(20)))

    _run(main())
    assert peak == 3 and inside == 0


def test_liveness_is_never_queued():
    async def app(scope, receive, send):
        scope["seen"] = True

    limited = ConcurrencyLimitMiddleware(app, limit=1)
    scope = {"type": "http", "path": "/healthz"}
    _run(limited(scope, None, None))
    assert scope["seen"] and limited._semaphore is None


def test_the_limit_is_the_pool_capacity(engine):
    assert pool_capacity(engine) == engine.pool.size() + engine.pool._max_overflow
    assert pool_capacity(object()) == 20
