"""Reverse proxies: X-Forwarded-For and X-Forwarded-Proto are believed only from GRIDATLAS_TRUSTED_PROXIES.

The app does this itself (uvicorn's `ProxyHeadersMiddleware`, given the configured list), so the caller's address
used by login throttling and the audit log, and the scheme that decides the session cookie's `Secure` flag, come
from one rule whatever server runs the app. uvicorn must therefore not apply its own (it trusts 127.0.0.1 by
default, so any local process could claim any address): run it with `uvicorn_options()`
(``proxy_headers=False``), or ``--no-proxy-headers`` on its command line.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from geo.settings import Settings, get_settings


def trusted_proxies(settings: Settings | None = None) -> list[str]:
    """The configured proxies (IP addresses or CIDR networks); empty = believe no forwarding header."""
    raw = (settings or get_settings()).trusted_proxies
    return [part.strip() for part in raw.split(",") if part.strip()]


def install(app: FastAPI, settings: Settings | None = None) -> None:
    """Add the forwarding-header rule as the outermost middleware (when any proxy is trusted)."""
    proxies = trusted_proxies(settings)
    if proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=proxies)


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run`/`uvicorn.Config`: the app handles forwarding headers itself."""
    return {"proxy_headers": False}
