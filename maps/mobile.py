"""The mobile locate page (`/m`, 手机定位页): phone-sized, Chinese, offline (vendored Leaflet, no tiles by default).

The page asks the browser for its position (or takes a tapped point), calls `GET /v1/locate`, draws the outlines
from `GET /v1/locate/outlines`, lists the chain street → community → grid → micro-grid → compound → building with
the responsible staff (tap-to-call `tel:` links) and links to `/m/report` to report an incident at that point.
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from maps.assets import STATIC_URL, OfflineAssetError, external_resources

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))

#: The chain as shown, from large to small.
LEVEL_LABELS = (
    ("street", "街道"), ("community", "社区"), ("grid", "网格"), ("micro_grid", "微网格"), ("compound", "小区"),
    ("building", "楼栋"),
)


def render_mobile_page(bounds: tuple[float, float, float, float] | None = None, start: dict | None = None, *,
                       tile_url: str | None = None, static_url: str = STATIC_URL, locate_url: str = "/v1/locate",
                       outlines_url: str = "/v1/locate/outlines", report_url: str = "/m/report",
                       radius_m: float = 400) -> str:
    """The page's HTML. `bounds` (minx, miny, maxx, maxy) frames the map before a point is known; `start`
    ({lon, lat, coordsys}) locates that point at once instead of asking the device."""
    config = {
        "levels": [list(p) for p in LEVEL_LABELS], "bounds": list(bounds) if bounds else None, "start": start,
        "tile_url": tile_url, "locate_url": locate_url, "outlines_url": outlines_url, "report_url": report_url,
        "radius_m": radius_m,
    }
    page = _env.get_template("mobile.html").render(static_url=static_url, levels=LEVEL_LABELS, config=config,
                                                   report_url=report_url)
    external = external_resources(page)
    if external:
        raise OfflineAssetError(f"the mobile page would load external resources: {external}")
    return page
