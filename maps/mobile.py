"""The phone pages: the mobile locate page (`/m`, 手机定位页) and the report form (`/m/report`, 上报事件).

Phone-sized, Chinese, offline. The locate page (vendored Leaflet, no tiles by default) asks the browser for its
position (or takes a tapped point), calls `GET /v1/locate`, draws the outlines from `GET /v1/locate/outlines`, lists
the chain street → community → grid → micro-grid → compound → building with the responsible staff (tap-to-call
`tel:` links) and links to `/m/report` to report an incident at that point. The report form is small and
self-contained (inline CSS and script, no map) for weak signal: it posts to `POST /v1/incidents` with the login
cookie and keeps reports in the phone's storage while the network is down, sending them when it returns.

The service worker (`static/mobile/sw.js`) serves /m stale-while-revalidate and the versioned assets cache-first, so
a repeat visit costs no round trip; /m then answers at once from the cached jurisdiction (marked 本机缓存 with its
boundary version and download date) until the server's answer replaces it, and lists 我的上报 (the worker's own
reports from `GET /v1/mobile/reports`, kept for offline, and those still queued: 待发送). Everything the phone keeps
(drafts, the jurisdiction, places, the list) is stored under the signed-in user's name, and a queued report is
sent only while the user who filed it is signed in (a shared phone).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from maps.assets import STATIC_URL, OfflineAssetError, external_resources

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
MOBILE_STATIC = STATIC / "mobile"
#: What the service worker caches at install (besides /m itself): the phone pages' assets and vendored Leaflet.
SHELL_ASSETS = ("mobile/locate.js", "mobile/queue.js", "mobile/places.js", "mobile/exif.js", "mobile/photos.js",
                "mobile/app.js", "mobile/case.js",
                "mobile/report.js",
                "mobile/manifest.webmanifest", "mobile/icon.svg", "mobile/icon-192.png", "mobile/icon-512.png",
                "vendor/leaflet/leaflet.js", "vendor/leaflet/leaflet.css")
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

#: Coordinate systems as the report form names them.
COORDSYS_NAMES = {"wgs84": "WGS-84", "cgcs2000": "CGCS2000", "gcj02": "GCJ-02（高德/腾讯）", "bd09": "BD-09（百度）"}

#: The chain as shown, from large to small.
LEVEL_LABELS = (
    ("street", "街道"), ("community", "社区"), ("grid", "网格"), ("micro_grid", "微网格"), ("compound", "小区"),
    ("building", "楼栋"),
)


@lru_cache(maxsize=1)
def asset_version() -> str:
    """A digest of the shell's assets: it names the service worker's cache, so changed assets are fetched anew."""
    digest = hashlib.sha256()
    for name in SHELL_ASSETS + ("mobile/sw.js",):
        digest.update((STATIC / name).read_bytes())
    for name in ("mobile.html", "mobile_report.html", "mobile_case.html"):
        digest.update((TEMPLATES / name).read_bytes())
    return digest.hexdigest()[:12]


def service_worker_source(static_url: str = STATIC_URL) -> str:
    """The service worker's script with its cache version and the assets to cache at install."""
    assets = [f"{static_url}/{name}" for name in SHELL_ASSETS]
    source = (MOBILE_STATIC / "sw.js").read_text(encoding="utf-8")
    return source.replace("__VERSION__", asset_version()).replace("__ASSETS__", json.dumps(assets))


