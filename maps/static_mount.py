"""Serve `maps/static` (vendored Leaflet etc., app.css) at /static so map pages need no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from maps.assets import STATIC_URL

STATIC_DIR = Path(__file__).resolve().parent / "static"


def mount_static(app: FastAPI, path: str = STATIC_URL) -> FastAPI:
    """Mount maps/static at `path` (default /static) on `app`."""
    app.mount(path, StaticFiles(directory=STATIC_DIR), name="static")
    return app
