"""Serve `maps/static` (vendored Leaflet etc., app.css) at /static so map pages need no CDN.

A request naming the file's current content hash (`?v=`, as `maps.assets.asset_url` writes it) may be kept by the
browser for a year (`Cache-Control: public, max-age=31536000, immutable`): that URL never serves other bytes. Any
other request (no `v`, or an old one) is answered `no-cache`, so the browser revalidates it (ETag, 304).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from maps.assets import STATIC_DIR, STATIC_URL, asset_hash

__all__ = ["IMMUTABLE", "REVALIDATE", "STATIC_DIR", "HashedStaticFiles", "mount_static"]

IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


class HashedStaticFiles(StaticFiles):
    """StaticFiles that marks a response immutable when the request's `v` is the file's content hash."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        """The file's response, with Cache-Control by whether `v` matches its content."""
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            asked = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("v", [None])[0]
            current = asset_hash(path) if asked else None
            response.headers["Cache-Control"] = IMMUTABLE if asked and asked == current else REVALIDATE
        return response


def mount_static(app: FastAPI, path: str = STATIC_URL) -> FastAPI:
    """Mount maps/static at `path` (default /static) on `app`."""
    app.mount(path, HashedStaticFiles(directory=STATIC_DIR), name="static")
    return app
