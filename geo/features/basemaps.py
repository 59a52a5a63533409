"""Basemaps (底图): the XYZ layers the leaders' pages draw under their overlays, kept by admins in the database.

`GRIDATLAS_BASEMAPS` (or `GRIDATLAS_TILE_URL`) is the default; once an admin saves a list (`save_layers`, the
admin page `/admin/basemaps`), that list applies to every page at once, in every process (the pages read it per
request: one primary-key row). `reset` returns to the settings. Each layer is a `geo.settings.BasemapLayer`:
base or labels, WGS-84/CGCS2000, GCJ-02 or BD-09, max native zoom, attribution; bottom layer first.

`tile_origins` gives the scheme://host[:port] the tiles come from, for the pages' Content-Security-Policy.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import Connection, text

from geo.errors import DomainError, Kind
from geo.settings import BasemapLayer, Settings

#: Most layers one list may hold (a base, its labels, a few alternatives).
MAX_LAYERS = 12


class InvalidBasemap(DomainError):
    """A basemap list that cannot be saved: a URL that is not an XYZ template, too many layers, bad fields."""

    slug = "invalid-basemap"
    kind: ClassVar[Kind] = "invalid"


class StaleBasemaps(DomainError):
    """Someone saved the basemaps since the caller read them."""

    slug = "stale-basemaps"
    kind: ClassVar[Kind] = "conflict"


def check_layer(layer: BasemapLayer) -> BasemapLayer:
    """The layer if its URL is an http(s) XYZ template ({z}, {x}, {y}; {s} only with subdomains), else
    InvalidBasemap."""
    parts = urlsplit(layer.url.replace("{s}", "a"))
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c in layer.url for c in " \"'<>\\"):
        raise InvalidBasemap(f"url: {layer.url!r} is not an http(s) address")
    if not all(f"{{{k}}}" in layer.url for k in ("z", "x")) or not ("{y}" in layer.url or "{-y}" in layer.url):
        raise InvalidBasemap(f"url: {layer.url!r} needs {{z}}, {{x}} and {{y}} placeholders")
    if set(re.findall(r"\{([^}]*)\}", layer.url)) - {"z", "x", "y", "s", "-y", "r"}:
        raise InvalidBasemap(f"url: {layer.url!r} has a placeholder other than {{z}} {{x}} {{y}} {{s}}")
    if "{s}" in layer.url and not layer.subdomains:
        raise InvalidBasemap(f"subdomains: {layer.url!r} uses {{s}}; name its subdomains (e.g. 01234567)")
    if not re.fullmatch(r"[A-Za-z0-9]*", layer.subdomains):
        raise InvalidBasemap("subdomains: letters and digits only, one per subdomain")
    if len(layer.name) > 60 or len(layer.attribution) > 200 or len(layer.url) > 500:
        raise InvalidBasemap("name (60), attribution (200) or url (500 characters) too long")
    return layer


def parse_layers(items: list[dict]) -> list[BasemapLayer]:
    """Checked layers from plain dicts (what the admin page sends), bottom first."""
    if len(items) > MAX_LAYERS:
        raise InvalidBasemap(f"at most {MAX_LAYERS} layers")
    out = []
    for i, item in enumerate(items):
        try:
            layer = BasemapLayer.model_validate(item)
        except ValidationError as e:
            raise InvalidBasemap(f"layer {i + 1}: {e.errors()[0]['loc']} {e.errors()[0]['msg']}") from None
        out.append(check_layer(layer))
    return out


def stored(conn: Connection) -> dict | None:
    """The saved list with its revision, time and author (None: the settings apply)."""
    row = conn.execute(text("SELECT layers, revision, updated_at, updated_by FROM basemap_config WHERE id = 1")
                       ).mappings().first()
    if row is None:
        return None
    return {"layers": [BasemapLayer.model_validate(x) for x in row["layers"]], "revision": row["revision"],
            "updated_at": row["updated_at"], "updated_by": row["updated_by"]}


def effective_layers(conn: Connection, settings: Settings) -> list[BasemapLayer]:
    """The layers pages draw now: the saved list, else the settings' (`Settings.basemap_layers`)."""
    saved = stored(conn)
    return saved["layers"] if saved is not None else settings.basemap_layers()


def save_layers(conn: Connection, layers: list[BasemapLayer], username: str | None,
                revision: int | None = None) -> dict:
    """Replace the saved list (revision + 1), unless `revision` (what the caller read; 0: none saved) is stale;
    returns the stored row as `stored` does."""
    if revision is not None:
        current = conn.execute(text("SELECT revision FROM basemap_config WHERE id = 1 FOR UPDATE")).scalar() or 0
        if current != revision:
            raise StaleBasemaps(f"the basemaps were saved again since revision {revision} (now {current}); "
                                "reload and edit again", revision=current)
    body = json.dumps([check_layer(x).model_dump() for x in layers], ensure_ascii=False)
    conn.execute(text(
        "INSERT INTO basemap_config (id, layers, updated_by) VALUES (1, CAST(:l AS jsonb), :u) "
        "ON CONFLICT (id) DO UPDATE SET layers = EXCLUDED.layers, updated_by = EXCLUDED.updated_by, "
        "revision = basemap_config.revision + 1, updated_at = now()"), {"l": body, "u": username})
    out = stored(conn)
    assert out is not None
    return out


def reset(conn: Connection) -> bool:
    """Forget the saved list (the settings apply again); whether there was one."""
    return bool(conn.execute(text("DELETE FROM basemap_config WHERE id = 1")).rowcount)


def tile_origins(layers: list[BasemapLayer]) -> list[str]:
    """scheme://host[:port] of every layer's tiles, each subdomain expanded (for a Content-Security-Policy)."""
    out: list[str] = []
    for layer in layers:
        for sub in (list(layer.subdomains) if "{s}" in layer.url and layer.subdomains else ["a"]):
            parts = urlsplit(layer.url.replace("{s}", sub))
            origin = f"{parts.scheme}://{parts.netloc.split('@')[-1]}"
            if parts.scheme and parts.netloc and origin not in out:
                out.append(origin)
    return out
