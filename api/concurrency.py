"""At most as many requests in the app at once as the database pool can serve: no pool deadlock under load.

A request's session takes a pool connection in its first dependency (authentication) and keeps it, inside its
transaction, until the response is ready; between the dependency and the endpoint it waits for a worker thread.
With more requests in flight than connections, every worker thread can end up waiting for a connection held by a
request that is waiting for a thread: nothing moves until the pool's timeout (seen as incident writes stalling at
64 connections). Admitting at most `limit` requests (the pool's size plus overflow) keeps every admitted request
able to get its connection; the others wait in the event loop, holding neither a thread nor a connection.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths answered without the database (liveness) and never queued behind it.
UNLIMITED_PATHS = ("/healthz",)


class ConcurrencyLimitMiddleware:
    """Pure ASGI middleware: at most `limit` HTTP requests run in the app at once (the rest wait their turn)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = max(1, limit)
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # one per serving event loop (tests run several)
            self._semaphore, self._loop = asyncio.Semaphore(self.limit), loop
        async with self._semaphore:
            await self.app(scope, receive, send)


def pool_capacity(engine: object, default: int = 20) -> int:
    """Connections an engine's pool can hand out at once (size + overflow); `default` when it cannot tell."""
    pool = getattr(engine, "pool", None)
    try:
        return int(pool.size()) + int(pool._max_overflow)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError):
        return default