def render_mobile_page(bounds: tuple[float, float, float, float] | None = None, start: dict | None = None, *,
                       tile_url: str | None = None, static_url: str = STATIC_URL, locate_url: str = "/v1/locate",
                       outlines_url: str = "/v1/locate/outlines", report_url: str = "/m/report",
                       radius_m: float = 400, pack_url: str | None = None, username: str | None = None) -> str:
    """The page's HTML. `bounds` (minx, miny, maxx, maxy) frames the map before a point is known; `start`
    ({lon, lat, coordsys}) locates that point at once instead of asking the device; `pack_url` (for a signed-in
    worker) is where the page fetches the jurisdiction pack it locates against offline."""
    config = {
        "levels": [list(p) for p in LEVEL_LABELS], "bounds": list(bounds) if bounds else None, "start": start,
        "tile_url": tile_url, "locate_url": locate_url, "outlines_url": outlines_url, "report_url": report_url,
        "radius_m": radius_m, "pack_url": pack_url, "username": username,
        "leaflet_css": f"{static_url}/vendor/leaflet/leaflet.css",
        "leaflet_js": f"{static_url}/vendor/leaflet/leaflet.js",
    }
    page = _env.get_template("mobile.html").render(static_url=static_url, levels=LEVEL_LABELS, config=config,
                                                   report_url=report_url, asset_version=asset_version())
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the mobile page would load external resources: {external}")
    return page


def _grouped_classes(rows: list[dict]) -> list[dict]:
    """Incident classes as major classes, each with its minor classes as `children`."""
    majors = [dict(r, children=[]) for r in rows if r["major_code"] is None]
    by_code = {m["code"]: m for m in majors}
    for r in rows:
        if r["major_code"] in by_code:
            by_code[r["major_code"]]["children"].append(r)
    return majors


def render_report_page(lon: float, lat: float, coordsys: str, preview: dict[str, Any], *, in_jurisdiction: bool,
                       jurisdiction: str, classes: list[dict], sources: list[tuple[str, str]], username: str,
                       jurisdiction_code: str | None = None, place: str | None = None, tile_url: str | None = None,
                       static_url: str = STATIC_URL) -> str:
    """The report form's HTML for a point (in `coordsys`, a canonical key): where the report will be attributed
    (`preview`), whether that lies in the reporter's `jurisdiction`, the incident classes and report sources.
    `place` (a searched compound or building) fills the address; the pin map moves the point."""
    config = {"point": {"lon": lon, "lat": lat, "coordsys": coordsys}, "username": username,
              "jurisdiction_code": jurisdiction_code, "place": place, "tile_url": tile_url,
              "leaflet_css": f"{static_url}/vendor/leaflet/leaflet.css",
              "leaflet_js": f"{static_url}/vendor/leaflet/leaflet.js"}
    return _env.get_template("mobile_report.html").render(config=config, place=place,
        static_url=static_url, asset_version=asset_version(), lon=lon, lat=lat, coordsys=coordsys,
        coordsys_name=COORDSYS_NAMES.get(coordsys, coordsys), preview=preview,
        in_jurisdiction=in_jurisdiction, jurisdiction=jurisdiction, classes=_grouped_classes(classes),
        sources=sources, username=username,
    )


def _local(value: dt.datetime | None, tz: str, fmt: str) -> str:
    """A stored time as the district's local time (what the worker's watch says)."""
    if value is None:
        return ""
    return (value.astimezone(ZoneInfo(tz)) if value.tzinfo else value).strftime(fmt)


def render_case_page(incident: dict[str, Any], history: list[dict], photos: list[dict], *, max_photos: int,
                     tz: str = "Asia/Shanghai", username: str | None = None, static_url: str = STATIC_URL) -> str:
    """A case on the phone (事件详情): what, where, its state, the photos before (上报) and after (处置) handling,
    the history, and adding 处置照片 (queued like reports while offline)."""
    stages = {"report": [p for p in photos if p["stage"] == "report"],
              "handling": [p for p in photos if p["stage"] == "handling"]}
    config = {"incident_id": incident["id"], "state": incident["state"], "username": username,
              "room": max(0, max_photos - len(stages["handling"]))}
    return _env.get_template("mobile_case.html").render(
        local=lambda value, fmt="%Y-%m-%d %H:%M": _local(value, tz, fmt), static_url=static_url,
        asset_version=asset_version(), incident=incident, history=history, stages=stages,
        config=config, max_photos=max_photos)
