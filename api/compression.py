"""Compressed answers: gzip for every response that benefits (HTML pages, GeoJSON, JSON, CSS/JS), once per app.

Starlette's GZipMiddleware does the work (already-compressed types such as PNG and zip are left alone). Point-batch
answers are left uncompressed: they stream at hundreds of thousands of points a second and compressing them would
cost more CPU than the transfer saves on the loopback and intranet links batch clients use.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

#: Paths whose answers are sent as they are.
UNCOMPRESSED_PATHS = ("/v1/locate/batch",)
#: zlib level 6: nearly the size of level 9 at a fraction of its CPU.
COMPRESS_LEVEL = 6


class CompressionMiddleware:
    """gzip where the client accepts it, except on `UNCOMPRESSED_PATHS`."""

    def __init__(self, app: ASGIApp, minimum_size: int = 1024):
        self.plain = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size, compresslevel=COMPRESS_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNCOMPRESSED_PATHS:
            await self.gzip(scope, receive, send)
        else:
            await self.plain(scope, receive, send)
