"""Security headers on every answer: a content security policy, no MIME sniffing, no framing, a strict referrer.

Pages are served from this origin only (vendored scripts, no CDN), so the policy allows 'self' plus the intranet
tile server when one is configured (`GRIDATLAS_TILE_URL`). Inline scripts and styles stay allowed because folium's
maps and the API docs page are built with them. The phone page needs the device's position and camera.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geo.features.basemaps import tile_origins
from geo.settings import get_settings


def content_security_policy(tile_url: str | list[str] | None) -> str:
    """The Content-Security-Policy for this deployment (tiles from the basemap URLs' origins when set)."""
    tiles = ""
    for url in [tile_url] if isinstance(tile_url, str) else (tile_url or []):
        parts = urlsplit(url.replace("{s}", "a"))
        if parts.scheme and parts.netloc:
            tiles += f" {parts.scheme}://{parts.netloc.split('@')[-1]}"
    return (
        "default-src 'self'; "
        "script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:{tiles}; "
        "font-src 'self' data:; "
        "connect-src 'self'; "
        "worker-src 'self' blob:; "
        "manifest-src 'self'; "
        "object-src 'none'; "
        "base-uri 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


def security_headers(tile_url: str | list[str] | None) -> list[tuple[bytes, bytes]]:
    """The headers added to every response."""
    return [
        (b"content-security-policy", content_security_policy(tile_url).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
        (b"permissions-policy", b"geolocation=(self), camera=(self), microphone=()"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware (streamed answers stay streamed) adding `security_headers` where a route set none."""

    def __init__(self, app: ASGIApp, tile_url: str | None = None):
        self.app = app
        # Every subdomain expanded: Tianditu serves from t0…t7, and `{s}` read as one host would block seven.
        self.headers = security_headers(tile_url if tile_url is not None else
                                        tile_origins(get_settings().basemap_layers()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in self.headers if k not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
